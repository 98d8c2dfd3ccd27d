"""The publisher pool (``ingest_pool_size``): rooms and handles made ahead.

What a user sees is only a faster 201; what Janus holds proves the rest:
a publish on a warm pool takes a room and a handle that existed before the
POST, the pool is topped up again afterwards, a Janus restart empties and
refills it, and nothing is left once the gateway stops (the ``start_gateway``
fixture checks Janus holds exactly the control handles plus what the pools
name while it runs, and nothing after).  Each test has a Janus of its own.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusError
from gateway.janus.process import JanusProcessConfig, ManagedJanus
from gateway.janus.roompool import PublisherPool
from tests.conftest import GatewayFactory, Leaks, RunningGateway
from tests.publishers import aiortc_publisher
from tests.sandbox import INTERFACE

SDP = "application/sdp"


@pytest.fixture
def janus_node() -> Iterator[ManagedJanus]:
    process = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE,
                                              rtp_port_range="56001-58000",
                                              streaming_port_range="58001-59000"))
    process.start()
    yield process
    process.signal(signal.SIGCONT)
    process.stop()


async def settled_pool(gw: RunningGateway) -> PublisherPool:
    pool: PublisherPool = gw.app.state.ingest.pools["janus0"]
    await pool.settled()
    return pool


async def publishers(admin: JanusAdmin) -> dict[int, int]:
    """Janus's publisher handles: handle id -> the room it joined."""
    found = {}
    for session_id, handles in (await admin.all_handles()).items():
        for handle_id in handles:
            try:
                info = await admin.handle_info(session_id, handle_id)
            except JanusError:
                continue
            plugin = info.get("plugin_specific") or {}
            if plugin.get("type") == "publisher":
                found[handle_id] = int(plugin["room"])
    return found


async def room_entry(leaks: Leaks, room: int) -> dict[str, Any]:
    admin, key = leaks.admins[0]
    listed = await admin.message_plugin("janus.plugin.videoroom", {"request": "list", "admin_key": key})
    return next(e for e in listed["list"] if e["room"] == room)


async def publish(http: httpx.AsyncClient, gw: RunningGateway, stream: str,
                  codec: str | None = "video/VP8") -> str:
    pc = await aiortc_publisher(video_codec=codec)
    try:
        r = await http.post(gw.whip(stream), content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        return str(r.headers["location"])
    finally:
        await pc.close()


async def test_a_warm_pool_serves_a_publish_and_is_topped_up(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(ingest_pool_size=2)
    location = await publish(http, gw, "warm-up")  # the pool takes this offer's room options
    await http.delete(location)
    pool = await settled_pool(gw)
    handles_before, rooms_before = pool.held()
    assert len(handles_before) == 2 and len(rooms_before) == 2
    assert set(await leaks.all_rooms()) == rooms_before, "Janus holds the pooled rooms, no other"

    location = await publish(http, gw, "cam")
    [(handle, room)] = (await publishers(leaks.admin)).items()
    assert handle in handles_before, "the publisher joined on a pre-attached handle"
    assert room in rooms_before, "in a pre-created room"
    await settled_pool(gw)  # renamed and topped up off the request path
    entry = await room_entry(leaks, room)
    assert entry["description"] == "whip-gateway cam", "named after its stream, as a fresh room"
    assert entry["max_publishers"] == 1 and entry["videocodec"] == "h264,vp8,vp9,av1,h265"
    assert entry["audiocodec"] == "opus" and entry["record"] is False
    handles_now, rooms_now = pool.held()
    assert len(handles_now) == 2 and len(rooms_now) == 2 and room not in rooms_now
    assert await leaks.rooms() == [room]

    assert (await http.delete(location)).status_code == 200
    await gw.app.state.ingest.settled()
    assert await leaks.rooms() == [], "DELETE freed the publisher's room"
    assert pool.held() == (handles_now, rooms_now), "and left the pool full"
    assert set(await leaks.all_rooms()) == rooms_now


async def test_an_offer_with_other_room_options_is_served_and_the_pool_follows(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """Rooms fix their H.264 profile at creation: a VP8-only offer (no profile)
    does not fit rooms made for constrained baseline; it gets a room of its
    own, and the pool makes the next ones for it."""
    gw = await start_gateway(ingest_pool_size=2)
    pool = await settled_pool(gw)
    assert pool.options.h264_profile == "42e01f"
    first = pool.held()[1]
    location = await publish(http, gw, "vp8", codec="video/VP8")
    [room] = (await publishers(leaks.admin)).values()
    assert room not in first and "h264_profile" not in await room_entry(leaks, room)
    await http.delete(location)
    await settled_pool(gw)
    assert pool.options.h264_profile is None
    second = pool.held()[1]
    assert len(second) == 2 and not second & first, "the old rooms went"
    location = await publish(http, gw, "vp8", codec="video/VP8")
    [room] = (await publishers(leaks.admin)).values()
    assert room in second
    await http.delete(location)


async def test_more_concurrent_publishes_than_the_pool_all_succeed(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(ingest_pool_size=2)
    await settled_pool(gw)
    locations = await asyncio.gather(*(publish(http, gw, f"s{i}") for i in range(7)))
    rooms = await leaks.rooms()
    assert len(rooms) == 7 == len(set((await publishers(leaks.admin)).values()))
    await asyncio.gather(*(http.delete(loc) for loc in locations))
    await gw.app.state.ingest.settled()
    assert await leaks.rooms() == []


async def test_a_janus_restart_empties_the_pool_and_it_fills_again(
    start_gateway: GatewayFactory, janus_node: ManagedJanus, leaks: Leaks,
    http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(ingest_pool_size=2)
    pool = await settled_pool(gw)
    old_handles, _ = pool.held()
    janus_node.signal(signal.SIGKILL)
    await wait_health(http, gw, healthy=False)
    janus_node.start()
    await wait_health(http, gw, healthy=True)
    await settled_pool(gw)
    handles, rooms = pool.held()
    assert len(handles) == 2 and len(rooms) == 2 and not handles & old_handles
    assert set(await leaks.all_rooms()) == rooms
    location = await publish(http, gw, "again")
    assert (await http.delete(location)).status_code == 200


async def test_a_hung_janus_leaves_no_pooled_room_behind(
    start_gateway: GatewayFactory, janus_node: ManagedJanus, leaks: Leaks,
    http: httpx.AsyncClient
) -> None:
    """Stopped long enough to be declared down, then resumed: the rooms the old
    session's pool made still exist in Janus; the pool destroys them when the
    node is back (the reaper frees the old session)."""
    gw = await start_gateway(ingest_pool_size=2)
    pool = await settled_pool(gw)
    _, old_rooms = pool.held()
    janus_node.signal(signal.SIGSTOP)
    await wait_health(http, gw, healthy=False)
    janus_node.signal(signal.SIGCONT)
    await wait_health(http, gw, healthy=True)
    await settled_pool(gw)
    _, rooms = pool.held()
    assert len(rooms) == 2 and not rooms & old_rooms
    assert set(await leaks.all_rooms()) == rooms


async def test_size_zero_turns_the_pool_off(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(ingest_pool_size=0)
    assert gw.app.state.ingest.pools == {}
    location = await publish(http, gw, "cold")
    assert len(await leaks.all_rooms()) == 1
    await http.delete(location)


async def wait_health(http: httpx.AsyncClient, gw: RunningGateway, *, healthy: bool,
                      timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        nodes = (await http.get(f"{gw.url}/healthz")).json()["nodes"]
        if nodes["janus0"]["healthy"] == healthy:
            return
        assert time.monotonic() < deadline, f"janus0 not healthy={healthy}: {nodes}"
        await asyncio.sleep(0.05)
