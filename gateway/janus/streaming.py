"""Streaming plugin: mountpoints fed by RTP forwarders, and the viewers on them.

Mountpoints made over the API outlive the Janus session that made them, so
every ``Mountpoint`` must be destroyed by its owner.  Viewers are handles in
the node's gateway session; detaching one hangs up its PeerConnection.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.janus.client import JanusHandle, JanusPluginError
from gateway.janus.node import JanusNode
from gateway.janus.peer import PeerSignal, quietly, signal_adapter

log = logging.getLogger(__name__)

STREAMING = "janus.plugin.streaming"
MOUNTPOINT_EXISTS = 456


@dataclass(frozen=True)
class MediaSpec:
    """One medium of a mountpoint: what codec arrives and under which PT it leaves."""

    kind: str  # "audio" | "video"
    mid: str  # the mountpoint's own mid ("a", "v")
    codec: str  # Janus codec name: opus, vp8, vp9, h264, av1, h265
    pt: int
    fmtp: str | None = None
    simulcast: bool = False


@dataclass(frozen=True)
class MountpointPorts:
    port: int
    rtcp_port: int | None = None
    port_2: int | None = None
    port_3: int | None = None


@dataclass
class Mountpoint:
    node: JanusNode
    id: int
    media: list[MediaSpec]
    host: str
    ports: dict[str, MountpointPorts] = field(default_factory=dict)  # by mid
    _destroyed: bool = False

    @classmethod
    async def create(cls, node: JanusNode, media: list[MediaSpec], *, label: str,
                     threads: int = 0, buffer_keyframe: bool = False) -> Mountpoint:
        control = node.control(STREAMING)
        for _ in range(5):
            mountpoint_id = secrets.randbits(52) or 1
            body: dict[str, Any] = {
                "request": "create", "type": "rtp", "id": mountpoint_id, "permanent": False,
                "description": f"{node.tag} {label}",
                "is_private": True,
                "media": [_media_body(m, buffer_keyframe) for m in media],
            }
            if threads:
                body["threads"] = threads
            if node.plugin_admin_key:
                body["admin_key"] = node.plugin_admin_key
            try:
                reply = await control.request(body)
            except JanusPluginError as exc:
                if exc.code == MOUNTPOINT_EXISTS:
                    continue
                raise
            stream = reply.get("stream") or {}
            mountpoint = cls(node=node, id=mountpoint_id, media=list(media),
                             host=str(stream.get("host") or "127.0.0.1"))
            for port in stream.get("ports") or []:
                mountpoint.ports[str(port.get("mid"))] = MountpointPorts(
                    port=int(port["port"]), rtcp_port=port.get("rtcp_port"),
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
        body: dict[str, Any] = {"request": "destroy", "id": self.id, "permanent": False}
        if self.node.plugin_admin_key:
            body["admin_key"] = self.node.plugin_admin_key
        await quietly(self.node.control(STREAMING).request(body))


def _media_body(m: MediaSpec, buffer_keyframe: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"type": m.kind, "mid": m.mid, "port": 0, "pt": m.pt, "codec": m.codec}
    if m.fmtp:
        body["fmtp"] = m.fmtp
    if m.kind == "video":
        body["rtcpport"] = 0  # PLIs from viewers go back through the forwarder's rtcp_port
        if buffer_keyframe:
            body["bufferkf"] = True  # a new viewer gets the last keyframe at once
        if m.simulcast:
            body.update({"simulcast": True, "port2": 0, "port3": 0})
    return body


@dataclass
class StreamingViewer:
    """One viewer handle on a mountpoint."""

    node: JanusNode
    handle: JanusHandle
    mountpoint_id: int
    _closed: bool = False

    @classmethod
    async def attach(cls, node: JanusNode, mountpoint_id: int,
                     on_signal: Callable[[PeerSignal], None]) -> StreamingViewer:
        session = node.require_session()
        handle = await session.attach(STREAMING, signal_adapter(on_signal), opaque_id=node.tag)
        node.load += 1
        return cls(node=node, handle=handle, mountpoint_id=mountpoint_id)

    async def watch(self, *, offer: str | None = None, restart: bool = False,
                    timeout: float = 6.0) -> dict[str, Any]:
        """``watch``; returns Janus's jsep: its offer (1.1.2), or its answer to ``offer`` (≥ 1.1.4).

        Watching again with ``restart`` makes Janus offer anew with fresh ICE
        credentials: the Streaming plugin's way to renegotiate.
        """
        jsep = {"type": "offer", "sdp": offer} if offer is not None else None
        body: dict[str, Any] = {"request": "watch", "id": self.mountpoint_id}
        if restart:
            body["restart"] = True
        event = await self.handle.message(body, jsep, timeout=timeout)
        if event.jsep is None:
            raise JanusPluginError(STREAMING, 0, f"watch gave no SDP: {event.data}")
        return event.jsep

    async def start(self, answer: str, timeout: float = 6.0) -> None:
        await self.handle.message({"request": "start"}, {"type": "answer", "sdp": answer},
                                  timeout=timeout)

    async def trickle(self, mid: str, candidates: list[str], completed: bool) -> None:
        await self.handle.trickle(
            [{"sdpMid": mid, "sdpMLineIndex": 0, "candidate": f"candidate:{c}"} for c in candidates]
        )
        if completed:
            await self.handle.trickle_completed()

    async def configure(self, **fields: Any) -> None:
        """Per-viewer choices: ``substream``, ``temporal``, ``fallback``…"""
        await self.handle.message({"request": "configure", **fields})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.node.load = max(0, self.node.load - 1)
        if self.node.healthy:
            await quietly(self.handle.detach())
