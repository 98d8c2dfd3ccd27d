"""What a handle's PeerConnection tells us, for publishers and viewers alike."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

from gateway.janus.client import JanusError, JanusUnreachable

log = logging.getLogger(__name__)


class Signal(Enum):
    CONNECTED = "connected"  # ICE + DTLS up (webrtcup)
    MEDIA = "media"  # receiving changed on one mid
    GONE = "gone"  # hangup, or the handle was detached


@dataclass(frozen=True)
class PeerSignal:
    kind: Signal
    mid: str | None = None
    receiving: bool | None = None
    reason: str = ""


def signal_adapter(on_signal: Callable[[PeerSignal], None]) -> Callable[[dict[str, Any]], None]:
    """Turn Janus core events on a handle into ``PeerSignal`` values."""

    def handle(event: dict[str, Any]) -> None:
        kind = event.get("janus")
        if kind == "webrtcup":
            on_signal(PeerSignal(Signal.CONNECTED))
        elif kind == "media":
            on_signal(PeerSignal(Signal.MEDIA, mid=str(event.get("mid", event.get("type"))),
                                 receiving=bool(event.get("receiving"))))
        elif kind in ("hangup", "detached"):
            on_signal(PeerSignal(Signal.GONE, reason=str(event.get("reason", kind))))

    return handle


async def quietly(awaitable: Any) -> None:
    """Best-effort cleanup: a failure here must not hide the original error."""
    if awaitable is None:
        return
    try:
        await asyncio.wait_for(awaitable, 5.0)
    except (JanusError, JanusUnreachable, asyncio.TimeoutError) as exc:
        log.debug("cleanup step failed: %r", exc)
