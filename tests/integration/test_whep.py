"""WHEP (draft-ietf-wish-whep-03) against real Janus: 1.1.2 and 1.4.x.

Viewers are aiortc peers that decode frames.  Every test runs three times:
- on Debian 12's Janus 1.1.2, which cannot take a viewer's offer (the
  bridged path, ``gateway.sdp.bridge``);
- on two 1.1.2 nodes: publishers on a full-ICE ingest node, viewers on an
  ICE-lite egress node fed by rtp_forward (the embedded default's shape);
- on Debian sid's 1.4.x from ``deploy/janus-sid.sh`` (the native path;
  skipped without the chroot).
"""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Callable

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.sdp import model as sdp
from gateway.clients.whip import WhipSession
from gateway.janus.process import ManagedJanus
from tests.conftest import GatewayFactory, Leaks, RunningGateway, Topology
from tests.integration.test_whip import assert_problem, wait_stream
from tests.publishers import aiortc_publisher, answer
from tests.viewers import Frames, aiortc_viewer, with_payload_types

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
LAYER_REL = "urn:ietf:params:whep:ext:core:layer"


@pytest.fixture(params=["janus-1.1.2", "ingest+ice-lite-egress", "janus-1.4"])
def janus_node(request: pytest.FixtureRequest) -> ManagedJanus | Topology:
    if request.param == "ingest+ice-lite-egress":
        return [(request.getfixturevalue("janus"), "ingest"),
                (request.getfixturevalue("janus_lite"), "egress")]
    return request.getfixturevalue("janus" if request.param == "janus-1.1.2" else "janus_new")


class Publisher:
    def __init__(self, pc: RTCPeerConnection, whip: WhipSession) -> None:
        self.pc, self.whip = pc, whip

    async def stop(self) -> None:
        if self.whip.location:
            await self.whip.delete()
        await self.pc.close()


async def start_publisher(gw: RunningGateway, http: httpx.AsyncClient, stream: str,
                          codec: str = "video/VP8") -> Publisher:
    pc = await aiortc_publisher(video_codec=codec)
    whip = WhipSession(gw.whip(stream), http=http)
    response = await whip.post_offer(pc.localDescription.sdp)
    assert response.status_code == 201, response.text
    await answer(pc, whip)
    await wait_stream(http, gw, stream, live=True)
    return Publisher(pc, whip)


@pytest.fixture
async def live(gateway: RunningGateway, http: httpx.AsyncClient) -> AsyncIterator[Publisher]:
    publisher = await start_publisher(gateway, http, "show")
    yield publisher
    await publisher.stop()


async def watch(http: httpx.AsyncClient, url: str, offer_pc: RTCPeerConnection,
                offer: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    response = await http.post(url, content=offer or offer_pc.localDescription.sdp,
                               headers={"Content-Type": SDP, **(headers or {})})
    if response.status_code == 201:
        await offer_pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    return response


async def mountpoints(leaks: Leaks) -> int:
    return len(await leaks.mountpoints())


# -- POST an offer: section 4.2 ------------------------------------------------


async def test_viewer_offer_gets_answer_and_decodes_frames(
    gateway: RunningGateway, live: Publisher, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gateway.whep("show"), pc)
        assert r.status_code == 201, r.text
        assert r.headers["content-type"].startswith(SDP)
        location = r.headers["location"]
        assert location.startswith(f"{gateway.url}/whep/show/")
        assert r.headers["etag"].startswith('"')
        links = {link["rel"]: link for link in r.links.values()} if r.links else {}
        assert SSE_REL in links and LAYER_REL in links
        answer_sdp = sdp.parse(r.text)
        assert [m.direction for m in answer_sdp.media] == ["sendonly", "sendonly"]
        offered = sdp.parse(pc.localDescription.sdp)
        assert [m.mid for m in answer_sdp.media] == [m.mid for m in offered.media]
        assert [m.codecs()[0].pt for m in answer_sdp.media] == \
            [m.codecs()[0].pt for m in offered.media], "the viewer's own payload types"
        await frames.wait(20)
        assert frames.size == (320, 240)
        state = (await http.get(f"{gateway.url}/api/streams")).json()["streams"]["show"]
        assert state["viewers"] == 1
        assert await mountpoints(leaks) == 1

        assert (await http.delete(location)).status_code == 200
        assert_problem(await http.delete(location), 404)
        await gateway.app.state.egress.settled()
        assert await mountpoints(leaks) == 0
    finally:
        await pc.close()


async def test_payload_type_variants_are_shared_and_counted(
    gateway: RunningGateway, live: Publisher, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """Chrome-like PTs (Opus 111, VP8 96) and Firefox-like ones (109, 120) each
    decode, each from its own mountpoint variant; a second viewer with the
    same PTs shares one."""
    viewers: list[tuple[RTCPeerConnection, Frames]] = []
    try:
        for pts in ({"audio": 111, "video": 96}, {"audio": 109, "video": 120},
                    {"audio": 109, "video": 120}):
            pc, frames = await aiortc_viewer()
            offer = with_payload_types(pc.localDescription.sdp, pts)
            r = await watch(http, gateway.whep("show"), pc, offer)
            assert r.status_code == 201, r.text
            answered = sdp.parse(r.text)
            assert [m.codecs()[0].pt for m in answered.media] == [pts["audio"], pts["video"]]
            viewers.append((pc, frames))
        for _pc, frames in viewers:
            await frames.wait(10)
        assert await mountpoints(leaks) == 2
    finally:
        for pc, _ in viewers:
            await pc.close()
    # The viewers hung up: Janus tells the gateway, which drops the variants.
    deadline = asyncio.get_running_loop().time() + 10
    while gateway.app.state.egress.viewer_count("show"):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.1)
    await gateway.app.state.egress.settled()
    assert await mountpoints(leaks) == 0


async def test_video_only_viewer(gateway: RunningGateway, live: Publisher, http: httpx.AsyncClient) -> None:
    pc, frames = await aiortc_viewer(audio=False)
    try:
        r = await watch(http, gateway.whep("show"), pc)
        assert r.status_code == 201, r.text
        assert [m.kind for m in sdp.parse(r.text).media] == ["video"]
        await frames.wait(10)
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await pc.close()


# -- no publisher, HEAD, OPTIONS, bad input -----------------------------------


async def test_no_live_publisher_is_409_with_retry_after(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    pc, _ = await aiortc_viewer()
    try:
        r = await watch(http, gateway.whep("nothing"), pc)
        assert_problem(r, 409)
        assert int(r.headers["retry-after"]) > 0
        assert await mountpoints(leaks) == 0
    finally:
        await pc.close()


async def test_head_options_get(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    r = await http.head(gateway.whep("any"))
    assert r.status_code == 200 and r.headers["content-type"] == SDP and r.content == b""
    r = await http.options(gateway.whep("any"))
    assert r.status_code == 200 and r.headers["accept-post"] == SDP
    r = await http.get(gateway.whep("any"))
    assert 200 <= r.status_code < 300 and r.content == b""


async def test_bad_viewer_offers(gateway: RunningGateway, live: Publisher, leaks: Leaks,
                                 http: httpx.AsyncClient) -> None:
    pc, _ = await aiortc_viewer()
    try:
        offer = pc.localDescription.sdp
        assert_problem(await http.post(gateway.whep("show"), content=offer,
                                       headers={"Content-Type": "text/plain"}), 415)
        assert_problem(await http.post(gateway.whep("show"), content="v=0\r\nbad",
                                       headers={"Content-Type": SDP}), 400)
        sendonly = offer.replace("a=recvonly", "a=sendonly")
        assert_problem(await http.post(gateway.whep("show"), content=sendonly,
                                       headers={"Content-Type": SDP}), 422)
        h264_only = (await aiortc_viewer(audio=False, video_codec="video/H264"))
        try:
            assert_problem(await watch(http, gateway.whep("show"), h264_only[0]), 422)
        finally:
            await h264_only[0].close()
        assert await mountpoints(leaks) <= 1  # at most the grace-period one
    finally:
        await pc.close()


# -- counter-offer mode (406) --------------------------------------------------


async def test_empty_post_gets_counter_offer_and_patch_answer(
    gateway: RunningGateway, live: Publisher, http: httpx.AsyncClient
) -> None:
    r = await http.post(gateway.whep("show"))
    assert r.status_code == 406, r.text
    assert r.headers["content-type"].startswith(SDP)
    assert "valid-until" in r.headers["content-type"]
    location = r.headers["location"]
    offer = sdp.parse(r.text)
    assert all(m.direction == "sendonly" for m in offer.media)

    pc = RTCPeerConnection()
    frames = Frames()

    @pc.on("track")
    def _track(track) -> None:  # type: ignore[no-untyped-def]
        if track.kind == "video":
            from tests.viewers import _consume
            frames.task = asyncio.ensure_future(_consume(track, frames))

    try:
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        assert_problem(await http.patch(location, content="v=0\r\nbroken",
                                        headers={"Content-Type": SDP}), 400)
        r = await http.patch(location, content=pc.localDescription.sdp, headers={"Content-Type": SDP})
        assert r.status_code == 204, r.text
        await frames.wait(10)
        assert (await http.delete(location)).status_code == 200
    finally:
        await pc.close()


# -- PATCH: trickle, ICE restart ----------------------------------------------


async def test_trickle_and_ice_restart(
    gateway: RunningGateway, live: Publisher, http: httpx.AsyncClient
) -> None:
    """Trickle → 204.  ICE restart → 200 with Janus's new ufrag/pwd and a new
    ETag on the bridged path (Janus 1.1.2); 422 where there is no offer of the
    viewer's to rewrite (native 1.4 path), and the session plays on."""
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gateway.whep("show"), pc)
        location, etag, answer_text = r.headers["location"], r.headers["etag"], r.text
        offer = sdp.parse(pc.localDescription.sdp)
        ufrag, pwd = offer.ice_credentials()
        frag = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
                f"a=mid:0\r\na=candidate:{offer.candidates[0]}\r\na=end-of-candidates\r\n")
        assert_problem(await http.patch(location, content=frag, headers={"Content-Type": SDPFRAG}), 428)
        assert_problem(await http.patch(location, content=frag,
                                        headers={"Content-Type": SDPFRAG, "If-Match": '"x"'}), 412)
        r = await http.patch(location, content=frag, headers={"Content-Type": SDPFRAG, "If-Match": etag})
        assert r.status_code == 204, r.text
        restart = frag.replace(ufrag, "newufrag").replace(pwd, "n" * 24)
        r = await http.patch(location, content=restart,
                             headers={"Content-Type": SDPFRAG, "If-Match": "*"})
        native = gateway.app.state.egress.session("show", location.rsplit("/", 1)[1]).mode.value
        if native == "native":
            assert_problem(r, 422)
            await frames.wait(10)  # a refused restart leaves the session playing
        else:
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith(SDPFRAG)
            assert r.headers["etag"] != etag
            answered = sdp.parse_fragment(r.text)
            old = sdp.parse(answer_text).ice_credentials()
            assert answered.ice_ufrag and answered.ice_ufrag != old[0], "Janus restarted ICE"
            assert answered.candidates and answered.end_of_candidates
            assert_problem(await http.patch(location, content=frag,
                                            headers={"Content-Type": SDPFRAG, "If-Match": etag}), 412)
        assert (await http.delete(location)).status_code == 200
    finally:
        await pc.close()


# -- viewer tokens --------------------------------------------------------------


async def test_viewer_tokens(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(viewer_keys={"paid": "ticket"})
    publisher = await start_publisher(gw, http, "paid")
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gw.whep("paid"), pc)
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert_problem(await watch(http, gw.whep("paid"), pc, headers={"Authorization": "Bearer no"}), 403)
        r = await watch(http, gw.whep("paid") + "?token=ticket", pc)
        assert r.status_code == 201, r.text
        await frames.wait(5)
        assert_problem(await http.delete(r.headers["location"]), 401)
        r2 = await http.delete(r.headers["location"], headers={"Authorization": "Bearer ticket"})
        assert r2.status_code == 200
    finally:
        await pc.close()
        await publisher.stop()


# -- server-sent events extension ---------------------------------------------


async def read_events(http: httpx.AsyncClient, url: str, want: int, timeout: float = 10.0,
                      until: Callable[[tuple[str, dict]], bool] | None = None,
                      ) -> list[tuple[str, dict]]:
    """Read ``want`` events (or up to the first that satisfies ``until``) from
    an event stream, checking one data line each."""
    events: list[tuple[str, dict]] = []
    async with http.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data_lines = None, []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data_lines.append(line[5:].strip())
            elif line == "" and name:
                assert len(data_lines) == 1, "one data line per event"
                events.append((name, json.loads(data_lines[0])))
                name, data_lines = None, []
                if len(events) >= want or (until is not None and until(events[-1])):
                    break
    return events


async def test_server_sent_events(gateway: RunningGateway, live: Publisher, http: httpx.AsyncClient) -> None:
    pc, _ = await aiortc_viewer()
    try:
        r = await watch(http, gateway.whep("show"), pc)
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        assert_problem(await http.post(sse, json=["active", "nonsense"]), 400)
        r = await http.post(sse, json=["active", "inactive", "viewercount"])
        assert r.status_code == 201
        stream_url = r.headers["location"]
        events = await read_events(http, stream_url, 2)
        assert events == [("active", {}), ("viewercount", {"viewercount": 1})]
        assert (await http.delete(stream_url)).status_code == 200
        assert_problem(await http.get(stream_url), 404)
        assert (await http.delete(r.headers["location"].rsplit("/sse", 1)[0])).status_code == 200
    finally:
        await pc.close()


async def test_publisher_reconnect_keeps_viewers_playing(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """A new WHIP session for the stream: forwarders are re-made into the same
    mountpoint; the viewer keeps decoding without a new POST and hears
    ``inactive`` then ``active``."""
    gw = await start_gateway(publisher_media_timeout=30)
    first = await start_publisher(gw, http, "re")
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gw.whep("re"), pc)
        assert r.status_code == 201, r.text
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        stream_url = (await http.post(sse, json=["active", "inactive"])).headers["location"]
        await frames.wait(10)
        reader = asyncio.ensure_future(read_events(http, stream_url, 3, timeout=30))

        await first.stop()  # the publisher leaves...
        second = await start_publisher(gw, http, "re")  # ...and comes back
        try:
            before = frames.count
            await frames.wait(before + 30, timeout=15)
            events = [name for name, _ in await asyncio.wait_for(reader, 20)]
            assert events == ["active", "inactive", "active"]
            assert await mountpoints(leaks) == 1
        finally:
            await second.stop()
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await pc.close()


async def test_signed_viewer_tokens(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    """With viewer_jwt_secret, a JWT minted by ``whip-gateway viewer-token``
    opens its stream only, until it expires."""
    import subprocess
    import sys

    secret = "s" * 32
    gw = await start_gateway(viewer_jwt_secret=secret)
    publisher = await start_publisher(gw, http, "jwt")
    minted = subprocess.run([sys.executable, "-m", "gateway.cli", "viewer-token", "jwt", "--ttl", "60"],
                            capture_output=True, text=True, check=True,
                            env={"WHIP_GATEWAY_VIEWER_JWT_SECRET": secret, "PATH": "/usr/bin:/bin"})
    token = minted.stdout.strip()
    from gateway.core.auth import mint_viewer_token
    pc, frames = await aiortc_viewer()
    try:
        assert_problem(await watch(http, gw.whep("jwt"), pc), 401)
        other = mint_viewer_token(secret, "other", 60)
        assert_problem(await watch(http, gw.whep("jwt"), pc, headers={"Authorization": f"Bearer {other}"}), 403)
        expired = mint_viewer_token(secret, "jwt", -5)
        r = await watch(http, gw.whep("jwt"), pc, headers={"Authorization": f"Bearer {expired}"})
        assert_problem(r, 401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        forged = mint_viewer_token("x" * 32, "jwt", 60)
        assert_problem(await watch(http, gw.whep("jwt"), pc, headers={"Authorization": f"Bearer {forged}"}), 403)
        r = await watch(http, gw.whep("jwt"), pc, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        await frames.wait(5)
        assert (await http.delete(r.headers["location"], headers={"Authorization": f"Bearer {token}"})).status_code == 200
    finally:
        await pc.close()
        await publisher.stop()
