"""What a handle's PeerConnection tells the domain, for publishers and viewers alike.

Janus reports a handle's PeerConnection in core events (``webrtcup``,
``media``, ``hangup``, ``detached``).  The domain hears about them through
``PeerObserver``, an interface it implements, so that no Janus event name
leaves this package and no callback reaches into a private method.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from gateway.janus.client import JanusError, JanusHandle, JanusUnreachable
from gateway.janus.failures import janus_call
from gateway.janus.node import JanusNode

log = logging.getLogger(__name__)


class PeerObserver(Protocol):
    """Told what happens to one PeerConnection (a publisher's or a viewer's)."""

    def peer_connected(self) -> None:
        """ICE and DTLS are up."""

    def peer_media(self, mid: str, receiving: bool) -> None:
        """Janus started or stopped receiving media on ``mid``."""

    def peer_gone(self, reason: str) -> None:
        """The PeerConnection hung up, or its handle was detached."""


def events_to(observer: PeerObserver) -> Callable[[dict[str, Any]], None]:
    """Turn Janus core events on a handle into ``PeerObserver`` calls."""

    def handle(event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "webrtcup":
            observer.peer_connected()
        elif kind == "media":
            observer.peer_media(str(event.get("mid", event.get("type"))),
                                bool(event.get("receiving")))
        elif kind in ("hangup", "detached"):
            observer.peer_gone(str(event.get("reason", kind)))

    return handle


@dataclass
class JanusPeer:
    """A handle that holds a PeerConnection: what publishers and viewers share."""

    node: JanusNode
    handle: JanusHandle
    _closed: bool = False

    async def trickle(self, mid: str, candidates: list[str], completed: bool) -> None:
        """The client's trickled candidates (RFC 8840 sdpfrag, already read)."""
        with janus_call(self.node.name, client_sdp=True):
            await self.handle.trickle(mid, candidates, completed)


    def _leave(self) -> bool:
        """Mark the peer closed and give its load back to the node.  False if
        it was closed already, or its node is down (and every handle with it):
        then there is nothing left to tell Janus."""
        if self._closed:
            return False
        self._closed = True
        self.node.load = max(0, self.node.load - 1)
        return self.node.healthy


async def quietly(awaitable: Any) -> None:
    """Best-effort cleanup: a failure here must not hide the original error."""
    if awaitable is None:
        return
    try:
        await asyncio.wait_for(awaitable, 5.0)
    except (JanusError, JanusUnreachable, asyncio.TimeoutError) as exc:
        log.debug("cleanup step failed: %r", exc)
