"""One publisher ICE restart at a time, and no hang-up under one (issue 11).

Janus 1.1.2 crashed under bench/soak.py in the middle of publisher ICE
restarts; the gateway now never hands Janus a second ``configure`` with an
offer, or the publisher's teardown, while a restart on the same handle is
in flight.  The backend here is a stand-in whose ``renegotiate`` waits for
the test to release it, so the overlap is forced, not hoped for.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.core.auth import StreamKeys
from gateway.core.ingest import Ingest, IngestPolicy
from gateway.core.placement import NodePool
from gateway.core.streams import PublisherSession
from gateway.errors import IceRestartInProgress
from gateway.janus.client import JanusClient
from gateway.janus.node import JanusNode
from gateway.sdp import model as sdp
from tests.conftest import read_fixture


class HeldBackend:
    """A RoomPublisher stand-in: each renegotiate waits until released; calls are logged."""

    def __init__(self, answer: sdp.SessionDescription) -> None:
        self.answer = answer
        self.release = asyncio.Event()
        self.calls: list[str] = []
        self.in_flight = 0

    async def renegotiate(self, offer: str, timeout: float = 6.0) -> sdp.SessionDescription:
        self.calls.append("configure")
        self.in_flight += 1
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        self.calls.append("configure done")
        return self.answer

    async def close(self) -> None:
        # What Janus must never see: a hang-up while a configure is in flight.
        self.calls.append(f"close (restarts in flight: {self.in_flight})")

    async def trickle(self, *args: Any) -> None:
        self.calls.append("trickle")


def restart_fragment(ufrag: str, mids: list[str]) -> str:
    return (f"a=ice-options:trickle ice2\r\na=group:BUNDLE {' '.join(mids)}\r\n"
            f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{mids[0]}\r\n"
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{'p' * 24}\r\n")


async def yield_a_while() -> None:
    """Let every runnable task run until it blocks (no timing involved)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def setup() -> Any:
    node = JanusNode("ingest", JanusClient("http://127.0.0.1:9/janus"), role="ingest",
                     reconnect_interval=60)
    ingest = Ingest(NodePool([node]), StreamKeys({}), IngestPolicy())
    offer = sdp.parse(read_fixture("sdp", "aiortc_publish.sdp"))
    session = PublisherSession(stream="live", offer=offer, node_name="ingest")
    session.remote_ufrag, session.remote_pwd = offer.ice_credentials()
    backend = HeldBackend(sdp.parse(read_fixture("sdp", "aiortc_view.sdp")))
    session.backend = backend  # type: ignore[assignment]
    ingest.registry.put(session)
    mids = [m.mid or str(i) for i, m in enumerate(offer.media)]
    try:
        yield ingest, session, backend, mids
    finally:
        backend.release.set()
        await node.close()


async def test_a_second_restart_on_the_same_session_gets_409_with_retry_after(setup: Any) -> None:
    ingest, session, backend, mids = setup
    first = asyncio.create_task(ingest.patch(session, restart_fragment("aaaa1111", mids)))
    await yield_a_while()
    assert backend.in_flight == 1
    with pytest.raises(IceRestartInProgress) as refused:
        await ingest.patch(session, restart_fragment("bbbb2222", mids))
    assert refused.value.status == 409 and refused.value.retry_after
    assert backend.calls == ["configure"]  # the second offer never reached Janus
    backend.release.set()
    result = await first
    assert result.etag and session.remote_ufrag == "aaaa1111"
    # Once the first is done, the next restart goes through.
    again = await ingest.patch(session, restart_fragment("cccc3333", mids))
    assert again.etag and session.remote_ufrag == "cccc3333"


async def test_end_waits_for_the_restart_in_flight(setup: Any) -> None:
    ingest, session, backend, mids = setup
    restart = asyncio.create_task(ingest.patch(session, restart_fragment("aaaa1111", mids)))
    await yield_a_while()
    ending = asyncio.create_task(ingest.end(session))
    await yield_a_while()
    assert not ending.done()
    assert not any(c.startswith("close") for c in backend.calls)
    backend.release.set()
    await asyncio.gather(restart, ending)
    assert backend.calls == ["configure", "configure done", "close (restarts in flight: 0)"]
    assert not ingest._restarts  # nothing kept per operation


async def test_a_failed_restart_frees_the_slot(setup: Any) -> None:
    ingest, session, backend, mids = setup

    async def failing(offer: str, timeout: float = 6.0) -> sdp.SessionDescription:
        raise asyncio.CancelledError  # e.g. the request was dropped mid-way

    backend.renegotiate = failing  # type: ignore[method-assign]
    with pytest.raises(asyncio.CancelledError):
        await ingest.patch(session, restart_fragment("aaaa1111", mids))
    assert not ingest._restarts
    await ingest.end(session)
    assert backend.calls == ["close (restarts in flight: 0)"]
