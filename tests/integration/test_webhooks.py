"""Webhooks against real Janus: a publish, a view and the leaving, as a receiver sees them.

The receiver is a real HTTP server in the test's namespace; every event it
gets is verified with the ``standardwebhooks`` library.  The auth webhook
then decides publishes and views, and a dead one refuses them with 503.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import signal
from typing import Any

import httpx
import pytest
import standardwebhooks
from aiortc import RTCSessionDescription

from gateway.clients.whip import WhipSession
from gateway.janus.process import JanusProcessConfig, ManagedJanus
from tests.conftest import GatewayFactory, Topology, janus_settings
from tests.integration.test_whip import assert_problem, wait_stream
from tests.publishers import aiortc_publisher, answer
from tests.sandbox import INTERFACE
from tests.viewers import aiortc_viewer
from tests.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
SDP = "application/sdp"
log = logging.getLogger(__name__)


@pytest.fixture
def janus_node(janus: ManagedJanus, janus_lite: ManagedJanus) -> Topology:
    """Publishers on a full-ICE ingest node, viewers on an ICE-lite egress node."""
    return [(janus, "ingest"), (janus_lite, "egress")]


@pytest.fixture
async def receiver() -> Any:
    running = Receiver()
    await running.start()
    yield running
    await running.stop()


def events(receiver: Receiver) -> list[dict[str, Any]]:
    """Every event so far, each verified the way a receiver must."""
    return [standardwebhooks.Webhook(SECRET).verify(r.body, r.headers) for r in receiver.received]


def has(*wanted: str):  # type: ignore[no-untyped-def]
    return lambda got: all(w in [json.loads(r.body)["type"] for r in got] for w in wanted)


async def test_publish_view_leave_sequence(start_gateway: GatewayFactory, receiver: Receiver,
                                           http: httpx.AsyncClient) -> None:
    gateway = await start_gateway(public_listing="details", webhook_viewers_interval=0.3,
                                  webhooks=[{"url": receiver.url, "secret": SECRET}])
    await receiver.wait_for(lambda got: len(got) >= 2)
    assert sorted((e["type"], e["data"]["node"]) for e in events(receiver)) == \
        [("node.up", "janus0"), ("node.up", "janus1")]

    pc = await aiortc_publisher()
    whip = WhipSession(gateway.whip("show"), http=http)
    assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
    await answer(pc, whip)
    await receiver.wait_for(has("publisher.connected", "stream.live"))

    viewer, frames = await aiortc_viewer()
    r = await http.post(gateway.whep("show"), content=viewer.localDescription.sdp,
                        headers={"Content-Type": SDP})
    assert r.status_code == 201, r.text
    await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
    await frames.wait(10)
    await receiver.wait_for(has("viewers.changed"))
    assert (await http.delete(r.headers["location"])).status_code == 200
    await viewer.close()
    await receiver.wait_for(lambda got: [json.loads(x.body)["type"] for x in got]
                            .count("viewers.changed") == 2)
    await whip.delete()
    await pc.close()
    await receiver.wait_for(has("publisher.disconnected", "stream.ended"))

    seen = events(receiver)
    for event in seen:
        log.info("webhook %s %s", event["type"], json.dumps(event["data"]))
    types = [e["type"] for e in seen]
    assert types[2:] == ["publisher.connected", "stream.live", "viewers.changed",
                         "viewers.changed", "publisher.disconnected", "stream.ended"]
    viewers = [e["data"] for e in seen if e["type"] == "viewers.changed"]
    assert viewers == [{"stream": "show", "joined": 1, "left": 0, "viewers": 1},
                       {"stream": "show", "joined": 0, "left": 1, "viewers": 0}]
    assert seen[-1]["data"] == {"stream": "show", "reason": "DELETE by the client"}
    assert seen[2]["data"]["node"] == "janus0"
    assert frames.count >= 10


async def test_replacing_a_publisher_says_replaced(start_gateway: GatewayFactory,
                                                   receiver: Receiver,
                                                   http: httpx.AsyncClient) -> None:
    """A stalled publisher (OBS after a drop) is replaced by a new POST: the
    receiver hears publisher.replaced, not stream.ended."""
    gateway = await start_gateway(publisher_media_timeout=30,
                                  webhooks=[{"url": receiver.url, "secret": SECRET,
                                             "events": ["publisher.replaced", "stream.ended"]}])
    first = await aiortc_publisher()
    whip1 = WhipSession(gateway.whip("cam"), http=http)
    assert (await whip1.post_offer(first.localDescription.sdp)).status_code == 201
    await answer(first, whip1)
    await wait_stream(http, gateway, "cam", live=True)
    for sender in first.getSenders():  # media stops: the publisher stalls, replaceable
        sender.replaceTrack(None)
    await wait_stream(http, gateway, "cam", live=False)
    second = await aiortc_publisher()
    whip2 = WhipSession(gateway.whip("cam"), http=http)
    assert (await whip2.post_offer(second.localDescription.sdp)).status_code == 201
    await receiver.wait_for(has("publisher.replaced"))
    await whip2.delete()
    await second.close()
    await first.close()
    await receiver.wait_for(has("stream.ended"))
    assert [e["type"] for e in events(receiver)] == ["publisher.replaced", "stream.ended"]


async def test_auth_webhook_decides_publish_and_view(start_gateway: GatewayFactory,
                                                     http: httpx.AsyncClient) -> None:
    def decide(received) -> int:  # type: ignore[no-untyped-def]
        asked = json.loads(received.body)
        if asked["token"] is None:
            return 401
        return 204 if asked["token"] == f"{asked['action']}-ok" else 403

    auth = Receiver(answer=decide)
    await auth.start()
    gateway = await start_gateway(auth_webhook_url=auth.url, auth_webhook_cache_ttl=60)
    pc = await aiortc_publisher()
    offer = pc.localDescription.sdp
    try:
        r = await http.post(gateway.whip("show"), content=offer, headers={"Content-Type": SDP})
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post(gateway.whip("show"), content=offer,
                            headers={"Content-Type": SDP, "Authorization": "Bearer view-ok"})
        assert_problem(r, 403)
        whip = WhipSession(gateway.whip("show"), token="publish-ok", http=http)
        assert (await whip.post_offer(offer)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gateway, "show", live=True)
        asked = [json.loads(x.body) for x in auth.received]
        assert asked[-1] == {"action": "publish", "stream": "show", "token": "publish-ok",
                             "client": "127.0.0.1"}

        viewer, frames = await aiortc_viewer()
        r = await http.post(gateway.whep("show"), content=viewer.localDescription.sdp,
                            headers={"Content-Type": SDP, "Authorization": "Bearer publish-ok"})
        assert_problem(r, 403)
        r = await http.post(gateway.whep("show") + "?token=view-ok",
                            content=viewer.localDescription.sdp, headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        await frames.wait(5)
        assert (await http.delete(r.headers["location"])).status_code == 200
        await viewer.close()
        calls = len(auth.received)

        await auth.stop()  # answers already given stay cached; new questions get 503
        again, _ = await aiortc_viewer()
        r = await http.post(gateway.whep("show") + "?token=view-ok",
                            content=again.localDescription.sdp, headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        assert (await http.delete(r.headers["location"])).status_code == 200
        await again.close()
        r = await http.post(gateway.whep("show") + "?token=someone-else",
                            content=offer, headers={"Content-Type": SDP})
        assert_problem(r, 503)
        assert r.headers["retry-after"] == "5"
        assert len(auth.received) == calls
        await whip.delete()
    finally:
        await pc.close()
        await auth.stop()


async def test_node_down_and_up(start_gateway: GatewayFactory, receiver: Receiver,
                                janus: ManagedJanus) -> None:
    """An egress Janus of its own dies and comes back: node.down, then node.up."""
    spare = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, ice_lite=True,
                                            rtp_port_range="45001-46000",
                                            streaming_port_range="46001-47000", websockets=True))
    spare.start()
    try:
        await start_gateway(janus=[janus_settings(janus, "ingest"),
                                   janus_settings(spare, "egress")],
                            webhooks=[{"url": receiver.url, "secret": SECRET,
                                       "events": ["node.up", "node.down"]}])
        await receiver.wait_for(lambda got: len(got) == 2)
        spare.signal(signal.SIGKILL)
        await receiver.wait_for(lambda got: len(got) == 3)
        spare.launch()  # same ports and configs: the gateway reconnects by itself
        await receiver.wait_for(lambda got: len(got) == 4)
    finally:
        spare.stop()
    seen = [(e["type"], e["data"]["node"]) for e in events(receiver)]
    assert sorted(seen[:2]) == [("node.up", "janus0"), ("node.up", "janus1")]
    assert seen[2:] == [("node.down", "janus1"), ("node.up", "janus1")]


async def test_a_hanging_receiver_delays_no_request(start_gateway: GatewayFactory,
                                                    http: httpx.AsyncClient,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The receiver takes requests and never answers: publishing, watching and
    leaving go on as usual, and the events that no longer fit are dropped,
    counted and logged."""
    stuck = Receiver(hang=True)
    await stuck.start()
    try:
        gateway = await start_gateway(webhook_queue_size=1, webhook_timeout=60,
                                      webhooks=[{"url": stuck.url, "secret": SECRET}])
        await stuck.wait_for(lambda got: len(got) == 1)  # the first node.up, hanging
        pc = await aiortc_publisher()
        whip = WhipSession(gateway.whip("show"), http=http)
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gateway, "show", live=True)
        viewer, frames = await aiortc_viewer()
        r = await http.post(gateway.whep("show"), content=viewer.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        await viewer.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        await frames.wait(5)
        assert (await http.delete(r.headers["location"])).status_code == 200
        await viewer.close()
        assert (await whip.delete()).status_code == 200
        await pc.close()
        receiver = gateway.app.state.hooks.webhooks.receivers[0]
        # node.up x2, publisher.connected, stream.live: one in flight, one queued
        assert receiver.dropped >= 2 and receiver.delivered == 0
        assert sum("queue full" in r.getMessage() for r in caplog.records) == receiver.dropped
    finally:
        await stuck.stop()
