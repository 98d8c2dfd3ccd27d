"""Faults: Janus killed or hung under live sessions, and a gateway that crashed.

Each test gets Janus processes of its own, so it can kill, stop and restart
them without disturbing the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Iterator

import httpx
import pytest

from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.sandbox import INTERFACE
from tests.conftest import GatewayFactory, Leaks, RunningGateway, Topology, janus_settings
from tests.integration.test_whep import SSE_REL, read_events, start_publisher, watch
from tests.integration.test_whip import assert_problem, wait_stream
from tests.publishers import aiortc_publisher
from tests.viewers import aiortc_viewer

SDP = "application/sdp"


async def assert_publish_refused(http: httpx.AsyncClient, gw: RunningGateway, stream: str) -> None:
    """A new publish while no ingest node is up: 503 with a Retry-After
    (RFC 9725 §4.5: the client may retry after it), nothing made."""
    offer = await aiortc_publisher()
    try:
        r = await http.post(gw.whip(stream), content=offer.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert_problem(r, 503)
        assert int(r.headers["retry-after"]) > 0
    finally:
        await offer.close()


def fresh_janus(**overrides: object) -> ManagedJanus:
    process = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, websockets=True,
                                              **overrides))  # type: ignore[arg-type]
    process.start()
    return process


@pytest.fixture
def ingest_janus() -> Iterator[ManagedJanus]:
    process = fresh_janus(rtp_port_range="50001-52000", streaming_port_range="52001-53000")
    yield process
    process.signal(signal.SIGCONT)
    process.stop()


@pytest.fixture
def egress_janus() -> Iterator[ManagedJanus]:
    process = fresh_janus(ice_lite=True, rtp_port_range="53001-55000",
                          streaming_port_range="55001-56000")
    yield process
    process.signal(signal.SIGCONT)
    process.stop()


@pytest.fixture
def janus_node(ingest_janus: ManagedJanus, egress_janus: ManagedJanus) -> Topology:
    return [(ingest_janus, "ingest"), (egress_janus, "egress")]


async def health(http: httpx.AsyncClient, gw: RunningGateway) -> dict[str, bool]:
    body = (await http.get(f"{gw.url}/healthz")).json()
    return {name: node["healthy"] for name, node in body["nodes"].items()}


async def wait_health(http: httpx.AsyncClient, gw: RunningGateway, node: str, healthy: bool,
                      timeout: float) -> float:
    """Seconds until the gateway reports ``node`` healthy (or not)."""
    start = time.monotonic()
    while (await health(http, gw))[node] != healthy:
        assert time.monotonic() - start < timeout, f"{node} not healthy={healthy} in {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_ingest_killed_then_back(
    start_gateway: GatewayFactory, ingest_janus: ManagedJanus, leaks: Leaks,
    http: httpx.AsyncClient
) -> None:
    """Killed under a live publisher and viewer: node down within 2 s, viewers
    told ``inactive``, new publishes 503 + Retry-After until it is back, then
    everything works again without restarting the gateway."""
    gw = await start_gateway()
    publisher = await start_publisher(gw, http, "f")
    pc, frames = await aiortc_viewer()
    viewer = None
    try:
        r = await watch(http, gw.whep("f"), pc)
        assert r.status_code == 201, r.text
        viewer = r.headers["location"]
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        events_url = (await http.post(sse, json=["active", "inactive", "reconnect"])).headers["location"]
        await frames.wait(10)
        reader = asyncio.ensure_future(read_events(http, events_url, 2, timeout=15))

        ingest_janus.signal(signal.SIGKILL)
        took = await wait_health(http, gw, "janus0", healthy=False, timeout=2.0)
        assert [name for name, _ in await asyncio.wait_for(reader, 10)] == ["active", "inactive"]
        await wait_stream(http, gw, "f", live=None)

        await assert_publish_refused(http, gw, "f2")

        ingest_janus.start()
        await wait_health(http, gw, "janus0", healthy=True, timeout=10)
        again = await start_publisher(gw, http, "f")
        before = frames.count
        await frames.wait(before + 20, timeout=15)  # the old viewer plays again
        await again.stop()
        await publisher.pc.close()
        print(f"ingest node marked down {took:.2f} s after SIGKILL")
    finally:
        if viewer:
            await http.delete(viewer)
        await pc.close()


async def test_egress_killed_viewers_get_reconnect(
    start_gateway: GatewayFactory, egress_janus: ManagedJanus, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway()
    publisher = await start_publisher(gw, http, "g")
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gw.whep("g"), pc)
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        events_url = (await http.post(sse, json=["reconnect"])).headers["location"]
        reader = asyncio.ensure_future(read_events(http, events_url, 1, timeout=15))
        await frames.wait(5)
        egress_janus.signal(signal.SIGKILL)
        assert [name for name, _ in await asyncio.wait_for(reader, 10)] == ["reconnect"]
        await wait_health(http, gw, "janus1", healthy=False, timeout=2.0)
        r = await watch(http, gw.whep("g"), pc)
        assert_problem(r, 503)
        assert int(r.headers["retry-after"]) > 0
        egress_janus.start()
        await wait_health(http, gw, "janus1", healthy=True, timeout=10)
        pc2, frames2 = await aiortc_viewer()
        try:
            r = await watch(http, gw.whep("g"), pc2)
            assert r.status_code == 201, r.text
            await frames2.wait(10)
            assert (await http.delete(r.headers["location"])).status_code == 200
        finally:
            await pc2.close()
    finally:
        await pc.close()
        await publisher.stop()


async def test_hung_janus_fails_fast_and_recovers(
    start_gateway: GatewayFactory, ingest_janus: ManagedJanus, leaks: Leaks,
    http: httpx.AsyncClient
) -> None:
    """SIGSTOP: a POST fails with 503 well inside OBS's 8 s; after SIGCONT the
    node comes back, and the session it gave up is reaped, not leaked."""
    gw = await start_gateway()
    ingest_janus.signal(signal.SIGSTOP)
    offer = await aiortc_publisher()
    try:
        start = time.monotonic()
        r = await http.post(gw.whip("h"), content=offer.localDescription.sdp,
                            headers={"Content-Type": SDP})
        took = time.monotonic() - start
        assert_problem(r, 503)
        assert took < 6.0, f"POST took {took:.1f} s"
        await wait_health(http, gw, "janus0", healthy=False, timeout=3)
        ingest_janus.signal(signal.SIGCONT)
        await wait_health(http, gw, "janus0", healthy=True, timeout=10)
        r = await http.post(gw.whip("h"), content=offer.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await offer.close()
    # Only the gateway's current session remains on the node that hung.
    admin = leaks.admin
    assert len(await admin.sessions()) == 1


async def test_restarted_gateway_reaps_what_a_crashed_one_left(
    ingest_janus: ManagedJanus, egress_janus: ManagedJanus, start_gateway: GatewayFactory,
    leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """A gateway killed with SIGKILL leaves its session, rooms and mountpoints;
    the next one frees them when it starts."""
    import json

    port = free_port()
    env = {**os.environ, "WHIP_GATEWAY_JANUS": json.dumps([
        janus_settings(ingest_janus, "ingest").model_dump(),
        janus_settings(egress_janus, "egress").model_dump()])}
    crashed = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        old = RunningGateway(url=url, settings=None, app=None)  # type: ignore[arg-type]
        publisher = await start_publisher(old, http, "crash")
        pc, frames = await aiortc_viewer()
        r = await watch(http, old.whep("crash"), pc)
        assert r.status_code == 201
        await frames.wait(5)
        crashed.kill()
        crashed.wait()
        await pc.close()
        await publisher.pc.close()
    finally:
        if crashed.poll() is None:
            crashed.kill()
    assert await leaks.rooms() and await leaks.mountpoints(), "the crash left resources"
    await start_gateway()
    assert await leaks.rooms() == [] and await leaks.mountpoints() == []
    for admin, _ in leaks.admins:
        assert len(await admin.sessions()) == 1, "only the new gateway's session"


@pytest.mark.parametrize("how", ["hangs up", "goes silent"])
async def test_vanished_publisher_viewers_told_inactive_in_bounded_time(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, how: str
) -> None:
    """No DELETE: a hang-up (DTLS close) is noticed at once; silence after
    Janus's no-media timer (1 s).  README states these bounds."""
    gw = await start_gateway(publisher_media_timeout=30)
    publisher = await start_publisher(gw, http, "gone")
    pc, frames = await aiortc_viewer()
    try:
        r = await watch(http, gw.whep("gone"), pc)
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        events_url = (await http.post(sse, json=["active", "inactive"])).headers["location"]
        await frames.wait(5)
        reader = asyncio.ensure_future(read_events(http, events_url, 2, timeout=15))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        if how == "hangs up":
            await publisher.pc.close()
        else:
            for sender in publisher.pc.getSenders():
                sender.replaceTrack(None)
        events = await asyncio.wait_for(reader, 10)
        took = time.monotonic() - start
        assert [name for name, _ in events] == ["active", "inactive"]
        assert took < (1.0 if how == "hangs up" else 2.5), f"inactive after {took:.2f} s"
        print(f"publisher {how}: viewers told inactive after {took:.2f} s")
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await pc.close()
        await publisher.stop()
