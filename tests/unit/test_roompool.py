"""The publisher pool's bookkeeping, without Janus: what a take gets, and how a
pooled room's description is read back (the reaper and takeover rely on it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gateway.janus.reaper import pooled_session
from gateway.janus.roompool import PublisherPool, pool_description
from gateway.janus.videoroom import RoomOptions

BASELINE = RoomOptions("h264,vp8", "opus", h264_profile="42e01f")


def pool_with(rooms: list[int], options: RoomOptions = BASELINE) -> PublisherPool:
    node: Any = SimpleNamespace(name="n", tag="gw", session=None)
    pool = PublisherPool(node, 2, options)
    pool._rooms = list(rooms)
    return pool


def test_a_take_with_the_pools_options_gets_a_ready_room() -> None:
    pool = pool_with([1, 2])
    assert pool.take_room(BASELINE) == 2
    assert pool.held()[1] == {1}


def test_other_options_miss_and_become_the_pools() -> None:
    pool = pool_with([1, 2])
    vp8 = RoomOptions("h264,vp8", "opus", h264_profile=None)
    assert pool.take_room(vp8) is None
    assert pool.options == vp8
    assert pool.held()[1] == {1, 2}, "the old rooms are still Janus's until destroyed"
    assert pool.take_room(vp8) is None, "and never handed out"


def test_a_recorded_stream_never_takes_a_pooled_room_nor_switches_the_pool() -> None:
    pool = pool_with([1, 2])
    recorded = RoomOptions("h264,vp8", "opus", h264_profile="42e01f", record_dir="/rec")
    assert pool.take_room(recorded) is None
    assert pool.options == BASELINE and pool.take_room(BASELINE) == 2


def test_no_handle_without_a_live_session() -> None:
    pool = pool_with([])
    assert pool.take_handle(lambda event: None) is None


def test_pooled_rooms_name_their_session() -> None:
    assert pooled_session(pool_description("gw", 1234), "gw") == 1234
    assert pooled_session("gw cam", "gw") is None
    assert pooled_session(pool_description("other", 1234), "gw") is None
    assert pooled_session("gw pool cam", "gw") is None, "a stream named like the word"
