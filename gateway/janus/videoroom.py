"""A WHIP publisher as Janus holds it: a VideoRoom room of its own, one handle.

One room per publisher keeps streams apart (a room's codec list, bitrate and
forwarders belong to that stream alone) and makes teardown a single
``destroy``.  Everything here speaks Janus JSON; the domain sees only
``RoomPublisher`` methods and ``PeerSignal`` values (``peer.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from gateway.janus.client import JanusError, JanusHandle, JanusPluginError, JanusUnreachable
from gateway.janus.node import JanusNode
from gateway.janus.peer import PeerSignal, quietly, signal_adapter

log = logging.getLogger(__name__)

VIDEOROOM = "janus.plugin.videoroom"
ROOM_EXISTS = 427


@dataclass(frozen=True)
class RoomOptions:
    video_codecs: str
    audio_codecs: str
    bitrate: int = 0
    fir_freq: int = 0
    h264_profile: str | None = None  # the publisher's H.264 profile-level-id to take, if offered


@dataclass(frozen=True)
class ForwardTarget:
    mid: str  # the publisher's mid
    port: int
    rtcp_port: int | None = None
    port_2: int | None = None
    port_3: int | None = None


@dataclass
class PublishedStream:
    mid: str
    kind: str
    codec: str | None
    simulcast: bool = False


@dataclass
class RoomPublisher:
    node: JanusNode
    room_id: int
    handle: JanusHandle
    publisher_id: int = 0
    answer: str = ""
    streams: list[PublishedStream] = field(default_factory=list)
    _closed: bool = False
    # Janus 1.1.2 aborts (g_mutex_clear on a locked mutex) when a stop_rtp_forward
    # runs while the publisher is being hung up or its room destroyed: the two never overlap.
    _forwarding: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    @classmethod
    async def open(
        cls,
        node: JanusNode,
        *,
        offer: str,
        display: str,
        options: RoomOptions,
        on_signal: Callable[[PeerSignal], None],
        timeout: float = 6.0,
    ) -> RoomPublisher:
        """Create the room, join as publisher, return with Janus's answer.

        Anything that fails part-way is undone before the error propagates.
        """
        session = node.require_session()
        control = node.control(VIDEOROOM)
        room_id = 0
        handle: JanusHandle | None = None
        try:
            room_id = await _create_room(control, node.plugin_admin_key, options,
                                         description=f"{node.tag} {display}")
            handle = await session.attach(VIDEOROOM, signal_adapter(on_signal), opaque_id=node.tag)
            event = await handle.message(
                {"request": "joinandconfigure", "ptype": "publisher", "room": room_id,
                 "display": display, "audio": True, "video": True},
                {"type": "offer", "sdp": offer, "trickle": True},
                timeout=timeout,
            )
            if event.jsep is None or event.data.get("videoroom") != "joined":
                raise JanusPluginError(VIDEOROOM, 0, f"unexpected reply {event.data}")
            publisher = cls(node=node, room_id=room_id, handle=handle)
            publisher.publisher_id = int(event.data.get("id", 0))
            publisher.answer = str(event.jsep.get("sdp", ""))
            publisher.streams = _streams(event.data)
            node.load += 1
            return publisher
        except BaseException:
            await quietly(handle.detach() if handle else None)
            if room_id:
                await quietly(_destroy_room(control, node.plugin_admin_key, room_id))
            raise

    async def trickle(self, mid: str, candidates: list[str], completed: bool) -> None:
        """Janus bundles, and reads candidates for the first m-line only."""
        await self.handle.trickle(
            [{"sdpMid": mid, "sdpMLineIndex": 0, "candidate": f"candidate:{c}"} for c in candidates]
        )
        if completed:
            await self.handle.trickle_completed()

    async def renegotiate(self, offer: str, timeout: float = 6.0) -> str:
        """Send a new offer (an ICE restart) and return Janus's answer."""
        event = await self.handle.message(
            {"request": "configure"},
            {"type": "offer", "sdp": offer, "trickle": True},
            timeout=timeout,
        )
        if event.jsep is None:
            raise JanusPluginError(VIDEOROOM, 0, f"no answer to the new offer: {event.data}")
        self.answer = str(event.jsep.get("sdp", ""))
        return self.answer

    async def forward(self, host: str, targets: list[ForwardTarget]) -> list[int]:
        """``rtp_forward`` our media to a mountpoint; returns the forwarder ids.

        ``rtcp_port`` on video lets the mountpoint's PLIs reach the publisher,
        which is what gives a new viewer its first keyframe quickly.
        """
        streams = []
        for target in targets:
            entry: dict[str, Any] = {"mid": target.mid, "port": target.port}
            if target.rtcp_port:
                entry["rtcp_port"] = target.rtcp_port
            if target.port_2:
                entry["port_2"] = target.port_2
            if target.port_3:
                entry["port_3"] = target.port_3
            streams.append(entry)
        body: dict[str, Any] = {"request": "rtp_forward", "room": self.room_id,
                                "publisher_id": self.publisher_id, "host": host, "streams": streams}
        if self.node.plugin_admin_key:
            body["admin_key"] = self.node.plugin_admin_key
        # Forwarder changes must never overlap the publisher's teardown:
        # Janus 1.1.2 aborts on that race (see stop_forward and close).
        async with self._forwarding:
            if self._closed:
                raise JanusUnreachable(f"publisher in room {self.room_id} is closing")
            reply = await self.node.control(VIDEOROOM).request(body)
        return [int(f["stream_id"]) for f in reply.get("forwarders") or []]

    async def stop_forward(self, stream_ids: list[int]) -> None:
        async with self._forwarding:
            for stream_id in stream_ids:
                if self._closed or not self.node.healthy:
                    return  # forwarders die with their publisher
                body: dict[str, Any] = {"request": "stop_rtp_forward", "room": self.room_id,
                                        "publisher_id": self.publisher_id, "stream_id": stream_id}
                if self.node.plugin_admin_key:
                    body["admin_key"] = self.node.plugin_admin_key
                await quietly(self.node.control(VIDEOROOM).request(body))

    async def substream_bitrates(self) -> dict[str, list[int]] | None:
        """bit/s per simulcast substream (lowest first) by publisher mid, from
        the admin API; None when the node has no admin API configured."""
        admin, session = self.node.admin, self.node.session
        if admin is None or session is None or self._closed:
            return None
        info = await admin.handle_info(session.id, self.handle.id)
        out: dict[str, list[int]] = {}
        for mid, medium in ((info.get("webrtc") or {}).get("media") or {}).items():
            stats = (medium.get("stats") or {}).get("in") or {}
            if "video-simulcast-1" not in stats:
                continue
            layers = [stats, stats.get("video-simulcast-1") or {}, stats.get("video-simulcast-2") or {}]
            out[str(mid)] = [int(layer.get("bytes_lastsec", 0)) * 8 for layer in layers]
        return out

    async def close(self) -> None:
        """Leave, detach, destroy the room.  Safe to call twice or on a dead node."""
        if self._closed:
            return
        self._closed = True
        self.node.load = max(0, self.node.load - 1)
        if not self.node.healthy:
            return  # the node's session died, and every handle with it
        async with self._forwarding:  # wait out a stop_rtp_forward in flight
            pass
        await quietly(self.handle.detach())  # detaching hangs up the PeerConnection
        try:
            await _destroy_room(self.node.control(VIDEOROOM), self.node.plugin_admin_key, self.room_id)
        except (JanusError, JanusUnreachable) as exc:
            log.warning("room %s on %s not destroyed: %s", self.room_id, self.node.name, exc)


async def _create_room(control: JanusHandle, admin_key: str | None, options: RoomOptions,
                       *, description: str) -> int:
    for _ in range(5):
        room_id = secrets.randbits(52) or 1  # JSON-safe integer, and no zero
        body: dict[str, Any] = {
            "request": "create", "room": room_id, "permanent": False, "publishers": 1,
            "description": description,
            "is_private": True, "videocodec": options.video_codecs,
            "audiocodec": options.audio_codecs, "bitrate": options.bitrate,
            "fir_freq": options.fir_freq, "notify_joining": False,
        }
        if options.h264_profile:
            body["h264_profile"] = options.h264_profile
        if admin_key:
            body["admin_key"] = admin_key
        try:
            await control.request(body)
            return room_id
        except JanusPluginError as exc:
            if exc.code != ROOM_EXISTS:
                raise
    raise JanusPluginError(VIDEOROOM, ROOM_EXISTS, "could not find a free room id")


async def _destroy_room(control: JanusHandle, admin_key: str | None, room_id: int) -> None:
    body: dict[str, Any] = {"request": "destroy", "room": room_id, "permanent": False}
    if admin_key:
        body["admin_key"] = admin_key
    await control.request(body)


def _streams(data: dict[str, Any]) -> list[PublishedStream]:
    return [
        PublishedStream(mid=str(s.get("mid")), kind=str(s.get("type")), codec=s.get("codec"),
                        simulcast=bool(s.get("simulcast")))
        for s in data.get("streams") or []
        if not s.get("disabled")
    ]
