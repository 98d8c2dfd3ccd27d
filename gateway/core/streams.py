"""Streams and their publisher sessions: the model and the registry.

A stream is a name (the last path segment of the WHIP URL).  It is live
while one publisher session on it is receiving media.  The registry is the
single source of truth for "who publishes what"; today it lives in memory.
It is also how ingest and egress meet: ingest announces publisher changes
here, and egress (and the event streams) subscribe as ``PublisherObserver``,
so neither side imports the other.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.janus.videoroom import RoomPublisher
    from gateway.janus.streaming import MediaSpec
    from gateway.sdp.model import SessionDescription

log = logging.getLogger(__name__)

class PublisherState(Enum):
    CONNECTING = "connecting"  # answered; no media yet
    LIVE = "live"  # media arriving
    STALLED = "stalled"  # media stopped on every track
    ENDED = "ended"


class PublisherChange(Enum):
    """What the egress side needs to hear about a stream's publisher."""

    PUBLISHED = "published"  # joined Janus: forwarders can be made
    LIVE = "live"  # media arriving
    STALLED = "stalled"  # media stopped, session still there
    ENDED = "ended"  # gone, with its room and forwarders


def new_resource_id() -> str:
    """192 random bits, URL-safe (RFC 9725 section 5 asks for at least 128)."""
    return secrets.token_urlsafe(24)


def new_etag() -> str:
    """A strong entity tag for one ICE session (RFC 9110 section 8.8.3)."""
    return '"' + secrets.token_hex(12) + '"'


@dataclass(eq=False)
class PublisherSession:
    stream: str
    offer: SessionDescription
    id: str = field(default_factory=new_resource_id)
    etag: str = field(default_factory=new_etag)
    backend: RoomPublisher | None = None
    node_name: str | None = None  # where its set-up runs, known before the backend exists
    media_signature: tuple[MediaSpec, ...] | None = None  # what a mountpoint must carry, cached
    state: PublisherState = PublisherState.CONNECTING
    created_at: float = field(default_factory=time.monotonic)
    state_since: float = field(default_factory=time.monotonic)
    receiving: dict[str, bool] = field(default_factory=dict)
    remote_ufrag: str | None = None
    remote_pwd: str | None = None
    end_reason: str | None = None
    timer: asyncio.TimerHandle | None = None
    closing: asyncio.Task[None] | None = None

    @property
    def answer(self) -> str:
        return self.backend.answer if self.backend else ""

    def set_state(self, state: PublisherState) -> None:
        if state is not self.state:
            self.state = state
            self.state_since = time.monotonic()

    def holds_stream(self, connect_timeout: float) -> bool:
        """Whether a new POST for the stream must be refused (409).

        A publisher that is sending, or is still within its time to connect,
        holds the stream; one whose media stopped (OBS after a network drop)
        can be replaced at once.
        """
        if self.state is PublisherState.LIVE:
            return True
        if self.state is PublisherState.CONNECTING:
            return time.monotonic() - self.created_at < connect_timeout
        return False

    def describe(self) -> dict[str, object]:
        return {
            "id": self.id,
            "state": self.state.value,
            "since_s": round(time.monotonic() - self.state_since, 3),
            "node": self.backend.node.name if self.backend else None,
            "codecs": {s.kind: s.codec for s in self.backend.streams} if self.backend else {},
        }


class PublisherObserver(Protocol):
    """Told about publishers joining, going live, stalling and ending."""

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None: ...


class StreamRegistry:
    """Publisher sessions by id and by stream name, and who listens to their changes."""

    def __init__(self) -> None:
        self._by_id: dict[str, PublisherSession] = {}
        self._by_stream: dict[str, PublisherSession] = {}
        self._observers: list[PublisherObserver] = []

    def subscribe(self, observer: PublisherObserver) -> None:
        self._observers.append(observer)

    def announce(self, publisher: PublisherSession, change: PublisherChange) -> None:
        """Tell every observer; one that fails does not stop the others."""
        for observer in list(self._observers):
            try:
                observer.publisher_changed(publisher, change)
            except Exception:
                log.exception("publisher observer failed on %s", change.value)

    def live_publisher(self, stream: str) -> PublisherSession | None:
        """The stream's publisher if it is live and joined to Janus."""
        publisher = self._by_stream.get(stream)
        if publisher is None or publisher.backend is None or publisher.state is not PublisherState.LIVE:
            return None
        return publisher

    def get(self, session_id: str) -> PublisherSession | None:
        return self._by_id.get(session_id)

    def publisher_of(self, stream: str) -> PublisherSession | None:
        return self._by_stream.get(stream)

    def put(self, session: PublisherSession) -> None:
        """Make ``session`` the stream's publisher (an older one stays by id until ended)."""
        self._by_id[session.id] = session
        self._by_stream[session.stream] = session

    def remove(self, session: PublisherSession) -> None:
        self._by_id.pop(session.id, None)
        if self._by_stream.get(session.stream) is session:
            del self._by_stream[session.stream]

    def sessions(self) -> list[PublisherSession]:
        return list(self._by_id.values())

    def streams(self) -> dict[str, PublisherSession]:
        return dict(self._by_stream)
