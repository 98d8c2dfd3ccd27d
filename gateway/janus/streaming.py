"""Streaming plugin: mountpoints fed by RTP forwarders, and the viewers on them.

Mountpoints made over the API outlive the Janus session that made them, so
every ``Mountpoint`` must be destroyed by its owner.  Viewers are handles in
the node's gateway session; detaching one hangs up its PeerConnection.

The domain speaks in kinds, codecs and payload types; the mountpoint's own
mids, its default payload types and the ``configure`` fields of a layer
choice are Streaming plugin matters and stay here.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from gateway.janus.client import JanusPluginError
from gateway.janus.failures import janus_call
from gateway.janus.node import JanusNode, control_request
from gateway.janus.peer import JanusPeer, PeerObserver, events_to, quietly

log = logging.getLogger(__name__)

STREAMING = "janus.plugin.streaming"
MOUNTPOINT_EXISTS = 456
BASE_PT = {"audio": 111, "video": 96}  # a mountpoint's payload types unless told otherwise
MOUNTPOINT_MID = {"audio": "a", "video": "v"}
AUTOMATIC = {"substream": 2, "temporal": 2}  # Janus then sends the best layer it has


@dataclass(frozen=True)
class MediaSpec:
    """One medium a publisher sends, as a mountpoint must carry it."""

    kind: str  # "audio" | "video"
    codec: str  # Janus codec name: opus, vp8, vp9, h264, av1, h265
    fmtp: str | None = None
    simulcast: bool = False


@dataclass(frozen=True)
class RtpPorts:
    """Where RTP for one medium goes: a mountpoint's ports, which a forwarder targets."""

    port: int
    rtcp_port: int | None = None
    port_2: int | None = None
    port_3: int | None = None


def payload_types(kinds: Iterable[str], chosen: Mapping[str, int] | None = None) -> dict[str, int]:
    """The payload type a mountpoint sends per kind: the viewer's choice, else the default."""
    chosen = chosen or {}
    return {kind: chosen.get(kind, BASE_PT[kind]) for kind in kinds}


@dataclass
class Mountpoint:
    node: JanusNode
    id: int
    media: list[MediaSpec]
    host: str
    ports: dict[str, RtpPorts] = field(default_factory=dict)  # by kind
    _destroyed: bool = False

    @classmethod
    async def create(cls, node: JanusNode, media: list[MediaSpec], pts: Mapping[str, int], *,
                     label: str, threads: int = 0, buffer_keyframe: bool = False) -> Mountpoint:
        """A mountpoint carrying ``media`` under ``pts`` (kind -> payload type)."""
        with janus_call(node.name):
            for _ in range(5):
                mountpoint_id = secrets.randbits(52) or 1
                body: dict[str, Any] = {
                    "request": "create", "type": "rtp", "id": mountpoint_id, "permanent": False,
                    "description": f"{node.tag} {label}",
                    "is_private": True,
                    "media": [_media_body(m, pts[m.kind], buffer_keyframe) for m in media],
                }
                if threads:
                    body["threads"] = threads
                try:
                    reply = await control_request(node, STREAMING, body)
                except JanusPluginError as exc:
                    if exc.code == MOUNTPOINT_EXISTS:
                        continue
                    raise
                stream = reply.get("stream") or {}
                mountpoint = cls(node=node, id=mountpoint_id, media=list(media),
                                 host=str(stream.get("host") or "127.0.0.1"))
                kinds = {mid: kind for kind, mid in MOUNTPOINT_MID.items()}
                for port in stream.get("ports") or []:
                    kind = kinds.get(str(port.get("mid")))
                    if kind is None:
                        continue
                    mountpoint.ports[kind] = RtpPorts(
                        port=int(port["port"]),
                        # PLIs from viewers go back to the publisher through the video one
                        rtcp_port=port.get("rtcp_port") if kind == "video" else None,
                        port_2=port.get("port_2"), port_3=port.get("port_3"),
                    )
                return mountpoint
            raise JanusPluginError(STREAMING, MOUNTPOINT_EXISTS, "could not find a free mountpoint id")

    def forget(self) -> None:
        """The node lost it already (Janus restarted): nothing left to destroy."""
        self._destroyed = True

    async def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if not self.node.healthy:
            return  # Janus went away and took the mountpoint with it
        await quietly(control_request(self.node, STREAMING,
                                      {"request": "destroy", "id": self.id, "permanent": False}))


def _media_body(m: MediaSpec, pt: int, buffer_keyframe: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"type": m.kind, "mid": MOUNTPOINT_MID[m.kind], "port": 0, "pt": pt,
                            "codec": m.codec}
    if m.fmtp:
        body["fmtp"] = m.fmtp
    if m.kind == "video":
        body["rtcpport"] = 0  # PLIs from viewers go back through the forwarder's rtcp_port
        if buffer_keyframe:
            body["bufferkf"] = True  # a new viewer gets the last keyframe at once
        if m.simulcast:
            body.update({"simulcast": True, "port2": 0, "port3": 0})
    return body


def configure_fields(spatial: int | None, temporal: int | None) -> dict[str, int]:
    """A layer choice as Streaming ``configure`` fields; none chosen is automatic."""
    fields: dict[str, int] = {}
    if spatial is not None:
        fields["substream"] = spatial
    if temporal is not None:
        fields["temporal"] = temporal
    return fields or dict(AUTOMATIC)


@dataclass
class StreamingViewer(JanusPeer):
    """One viewer handle on a mountpoint."""

    mountpoint_id: int = 0

    @classmethod
    async def attach(cls, node: JanusNode, mountpoint_id: int,
                     observer: PeerObserver) -> StreamingViewer:
        with janus_call(node.name):
            session = node.require_session()
            handle = await session.attach(STREAMING, events_to(observer), opaque_id=node.tag)
        node.load += 1
        return cls(node=node, handle=handle, mountpoint_id=mountpoint_id)

    async def watch(self, *, offer: str | None = None, restart: bool = False,
                    timeout: float = 6.0) -> str:
        """``watch``; returns Janus's SDP: its offer (1.1.2), or its answer to ``offer`` (>= 1.1.4).

        Watching again with ``restart`` makes Janus offer anew with fresh ICE
        credentials: the Streaming plugin's way to renegotiate.
        """
        jsep = {"type": "offer", "sdp": offer} if offer is not None else None
        body: dict[str, Any] = {"request": "watch", "id": self.mountpoint_id}
        if restart:
            body["restart"] = True
        with janus_call(self.node.name, client_sdp=offer is not None):
            event = await self.handle.message(body, jsep, timeout=timeout)
            if event.jsep is None:
                raise JanusPluginError(STREAMING, 0, f"watch gave no SDP: {event.data}")
        return str(event.jsep.get("sdp", ""))

    async def start(self, answer: str, *, client_sdp: bool, timeout: float = 6.0) -> None:
        """``start`` with an answer; ``client_sdp`` when it carries what the viewer
        wrote (its own answer, or a bridged one with its transport)."""
        with janus_call(self.node.name, client_sdp=client_sdp):
            await self.handle.message({"request": "start"}, {"type": "answer", "sdp": answer},
                                      timeout=timeout)

    async def select_layer(self, spatial: int | None, temporal: int | None) -> None:
        """Per-viewer simulcast layer (0 is the lowest); both None returns to automatic."""
        with janus_call(self.node.name):
            await self.handle.message({"request": "configure",
                                       **configure_fields(spatial, temporal)})

    async def close(self) -> None:
        """Detaching hangs up the viewer's PeerConnection.  Safe to call twice."""
        if self._leave():
            await quietly(self.handle.detach())
