"""RoomPublisher never lets a stop_rtp_forward overlap its own teardown.

Janus 1.1.2 aborts (``g_mutex_clear()`` on a locked mutex, SIGABRT, in
janus_videoroom_handle_message or janus_videoroom_hangup_media) when a
``stop_rtp_forward`` for a publisher runs while that publisher is hung up
(handle detached) or its room destroyed.  The gateway did exactly that when
the last viewer of a stream left (its mountpoint's forwarders are stopped)
just as the publisher left; tests/integration/test_fuzz.py's JSON test hit it
in teardown about one run in three.  Here a fake node records the order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.janus.videoroom import RoomPublisher


class FakeHandle:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def detach(self) -> None:
        self.log.append("detach")


class FakeControl:
    def __init__(self, log: list[str], gate: asyncio.Event) -> None:
        self.log, self.gate = log, gate

    async def request(self, body: dict[str, Any]) -> dict[str, Any]:
        what = body["request"]
        self.log.append(f"{what} start")
        if what == "stop_rtp_forward":
            await self.gate.wait()  # Janus is busy with it
        self.log.append(f"{what} end")
        return {}


class FakeNode:
    name = "fake"
    healthy = True
    plugin_admin_key = None
    load = 1

    def __init__(self, control: FakeControl) -> None:
        self._control = control

    def control(self, plugin: str) -> FakeControl:
        return self._control


async def test_close_waits_for_a_stop_forward_in_flight_and_the_rest_are_skipped() -> None:
    log: list[str] = []
    gate = asyncio.Event()
    publisher = RoomPublisher(node=FakeNode(FakeControl(log, gate)), room_id=1,  # type: ignore[arg-type]
                              handle=FakeHandle(log))  # type: ignore[arg-type]
    stopping = asyncio.create_task(publisher.stop_forward([11, 12, 13]))
    await asyncio.sleep(0)
    closing = asyncio.create_task(publisher.close())
    await asyncio.sleep(0.01)
    assert log == ["stop_rtp_forward start"], "close must wait for the stop_rtp_forward in flight"
    gate.set()
    await asyncio.gather(stopping, closing)
    # The room is destroyed before the handle is detached (issue 11: the reverse crashed Janus).
    assert log == ["stop_rtp_forward start", "stop_rtp_forward end",
                   "destroy start", "destroy end", "detach"]


async def test_stop_forward_after_close_sends_nothing() -> None:
    log: list[str] = []
    publisher = RoomPublisher(node=FakeNode(FakeControl(log, asyncio.Event())), room_id=1,  # type: ignore[arg-type]
                              handle=FakeHandle(log))  # type: ignore[arg-type]
    await publisher.close()
    await publisher.stop_forward([11])
    assert log == ["destroy start", "destroy end", "detach"]
