"""Domain events -> webhook events: publishers and streams (the registry),
viewers (coalesced per stream) and nodes (up/down).  Only domain events feed
it, never HTTP code."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from gateway.core.streams import PublisherChange, PublisherSession, StreamRegistry
from gateway.core.webhooks import HookPolicy, Webhooks

if TYPE_CHECKING:
    from gateway.core.viewers import ViewerSession
    from gateway.janus.node import JanusNode


class HookEvents:
    """Turns domain events into webhook events.

    A ``PublisherObserver`` (publisher and stream events), a viewer-book
    observer (``viewers.changed``, coalesced per stream so a crowd joining
    makes one event a second, not one per viewer) and a node observer.
    """

    def __init__(self, hooks: Webhooks, registry: StreamRegistry, viewer_count: Any,
                 policy: HookPolicy) -> None:
        self.hooks = hooks
        self.registry = registry
        self.viewer_count = viewer_count  # stream -> current number of viewers
        self.policy = policy
        self._joined: dict[str, int] = defaultdict(int)
        self._left: dict[str, int] = defaultdict(int)
        self._pending: dict[str, asyncio.TimerHandle] = {}
        registry.subscribe(self)

    # -- publishers and streams (PublisherObserver) ---------------------------

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        data = {"stream": publisher.stream, "publisher": publisher.id[:8],
                "node": publisher.node_name}
        if change is PublisherChange.PUBLISHED:
            self.hooks.emit("publisher.connected", data)
        elif change is PublisherChange.LIVE:
            self.hooks.emit("stream.live", {"stream": publisher.stream,
                                            "publisher": publisher.id[:8]})
        elif change is PublisherChange.ENDED:
            successor = self.registry.publisher_of(publisher.stream)
            self.hooks.emit("publisher.disconnected", {**data, "reason": publisher.end_reason})
            if successor is not None and successor is not publisher:
                self.hooks.emit("publisher.replaced", {**data, "by": successor.id[:8]})
            else:
                self.hooks.emit("stream.ended", {"stream": publisher.stream,
                                                 "reason": publisher.end_reason})

    # -- viewers (ViewerBook observer) ---------------------------------------

    def viewer_added(self, session: ViewerSession) -> None:
        self._joined[session.stream] += 1
        self._schedule(session.stream)

    def viewer_removed(self, session: ViewerSession) -> None:
        self._left[session.stream] += 1
        self._schedule(session.stream)

    def _schedule(self, stream: str) -> None:
        if stream in self._pending:
            return
        self._pending[stream] = asyncio.get_running_loop().call_later(
            self.policy.viewers_interval, self._flush, stream)

    def _flush(self, stream: str) -> None:
        self._pending.pop(stream, None)
        joined, left = self._joined.pop(stream, 0), self._left.pop(stream, 0)
        self.hooks.emit("viewers.changed", {"stream": stream, "joined": joined, "left": left,
                                            "viewers": self.viewer_count(stream)})

    def flush_all(self) -> None:
        """At shutdown: what was counted goes out now rather than never."""
        for stream, timer in list(self._pending.items()):
            timer.cancel()
            self._flush(stream)

    # -- nodes (NodeObserver) -------------------------------------------------

    def node_up(self, node: JanusNode) -> None:
        self.hooks.emit("node.up", {"node": node.name, "role": node.role,
                                    "version": node.version_string})

    def node_down(self, node: JanusNode) -> None:
        self.hooks.emit("node.down", {"node": node.name, "role": node.role})

