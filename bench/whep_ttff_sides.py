"""whep_ttff's sides: what the viewers of a batch join, and the set-up each needs first.

The gateway is one side; the other (``--against``) is ``native`` (Janus's own
server-offer flow on the bench's mountpoint) or a WHEP peer such as
janus-whep-server, whose endpoint serves a mountpoint the bench makes for it
before any timing, as the peer's README asks of whoever runs it.

Equal set-up: the peer's mountpoint is made like the gateway's own variant
(already up after the gateway's warm-up batch; the gateway keeps it while
the publisher is live), with the same payload types and helper threads read
back from Janus's ``info``, the same key-frame buffering, and fed the same
way, by an ``rtp_forward`` with ``rtcp_port`` from the same publisher.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field
from typing import Any

from harness import STREAMING, VIDEOROOM, BenchError, Json
from janus_direct import JanusAdmin
from whep_ttff_scenario import NATIVE, STREAM, now

PEERS = ("janus-whep-server",)


@dataclass
class NativeFeed:
    """The bench's own mountpoint, fed by an rtp_forward from the gateway's room."""

    admin: JanusAdmin
    bufferkf: bool = False
    # The mountpoint's node when it is not the room's (bench/webinar.py's egress
    # nodes), and the kinds it carries.
    egress: JanusAdmin | None = None
    kinds: tuple[str, ...] = ("audio", "video")
    # The payload types it sends (Janus rewrites to them), and Streaming helper threads.
    pts: dict[str, int] = field(default_factory=lambda: {"audio": 111, "video": 96})
    threads: int = 0
    room: int = 0
    publisher_id: int = 0
    mountpoint: int = 0
    forwarders: list[int] = field(default_factory=list)
    setup_ms: Json = field(default_factory=dict)

    def create(self, mids: dict[str, str]) -> None:
        t = now()
        rooms = [r for r in self.admin.plugin(VIDEOROOM, {"request": "list"}).get("list", [])
                 if r.get("num_participants")]  # not the gateway's idle pooled rooms
        if len(rooms) != 1:
            raise BenchError(f"expected the gateway's one room with a publisher, found {rooms}")
        self.room = int(rooms[0]["room"])
        participants = self.admin.plugin(
            VIDEOROOM, {"request": "listparticipants", "room": self.room}).get("participants", [])
        publishers = [p for p in participants if p.get("publisher")]
        if len(publishers) != 1:
            raise BenchError(f"expected one publisher in room {self.room}: {participants}")
        self.publisher_id = int(publishers[0]["id"])
        self.setup_ms["find_publisher"] = (now() - t) * 1000
        t = now()
        for _ in range(5):
            mountpoint = secrets.randbits(52) or 1
            try:
                media = {
                    "audio": {"type": "audio", "mid": "a", "port": 0, "pt": self.pts["audio"],
                              "codec": "opus"},
                    "video": {"type": "video", "mid": "v", "port": 0, "rtcpport": 0,
                              "pt": self.pts["video"], "codec": "vp8",
                              **({"bufferkf": True} if self.bufferkf else {})}}
                reply = self.streaming.plugin(STREAMING, {
                    "request": "create", "type": "rtp", "id": mountpoint, "permanent": False,
                    "is_private": True, "description": "bench native",
                    "media": [media[k] for k in self.kinds],
                    **({"threads": self.threads} if self.threads else {})})
                break
            except BenchError as exc:
                if "456" not in str(exc):
                    raise
        else:
            raise BenchError("no free mountpoint id")
        self.mountpoint = mountpoint
        ports = {p.get("mid"): p for p in (reply.get("stream") or {}).get("ports", [])}
        self.setup_ms["mountpoint_create"] = (now() - t) * 1000
        t = now()
        streams = []
        if "audio" in self.kinds:
            streams.append({"mid": mids["audio"], "port": int(ports["a"]["port"])})
        if "video" in self.kinds:
            streams.append({"mid": mids["video"], "port": int(ports["v"]["port"]),
                            "rtcp_port": int(ports["v"]["rtcp_port"])})
        reply = self.admin.plugin(VIDEOROOM, {
            "request": "rtp_forward", "room": self.room, "publisher_id": self.publisher_id,
            "host": "127.0.0.1", "streams": streams})
        self.forwarders = [int(f["stream_id"]) for f in reply.get("forwarders", [])]
        self.setup_ms["rtp_forward"] = (now() - t) * 1000
        if len(self.forwarders) != len(self.kinds):
            raise BenchError(f"rtp_forward made {reply.get('forwarders')}")

    @property
    def streaming(self) -> JanusAdmin:
        return self.egress or self.admin

    def age_ms(self) -> Json:
        info = self.streaming.plugin(STREAMING, {"request": "info", "id": self.mountpoint})
        return {m.get("mid"): m.get("age_ms") for m in (info.get("info") or {}).get("media", [])}

    def destroy(self) -> list[str]:
        errors = []
        for stream_id in self.forwarders:
            try:
                self.admin.plugin(VIDEOROOM, {
                    "request": "stop_rtp_forward", "room": self.room,
                    "publisher_id": self.publisher_id, "stream_id": stream_id})
            except Exception as exc:
                errors.append(f"stop_rtp_forward {stream_id}: {exc!r}")
        self.forwarders = []
        if self.mountpoint:
            try:
                self.streaming.plugin(STREAMING, {"request": "destroy", "id": self.mountpoint,
                                              "permanent": False})
            except Exception as exc:
                errors.append(f"destroy mountpoint: {exc!r}")
            self.mountpoint = 0
        return errors


class PeerGone(BenchError):
    """The peer's process died: a finding for the report, not a crash of the bench."""


@dataclass
class Side:
    """One side of the comparison: a WHEP URL, or a mountpoint for Janus's own flow."""

    name: str
    whep_url: str = ""
    janus_url: str = ""
    mountpoint: int = 0
    peer: Any = None  # its process (peer_janus_whep.JanusWhepPeer), looked at before a batch

    def check_alive(self) -> None:
        gone = self.peer.died() if self.peer is not None else None
        if gone:
            raise PeerGone(gone)


def gateway_bufferkf(args: argparse.Namespace) -> bool:
    """Whether the gateway's mountpoints keep the last key frame (its setting, as run)."""
    from gateway.config import Settings

    value: bool = bool(Settings.model_fields["mountpoint_buffer_keyframe"].default)
    for item in args.gateway_env or []:
        key, _, text = item.partition("=")
        if key == "WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME":
            value = text.strip().lower() in ("1", "true", "yes", "on")
    return value or bool(args.bufferkf)


def gateway_variant(admin: JanusAdmin) -> Json:
    """The gateway's one mountpoint (its variant for the viewers' PTs), as Janus shows it."""
    mounts = admin.plugin(STREAMING, {"request": "list"}).get("list", [])
    if len(mounts) != 1:
        raise BenchError(f"expected the gateway's one variant, found mountpoints {mounts}")
    info = admin.plugin(STREAMING, {"request": "info", "id": mounts[0]["id"]}).get("info") or {}
    return {"id": info.get("id"), "threads": int(info.get("threads") or 0),
            "pts": {m["type"]: int(m["pt"]) for m in info.get("media", [])},
            "codecs": {m["type"]: m.get("codec") for m in info.get("media", [])},
            "fmtp": {m["type"]: m["fmtp"] for m in info.get("media", []) if m.get("fmtp")}}


def other_side(args: argparse.Namespace, feed: NativeFeed, mids: dict[str, str], janus_url: str,
               peer: Any, setup: Json) -> Side:
    """Make the other side's mountpoint (and a peer's endpoint on it); blocking calls.

    ``feed`` is not yet created; ``setup`` receives what each side was given, for the report.
    """
    if peer is None:
        feed.create(mids)
        return Side(NATIVE, janus_url=janus_url, mountpoint=feed.mountpoint)
    variant = gateway_variant(feed.admin)
    if variant["codecs"] != {"audio": "opus", "video": "vp8"} or variant["fmtp"]:
        raise BenchError(f"the bench copies an Opus + VP8 variant without fmtp, not {variant}")
    feed.pts, feed.threads = dict(variant["pts"]), variant["threads"]
    feed.bufferkf = gateway_bufferkf(args)
    feed.create(mids)
    peer.create_endpoint(STREAM, feed.mountpoint)
    mountpoint = {"pts": feed.pts, "threads": feed.threads, "bufferkf": feed.bufferkf}
    setup["gateway"] = {"mountpoint": {**{k: variant[k] for k in ("pts", "threads")},
                                       "bufferkf": feed.bufferkf},
                        "made": "by its first viewer (unmeasured: warm-up or --warm)"}
    setup[args.against] = {"mountpoint": mountpoint, "endpoint": STREAM,
                           "made": "by the bench before timing (mountpoint, rtp_forward, "
                                   "createEndpoint)", "setup_ms": dict(feed.setup_ms)}
    return Side(args.against, whep_url=peer.whep_url(STREAM), peer=peer)
