"""What WHEP event streams hear about a stream (draft-ietf-wish-whep extensions, section 4).

``active`` and ``inactive`` follow the publisher; ``viewercount`` is sent
at most once per interval per stream; ``layers`` comes from polling the
publisher's simulcast bitrates.  A new event stream starts with what is
true now (``active`` if live, the count, the last layers): that is decided
here, not by the HTTP resource.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.core import layers
from gateway.core.events import EVENTS, Event, EventHub, EventStream
from gateway.core.streams import PublisherChange, PublisherSession, PublisherState, StreamRegistry
from gateway.core.viewers import EgressPolicy, ViewerBook, ViewerSession
from gateway.errors import GatewayError, MalformedBody

log = logging.getLogger(__name__)


class StreamEvents:
    def __init__(self, registry: StreamRegistry, viewers: ViewerBook, hub: EventHub,
                 policy: EgressPolicy) -> None:
        self.registry = registry
        self.viewers = viewers
        self.hub = hub
        self.policy = policy
        self._layers: dict[str, list[dict[str, Any]]] = {}  # last known, by stream
        self._layers_task: asyncio.Task[None] | None = None
        self._count_pending: set[str] = set()
        registry.subscribe(self)

    def open(self, session: ViewerSession, names: list[str] | None) -> EventStream:
        """A new event stream for ``session``; no names (or none) means all."""
        if not names:
            names = list(EVENTS)
        unknown = [n for n in names if n not in EVENTS]
        if unknown:
            raise MalformedBody(f"unsupported event(s) {unknown}; supported: {list(EVENTS)}")
        initial: list[Event] = []
        publisher = self.registry.publisher_of(session.stream)
        if publisher is not None and publisher.state is PublisherState.LIVE:
            initial.append(("active", {}))  # never an initial "inactive" (section 4.2)
        initial.append(("viewercount", {"viewercount": self.viewers.count(session.stream)}))
        known = self._layers.get(session.stream)
        if known:
            initial.append(("layers", {session.video_mindex: known}))
        return self.hub.subscribe(session.stream, session.id, names, initial)

    def get(self, session: ViewerSession, stream_id: str) -> EventStream | None:
        return self.hub.get(session.id, stream_id)

    def close(self, subscription: EventStream) -> None:
        self.hub.close(subscription.id)

    def reconnect(self, session: ViewerSession) -> None:
        """Tell the viewer's player to start over (its resource is going away)."""
        self.hub.send_to_viewer(session.id, "reconnect", {})

    def viewer_ended(self, session: ViewerSession) -> None:
        """Section 4: the resource's event streams end with it."""
        self.hub.close_viewer(session.id)

    def count_changed(self, stream: str) -> None:
        """Tell listeners the viewer count, at most once per interval per
        stream: a thousand joins must not send a million events."""
        if stream in self._count_pending:
            return
        loop = asyncio.get_running_loop()

        def send() -> None:
            self._count_pending.discard(stream)
            self.hub.publish(stream, "viewercount", {"viewercount": self.viewers.count(stream)})

        self._count_pending.add(stream)
        loop.call_later(self.policy.viewercount_interval, send)

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        stream = publisher.stream
        if change is PublisherChange.LIVE:
            self.hub.publish(stream, "active", {})
        elif change in (PublisherChange.STALLED, PublisherChange.ENDED):
            if self.registry.publisher_of(stream) in (None, publisher):
                self.hub.publish(stream, "inactive", {})

    def start(self) -> None:
        self._layers_task = asyncio.create_task(self._layers_loop(), name="whep-layers")

    async def stop(self) -> None:
        if self._layers_task is not None:
            self._layers_task.cancel()
            await asyncio.gather(self._layers_task, return_exceptions=True)

    async def _layers_loop(self) -> None:
        """Every few seconds, tell viewers of simulcast streams what each layer carries."""
        while True:
            await asyncio.sleep(self.policy.layers_interval)
            for stream in self.viewers.streams():
                publisher = self.registry.publisher_of(stream)
                if publisher is None or publisher.backend is None or not layers.rids(publisher.offer):
                    self._layers.pop(stream, None)
                    continue
                try:
                    bitrates = await publisher.backend.substream_bitrates()
                except GatewayError as exc:
                    log.debug("stream %s: no layer stats: %s", stream, exc.detail)
                    continue
                if not bitrates:
                    continue
                described = layers.describe(layers.rids(publisher.offer),
                                            next(iter(bitrates.values())))
                self._layers[stream] = described
                for viewer in self.viewers.of_stream(stream):
                    self.hub.send_to_viewer(viewer.id, "layers", {viewer.video_mindex: described})
