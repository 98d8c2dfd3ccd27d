"""TURN REST credentials with a real coturn: relay-only peers still get media through.

The gateway shares ``turn_secret`` with coturn (``use-auth-secret``) and
writes fresh credentials into every POST's Link headers (RFC 9725 section
4.6).  A publisher that may only use relay candidates over UDP TURN and a
viewer that may only use relay candidates over TCP TURN, with the
credential the gateway handed out, exchange real media through coturn;
Janus's admin API names coturn's relay address as the peer.  An expired
credential gets no relay allocation at all.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Iterator

import httpx
import pytest
from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription)
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from gateway.clients.media import TestPatternTrack as Pattern, ToneTrack
from gateway.clients.whip import WhipSession, prefer_codec
from gateway.janus.admin import JanusAdmin
from gateway.janus.process import ManagedJanus
from tests.conftest import GatewayFactory, Topology
from tests.coturn import Coturn, available
from tests.integration.test_whip import wait_stream
from tests.viewers import Frames, _consume

pytestmark = pytest.mark.skipif(not available(), reason="coturn is not installed "
                                "(apt-get install coturn)")
SDP = "application/sdp"
LINK = re.compile(r'<(?P<url>[^>]+)>(?P<params>.*)')
PARAM = re.compile(r';\s*([\w-]+)="((?:[^"\\]|\\.)*)"')


@pytest.fixture
def janus_node(janus: ManagedJanus, janus_lite: ManagedJanus) -> Topology:
    return [(janus, "ingest"), (janus_lite, "egress")]


@pytest.fixture
def coturn() -> Iterator[Coturn]:
    server = Coturn(secret=secrets.token_hex(16))
    server.start()
    yield server
    server.stop()


def rest_credential(secret: str, expiry: int, name: str) -> tuple[str, str]:
    """The coturn use-auth-secret credential, computed here independently of the gateway."""
    username = f"{expiry}:{name}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(),
                                         hashlib.sha1).digest()).decode()
    return username, password


def ice_servers(response: httpx.Response) -> list[dict[str, str]]:
    """The RFC 9725 section 4.6 Link headers, as a client reads them."""
    found = []
    for value in response.headers.get_list("link"):
        match = LINK.match(value.strip())
        assert match, value
        params = {k: v.replace('\\"', '"') for k, v in PARAM.findall(match["params"])}
        if params.get("rel") == "ice-server":
            found.append({"url": match["url"], **params})
    return found


def relay_only(url: str, username: str, credential: str) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(
        iceServers=[RTCIceServer(urls=url, username=username, credential=credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY))


async def selected_pairs(admin: JanusAdmin) -> list[str]:
    """Every handle's selected ICE pair, as Janus's admin API reports it."""
    pairs = []
    for session_id, handles in (await admin.all_handles()).items():
        for handle_id in handles:
            info = await admin.handle_info(session_id, handle_id)
            ice = (info.get("webrtc") or {}).get("ice") or {}
            if ice.get("selected-pair"):
                pairs.append(ice["selected-pair"])
    return pairs


async def test_relay_only_publisher_and_tcp_viewer(start_gateway: GatewayFactory, coturn: Coturn,
                                                   janus: ManagedJanus, janus_lite: ManagedJanus,
                                                   http: httpx.AsyncClient) -> None:
    gateway = await start_gateway(public_listing="details", turn_secret=coturn.secret,
                                  turn_ttl=600, turn_urls=[coturn.udp_url, coturn.tcp_url])
    username, password = rest_credential(coturn.secret, int(time.time()) + 600, "publisher")
    publisher = relay_only(coturn.udp_url, username, password)
    publisher.addTransceiver(ToneTrack(), direction="sendonly")
    publisher.addTransceiver(Pattern(), direction="sendonly")
    prefer_codec(publisher, "video", "video/VP8")
    viewer: RTCPeerConnection | None = None
    frames = Frames()
    try:
        await publisher.setLocalDescription(await publisher.createOffer())
        offer = publisher.localDescription.sdp
        assert " typ relay" in offer and " typ host" not in offer
        whip = WhipSession(gateway.whip("show"), http=http)
        posted = await whip.post_offer(offer)
        assert posted.status_code == 201, posted.text
        links = ice_servers(posted)
        assert [s["url"] for s in links] == [coturn.udp_url, coturn.tcp_url]
        for link in links:
            expiry, _, name = link["username"].partition(":")
            assert name == "show" and int(expiry) > time.time() + 500
            assert link["credential-type"] == "password"
        await publisher.setRemoteDescription(RTCSessionDescription(whip.answer or "", "answer"))
        await wait_stream(http, gateway, "show", live=True)

        tcp = links[1]  # the viewer uses what the gateway handed out, over TCP
        viewer = relay_only(tcp["url"], tcp["username"], tcp["credential"])
        viewer.addTransceiver("audio", direction="recvonly")
        viewer.addTransceiver("video", direction="recvonly")

        @viewer.on("track")
        def _track(track: Any) -> None:
            if track.kind == "video":
                frames.task = asyncio.ensure_future(_consume(track, frames))

        await viewer.setLocalDescription(await viewer.createOffer())
        assert " typ relay" in viewer.localDescription.sdp
        r = await http.post(gateway.whep("show"), content=viewer.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        await frames.wait(20, timeout=20)

        low, high = coturn.relay_range
        for node in (janus, janus_lite):
            admin = JanusAdmin(node.cfg.admin_url, node.cfg.admin_secret)
            try:
                pairs = await selected_pairs(admin)
            finally:
                await admin.close()
            assert pairs, f"{node.cfg.admin_url}: no selected pair"
            print("janus", node.cfg.admin_url, "selected pairs:", pairs)
            for pair in pairs:
                remote = pair.split("<->")[1].strip()
                address, port = remote.split(" ")[0].rsplit(":", 1)
                assert "relay" in remote and address == coturn.host, pair
                assert low <= int(port) <= high, pair
        assert (await http.delete(r.headers["location"])).status_code == 200
        await whip.delete()
    finally:
        if viewer is not None:
            await viewer.close()
        await publisher.close()


async def test_expired_credential_is_refused_by_coturn(coturn: Coturn) -> None:
    """A credential whose expiry passed gets no relay candidate; a fresh one does."""
    for expiry, relays in ((int(time.time()) - 60, False), (int(time.time()) + 60, True)):
        username, password = rest_credential(coturn.secret, expiry, "late")
        for url in (coturn.udp_url, coturn.tcp_url):
            pc = relay_only(url, username, password)
            pc.addTransceiver("video", direction="recvonly")
            try:
                await pc.setLocalDescription(await pc.createOffer())
                assert (" typ relay" in pc.localDescription.sdp) is relays, (url, expiry)
            finally:
                await pc.close()
