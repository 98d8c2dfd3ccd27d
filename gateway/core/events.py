"""WHEP server-sent events (draft-ietf-wish-whep extensions, section 4).

A viewer's player POSTs the list of events it wants and gets an event
stream; the gateway publishes stream-wide events (active, inactive,
viewercount, layers) and per-viewer ones (reconnect) into the hub, which
queues them for each matching event stream.  Delivery over HTTP is
sse-starlette's job (``gateway.http.whep``); this module has no HTTP in it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from gateway.core.streams import new_resource_id

log = logging.getLogger(__name__)

EVENTS = ("active", "inactive", "layers", "reconnect", "viewercount")
QUEUE_LIMIT = 256

Event = tuple[str, dict[str, Any]]


@dataclass(eq=False)
class EventStream:
    stream: str
    viewer_id: str
    names: frozenset[str]
    id: str = field(default_factory=new_resource_id)
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    closed: bool = False

    def offer(self, event: Event) -> None:
        if self.closed or event[0] not in self.names:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:  # a player that stopped reading loses old events, not memory
            self.queue.get_nowait()
            self.queue.put_nowait(event)

    def close(self, *, drain: bool = False) -> None:
        """End readers.  A player's DELETE drops what is queued (section 4);
        a resource that ends delivers it first (``drain``), so a last
        ``reconnect`` still reaches the player."""
        if self.closed:
            return
        self.closed = True
        if not drain:
            while not self.queue.empty():
                self.queue.get_nowait()
        elif self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventHub:
    def __init__(self) -> None:
        self._streams: dict[str, EventStream] = {}

    def subscribe(self, stream: str, viewer_id: str, names: list[str],
                  initial: list[Event]) -> EventStream:
        """A new event stream; ``initial`` events (e.g. ``active``) are queued first."""
        subscription = EventStream(stream=stream, viewer_id=viewer_id, names=frozenset(names))
        self._streams[subscription.id] = subscription
        for event in initial:
            subscription.offer(event)
        return subscription

    def count(self) -> int:
        """Open event streams (subscribers), for the metrics."""
        return len(self._streams)

    def restore(self, stream: str, viewer_id: str, names: list[str], stream_id: str) -> EventStream:
        """An event stream another gateway replica opened, under its id (``core.cluster``):
        its player reconnects to the same URL here."""
        subscription = EventStream(stream=stream, viewer_id=viewer_id, names=frozenset(names),
                                   id=stream_id)
        self._streams[subscription.id] = subscription
        return subscription

    def of_viewer(self, viewer_id: str) -> list[EventStream]:
        return [s for s in self._streams.values() if s.viewer_id == viewer_id and not s.closed]

    def get(self, viewer_id: str, stream_id: str) -> EventStream | None:
        found = self._streams.get(stream_id)
        if found is None or found.viewer_id != viewer_id or found.closed:
            return None
        return found

    def publish(self, stream: str, name: str, data: dict[str, Any]) -> None:
        for subscription in list(self._streams.values()):
            if subscription.stream == stream:
                subscription.offer((name, data))

    def send_to_viewer(self, viewer_id: str, name: str, data: dict[str, Any]) -> None:
        for subscription in list(self._streams.values()):
            if subscription.viewer_id == viewer_id:
                subscription.offer((name, data))

    def close(self, stream_id: str) -> None:
        subscription = self._streams.pop(stream_id, None)
        if subscription is not None:
            subscription.close()

    def close_viewer(self, viewer_id: str) -> None:
        """Section 4: every event stream of a resource ends with the resource
        (after delivering what is already queued)."""
        for key, subscription in list(self._streams.items()):
            if subscription.viewer_id == viewer_id:
                del self._streams[key]
                subscription.close(drain=True)
