"""WHEP viewers and the mountpoints that serve them: the model.

``Egress`` (egress.py) owns the behaviour; this module only says what a
viewer session, a mountpoint variant and a stream's egress on one node are.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from gateway.sdp import bridge as sdp_bridge
from gateway.janus.node import JanusNode
from gateway.janus.streaming import MediaSpec, Mountpoint, StreamingViewer
from gateway.janus.videoroom import RoomPublisher
from gateway.core.streams import new_etag, new_resource_id

# (kind, payload type) per kind: which PTs a mountpoint variant rewrites to.
VariantKey = tuple[tuple[str, int], ...]


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
    ended: bool = False
    timer: asyncio.TimerHandle | None = None
    simulcast_rids: list[str] = field(default_factory=list)
    remote_ufrag: str | None = None  # the viewer's, to drop candidates of other ICE sessions
    video_mindex: str = "1"  # the viewer's video m-line index, which keys ``layers`` events
    viewer_offer: str | None = None  # bridged mode: rewritten on an ICE restart
