"""WHEP viewers and the mountpoints that serve them: the model.

``Egress`` (egress.py) handles viewers' requests, ``Mountpoints``
(mountpoints.py) the variants and their forwarders, ``StreamEvents``
(stream_events.py) what event streams hear; this module only says what a
viewer session, a mountpoint variant and a stream's egress on one node are,
and keeps the book of live viewer sessions they all read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Coroutine

from gateway.core.streams import new_etag, new_resource_id
from gateway.janus.node import JanusNode
from gateway.janus.streaming import MediaSpec, Mountpoint, StreamingViewer
from gateway.janus.videoroom import RoomPublisher
from gateway.sdp import bridge as sdp_bridge

# (kind, payload type) per kind: which PTs a mountpoint variant rewrites to.
VariantKey = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EgressPolicy:
    viewer_connect_timeout: float = 15.0
    counter_offer_validity: float = 30.0
    mountpoint_grace: float = 3.0
    mountpoint_threads: int = 0
    janus_timeout: float = 6.0
    layers_interval: float = 2.0
    viewercount_interval: float = 1.0
    keep_variants_while_live: bool = True
    buffer_keyframe: bool = True


class ViewerMode(Enum):
    """How the viewer's SDP reached Janus."""

    BRIDGED = "bridged"
    NATIVE = "native"
    COUNTER_OFFER = "counter-offer"


@dataclass(eq=False)
class Variant:
    key: VariantKey
    mountpoint: Mountpoint
    forwarders: list[int] = field(default_factory=list)
    fed_by: RoomPublisher | None = None
    viewers: set[str] = field(default_factory=set)
    idle: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class StreamEgress:
    """One stream's mountpoints on one node."""

    stream: str
    node: JanusNode
    signature: tuple[MediaSpec, ...]
    variants: dict[VariantKey, Variant] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(eq=False)
class ViewerSession:
    stream: str
    mode: ViewerMode
    egress: StreamEgress
    variant: Variant
    viewer: StreamingViewer
    id: str = field(default_factory=new_resource_id)
    etag: str = field(default_factory=new_etag)
    answer: str = ""  # what the viewer gets: our answer, or (counter-offer) our offer
    bridged: sdp_bridge.Bridged | None = None
    janus_mid: str = "a"
    connected: bool = False
    awaiting_answer: bool = False
    answer_valid_for: float = 0.0  # counter-offer: seconds the viewer has to answer
    ended: bool = False
    timer: asyncio.TimerHandle | None = None
    simulcast_rids: list[str] = field(default_factory=list)
    remote_ufrag: str | None = None  # the viewer's, to drop candidates of other ICE sessions
    video_mindex: str = "1"  # the viewer's video m-line index, which keys ``layers`` events
    viewer_offer: str | None = None  # bridged mode: rewritten on an ICE restart


class ViewerBook:
    """The viewer sessions that have not ended, by id."""

    def __init__(self) -> None:
        self._by_id: dict[str, ViewerSession] = {}
        self._observers: list[Any] = []  # viewer_added / viewer_removed (e.g. webhooks)
        # Told the stream of a viewer that came or went (replicas write it down).
        self.listeners: list[Callable[[str], None]] = []

    def subscribe(self, observer: Any) -> None:
        """Tell ``observer`` (``viewer_added(session)``, ``viewer_removed(session)``)
        about viewers coming and going, without Egress knowing who listens."""
        self._observers.append(observer)

    def add(self, session: ViewerSession) -> None:
        self._by_id[session.id] = session
        self._tell("viewer_added", session)
        self._changed(session.stream)

    def remove(self, session: ViewerSession) -> None:
        if self._by_id.pop(session.id, None) is not None:
            self._tell("viewer_removed", session)
            self._changed(session.stream)

    def changed(self, stream: str) -> None:
        """A viewer of ``stream`` changed in place (it connected)."""
        self._changed(stream)

    def _tell(self, what: str, session: ViewerSession) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, what)(session)
            except Exception:
                logging.getLogger(__name__).exception("viewer observer failed on %s", what)

    def _changed(self, stream: str) -> None:
        for listener in self.listeners:
            listener(stream)

    def get(self, session_id: str) -> ViewerSession | None:
        return self._by_id.get(session_id)

    def all(self) -> list[ViewerSession]:
        return list(self._by_id.values())

    def of_stream(self, stream: str) -> list[ViewerSession]:
        return [v for v in self._by_id.values() if v.stream == stream]

    def count(self, stream: str) -> int:
        return sum(1 for v in self._by_id.values() if v.stream == stream and not v.ended)

    def streams(self) -> set[str]:
        return {v.stream for v in self._by_id.values()}


class Background:
    """Tasks the egress side starts and must see finished before it stops."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
