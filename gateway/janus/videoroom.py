"""A WHIP publisher as Janus holds it: a VideoRoom room of its own, one handle.

One room per publisher keeps streams apart (a room's codec list, bitrate and
forwarders belong to that stream alone) and makes teardown a single
``destroy``.  Everything here speaks Janus JSON; the domain sees only
``RoomPublisher`` methods, typed results and ``PeerObserver`` calls
(``peer.py``), and failures already translated (``failures.py``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.janus.client import JanusError, JanusHandle, JanusPluginError, JanusUnreachable
from gateway.janus.failures import janus_call
from gateway.janus.node import JanusNode, control_request
from gateway.janus.peer import JanusPeer, PeerObserver, events_to, quietly
from gateway.janus.streaming import Mountpoint
from gateway.sdp import model as sdp

if TYPE_CHECKING:
    from gateway.janus.roompool import PublisherPool

log = logging.getLogger(__name__)
_T = TypeVar("_T")

VIDEOROOM = "janus.plugin.videoroom"
ROOM_EXISTS = 427


@dataclass(frozen=True)
class RoomOptions:
    video_codecs: str
    audio_codecs: str
    bitrate: int = 0
    fir_freq: int = 0
    h264_profile: str | None = None  # the publisher's H.264 profile-level-id to take, if offered
    record_dir: str | None = None  # record the publisher's media (.mjr files) into this folder


@dataclass
class PublishedStream:
    mid: str
    kind: str
    codec: str | None
    simulcast: bool = False


@dataclass
class RoomPublisher(JanusPeer):
    room_id: int = 0
    publisher_id: int = 0
    answer: str = ""
    streams: list[PublishedStream] = field(default_factory=list)
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
        observer: PeerObserver,
        timeout: float = 6.0,
        pool: PublisherPool | None = None,
    ) -> RoomPublisher:
        """Get a room and a handle, join as publisher with the client's offer,
        return with Janus's answer.

        The room and the handle come from ``pool`` when it has them ready;
        whatever it lacks is made here, room and handle at once (neither
        depends on the other).  Anything that fails part-way is undone before
        the error propagates.
        """
        with janus_call(node.name, client_sdp=True):
            return await cls._open(node, offer=offer, display=display, options=options,
                                   observer=observer, timeout=timeout, pool=pool)

    @classmethod
    async def _open(cls, node: JanusNode, *, offer: str, display: str, options: RoomOptions,
                    observer: PeerObserver, timeout: float,
                    pool: PublisherPool | None) -> RoomPublisher:
        session = node.require_session()
        on_event = events_to(observer)
        description = f"{node.tag} {display}"
        room_id = pool.take_room(options) if pool is not None else None
        handle = pool.take_handle(on_event) if pool is not None else None
        pooled_room = room_id
        try:
            if room_id is None or handle is None:
                room_id, handle = await _room_and_handle(
                    node, options, description, room_id, handle,
                    lambda: session.attach(VIDEOROOM, on_event, opaque_id=node.tag))
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
            pooled_room = None
            await quietly(handle.detach() if handle else None)
            if room_id:
                await quietly(destroy_room(node, room_id))
            raise
        finally:
            if pool is not None:  # once the answer is here: the pool's work stays off this request
                if pooled_room is not None:
                    # named after its stream, as a fresh room is (operators, audits)
                    pool.rename(pooled_room, description)
                pool.refill()

    async def renegotiate(self, offer: str, timeout: float = 6.0) -> sdp.SessionDescription:
        """Send the client's new offer (an ICE restart); returns Janus's answer, read."""
        with janus_call(self.node.name, client_sdp=True):
            event = await self.handle.message(
                {"request": "configure"},
                {"type": "offer", "sdp": offer, "trickle": True},
                timeout=timeout,
            )
            if event.jsep is None:
                raise JanusPluginError(VIDEOROOM, 0, f"no answer to the new offer: {event.data}")
            answer = str(event.jsep.get("sdp", ""))
            parsed = sdp.parse(answer)
            ufrag, pwd = parsed.ice_credentials()
            if not ufrag or not pwd or not parsed.media:
                raise sdp.SdpError("the answer has no ICE credentials")
        self.answer = answer
        return parsed

    async def forward_to(self, mountpoint: Mountpoint) -> list[int]:
        """``rtp_forward`` our media to a mountpoint; returns the forwarder ids.

        ``rtcp_port`` on video lets the mountpoint's PLIs reach the publisher,
        which is what gives a new viewer its first keyframe quickly.
        """
        by_kind = {s.kind: s.mid for s in self.streams}
        streams = []
        for kind, target in mountpoint.ports.items():
            if kind not in by_kind:
                continue
            entry: dict[str, Any] = {"mid": by_kind[kind], "port": target.port}
            if target.rtcp_port:
                entry["rtcp_port"] = target.rtcp_port
            if target.port_2:
                entry["port_2"] = target.port_2
            if target.port_3:
                entry["port_3"] = target.port_3
            streams.append(entry)
        # Over loopback when the mountpoint is on the publisher's own node.
        host = mountpoint.node.media_host if mountpoint.node is not self.node else "127.0.0.1"
        body: dict[str, Any] = {"request": "rtp_forward", "room": self.room_id,
                                "publisher_id": self.publisher_id, "host": host, "streams": streams}
        # Forwarder changes must never overlap the publisher's teardown:
        # Janus 1.1.2 aborts on that race (see stop_forward and close).
        with janus_call(self.node.name):
            async with self._forwarding:
                if self._closed:
                    raise JanusUnreachable(f"publisher in room {self.room_id} is closing")
                reply = await control_request(self.node, VIDEOROOM, body)
        return [int(f["stream_id"]) for f in reply.get("forwarders") or []]

    async def stop_forward(self, stream_ids: list[int]) -> None:
        async with self._forwarding:
            for stream_id in stream_ids:
                if self._closed or not self.node.healthy:
                    return  # forwarders die with their publisher
                await quietly(control_request(self.node, VIDEOROOM, {
                    "request": "stop_rtp_forward", "room": self.room_id,
                    "publisher_id": self.publisher_id, "stream_id": stream_id}))

    async def substream_bitrates(self) -> dict[str, list[int]] | None:
        """bit/s per simulcast substream (lowest first) by publisher mid, from
        the admin API; None when the node has no admin API configured."""
        admin, session = self.node.admin, self.handle.session  # maybe one taken over
        if admin is None or not session.alive or self._closed:
            return None
        with janus_call(self.node.name):
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
        if not self._leave():
            return  # closed already, or the node's session died with every handle
        async with self._forwarding:  # wait out a stop_rtp_forward in flight
            pass
        # The room goes first, while the publisher's handle is still whole:
        # Janus 1.1.2 crashed (SIGSEGV in janus_plugin_session_is_alive, from
        # close_pc in the room's destroy) when the destroy came right after the
        # detach, whose handle teardown was still running (issue 11).
        try:
            await destroy_room(self.node, self.room_id)
        except (JanusError, JanusUnreachable) as exc:
            log.warning("room %s on %s not destroyed: %s", self.room_id, self.node.name, exc)
        await quietly(self.handle.detach())  # detaching hangs up the PeerConnection


async def _room_and_handle(
    node: JanusNode, options: RoomOptions, description: str, room_id: int | None,
    handle: JanusHandle | None, attach: Callable[[], Awaitable[JanusHandle]],
) -> tuple[int, JanusHandle]:
    """Make what the pool did not give, concurrently; on a failure, undo what
    was made here before raising (the caller undoes what the pool gave)."""
    made = await asyncio.gather(
        create_room(node, options, description) if room_id is None else _given(room_id),
        attach() if handle is None else _given(handle),
        return_exceptions=True)
    failed = [r for r in made if isinstance(r, BaseException)]
    if not failed:
        return made[0], made[1]  # type: ignore[return-value]
    if handle is None and not isinstance(made[1], BaseException):
        await quietly(made[1].detach())
    if room_id is None and not isinstance(made[0], BaseException):
        await quietly(destroy_room(node, made[0]))
    raise failed[0]


async def _given(value: _T) -> _T:
    return value


async def create_room(node: JanusNode, options: RoomOptions, description: str,
                      room_id: int | None = None) -> int:
    """A room for one publisher; ``room_id`` when given (one attempt), else a
    random free one."""
    for _ in range(1 if room_id else 5):
        room_id = room_id or secrets.randbits(52) or 1  # JSON-safe integer, and no zero
        body: dict[str, Any] = {
            "request": "create", "room": room_id, "permanent": False, "publishers": 1,
            "description": description,
            "is_private": True, "videocodec": options.video_codecs,
            "audiocodec": options.audio_codecs, "bitrate": options.bitrate,
            "fir_freq": options.fir_freq, "notify_joining": False,
        }
        if options.h264_profile:
            body["h264_profile"] = options.h264_profile
        if options.record_dir:  # Janus 1.1.2: a recorded room records each publisher's media
            body["record"], body["rec_dir"] = True, options.record_dir
        try:
            await control_request(node, VIDEOROOM, body)
            return room_id
        except JanusPluginError as exc:
            if exc.code != ROOM_EXISTS:
                raise
            room_id = None
    raise JanusPluginError(VIDEOROOM, ROOM_EXISTS, "could not find a free room id")


async def rename_room(node: JanusNode, room_id: int, description: str) -> None:
    await control_request(node, VIDEOROOM, {"request": "edit", "room": room_id,
                                            "new_description": description})


async def destroy_room(node: JanusNode, room_id: int) -> None:
    await control_request(node, VIDEOROOM, {"request": "destroy", "room": room_id,
                                            "permanent": False})


def _streams(data: dict[str, Any]) -> list[PublishedStream]:
    return [
        PublishedStream(mid=str(s.get("mid")), kind=str(s.get("type")), codec=s.get("codec"),
                        simulcast=bool(s.get("simulcast")))
        for s in data.get("streams") or []
        if not s.get("disabled")
    ]
