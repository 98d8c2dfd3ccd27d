"""The gateway on Janus's WebSocket transport (``janus_transport = "websocket"``).

What a WHIP or WHEP client sees must not depend on how the gateway talks to
Janus: the publish, view, ICE-restart and DELETE tests of test_whip and
test_whep run here again, on 1.1.2 and 1.4, with the gateway's Janus
session on a WebSocket (checked in Janus's admin API).  And a socket that
drops is a node that went down: Janus destroys the sessions made over it,
so publishers end, the gateway answers 503 with Retry-After until it has a
session again, and then works as before.
"""

from __future__ import annotations

import signal
from typing import Iterator

import httpx
import pytest

from gateway.janus.node import JanusNode
from gateway.janus.process import ManagedJanus
from gateway.janus.websocket import WebSocketTransport
from tests.conftest import GatewayFactory, Leaks, RunningGateway, Topology
from tests.integration.test_faults import fresh_janus, wait_health
from tests.integration.test_whep import start_publisher, watch
from tests.integration.test_faults import assert_publish_refused
from tests.integration.test_whip import wait_stream
from tests.viewers import aiortc_viewer

# Run here again, over the WebSocket (pytest collects what a module imports).
from tests.integration.test_whep import (  # noqa: F401
    live,
    test_trickle_and_ice_restart,
    test_viewer_offer_gets_answer_and_decodes_frames,
)
from tests.integration.test_whip import (  # noqa: F401
    test_patch_trickle_and_ice_restart,
    test_publish_reaches_janus_and_delete_frees_it,
    test_publisher_that_leaves_without_delete_is_dropped,
)

SDP = "application/sdp"
WEBSOCKETS = "janus.transport.websockets"


@pytest.fixture(params=["janus-1.1.2", "janus-1.4"])
def janus_node(request: pytest.FixtureRequest) -> ManagedJanus | Topology:
    fixture = {"janus-1.1.2": "janus", "janus-1.4": "janus_new", "own": "own_janus"}
    return request.getfixturevalue(fixture[request.param])


@pytest.fixture
def own_janus() -> Iterator[ManagedJanus]:
    """A Janus 1.1.2 of the test's own, to kill."""
    process = fresh_janus(rtp_port_range="50001-52000", streaming_port_range="52001-53000")
    yield process
    process.stop()


def nodes(gw: RunningGateway) -> list[JanusNode]:
    return list(gw.app.state.backend.pool.nodes)


async def assert_on_websocket(gw: RunningGateway, leaks: Leaks) -> None:
    """The gateway's session is on the WebSocket, as Janus itself reports it."""
    node = nodes(gw)[0]
    assert isinstance(node.client.transport, WebSocketTransport)
    session = node.require_session()
    handles = await leaks.admin.handles(session.id)
    info = await leaks.admin.handle_info(session.id, handles[0])
    assert info["session_transport"] == WEBSOCKETS, info


@pytest.fixture
async def gateway(start_gateway: GatewayFactory, leaks: Leaks) -> RunningGateway:
    gw = await start_gateway(public_listing="details", janus_transport="websocket")
    await assert_on_websocket(gw, leaks)
    return gw


async def test_dropped_socket_is_a_node_down(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """The socket closes under a live publisher: Janus ends the session (and
    the publisher with it), the gateway gets a new session and serves again."""
    node = nodes(gateway)[0]
    old = node.require_session().id
    publisher = await start_publisher(gateway, http, "drop")
    try:
        transport = node.client.transport
        assert isinstance(transport, WebSocketTransport) and transport._ws is not None
        await transport._ws.close()  # the connection ends, as if cut
        await wait_stream(http, gateway, "drop", live=None)
        await wait_health(http, gateway, node.name, healthy=True, timeout=10)
        assert node.require_session().id != old
        assert old not in await leaks.admin.sessions(), "Janus kept the socket's session"
        await assert_on_websocket(gateway, leaks)
        again = await start_publisher(gateway, http, "drop")
        await again.stop()
    finally:
        await publisher.pc.close()


@pytest.mark.parametrize("janus_node", ["own"], indirect=True)
async def test_janus_killed_is_503_then_back(
    start_gateway: GatewayFactory, own_janus: ManagedJanus, http: httpx.AsyncClient
) -> None:
    """Janus dies (the socket with it) under a live publisher and viewer: the
    node is down, the viewer's stream ends, POSTs get 503 with Retry-After;
    Janus comes back and publishing and viewing work again."""
    gw = await start_gateway(janus_transport="websocket", public_listing="details")
    publisher = await start_publisher(gw, http, "k")
    pc, frames = await aiortc_viewer()
    try:
        assert (await watch(http, gw.whep("k"), pc)).status_code == 201
        await frames.wait(5)
        own_janus.signal(signal.SIGKILL)
        await wait_health(http, gw, "janus0", healthy=False, timeout=2.0)
        await wait_stream(http, gw, "k", live=None)
        await assert_publish_refused(http, gw, "k2")
        own_janus.start()
        await wait_health(http, gw, "janus0", healthy=True, timeout=10)
        again = await start_publisher(gw, http, "k")
        pc2, frames2 = await aiortc_viewer()
        try:
            r = await watch(http, gw.whep("k"), pc2)
            assert r.status_code == 201, r.text
            await frames2.wait(10)
            assert (await http.delete(r.headers["location"])).status_code == 200
        finally:
            await pc2.close()
        await again.stop()
    finally:
        await publisher.pc.close()
        await pc.close()
