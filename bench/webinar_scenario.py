"""webinar's scenario: the publisher's media, and what the viewers do in their processes.

The publisher (in the main process) sends one of two profiles.  *light* is
live-encoded 320x180 VP8 at 10 fps, one packet per frame, with the
monotonic time in ms drawn into every frame as a barcode, so that a few
decoding viewers can read it back (glass-to-glass latency).  *webinar* is
1280x720 at 30 fps of noise with Opus: noise is the worst case for bitrate,
and encoding it live would cost the 2-core machine a core that the viewers
need, so it is encoded once before the run and replayed (aiortc packs
``av.Packet`` without encoding); it carries no barcode.

A worker process (``worker_main``) gets its share of a ramp: join times,
and whether each viewer decodes.  A counting viewer is an aiortc
PeerConnection whose receiver only counts RTP packets and bytes (DTLS and
SRTP still run; no jitter buffer, no decoder): that is what lets one machine
hold 1000 of them.  Side ``gateway`` POSTs a recvonly offer to WHEP; side
``direct`` does Janus's server-offer flow (``janus_direct.NativeJanus``) on
the bench's own mountpoint of each egress node, round robin.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import STREAMING, BenchError, Json
from janus_direct import NativeJanus
from worker_loop import serve

STREAM = "webinar"
PROFILES: dict[str, Json] = {
    "light": {"width": 320, "height": 180, "fps": 10, "kinds": ("video",), "live": True},
    "webinar": {"width": 1280, "height": 720, "fps": 30, "kinds": ("audio", "video"),
                "live": False, "bitrate": 2_500_000},
    # About 120 video packets/s of ~1 KB (bench/egress_cost.py's second rate):
    # noise, replayed like webinar's, video only so packets/s is one number.
    "medium": {"width": 640, "height": 360, "fps": 30, "kinds": ("video",), "live": False,
               "bitrate": 1_000_000},
}


def now() -> float:
    """CLOCK_MONOTONIC: one clock for the publisher and every viewer process."""
    return time.monotonic()


# --------------------------------------------------------------------------
# the timestamp barcode (glass-to-glass)

STAMP_BITS = 32  # 24 bits of ms (wraps every 4.6 h) + 8 bits of check
STAMP_MOD = 1 << 24


def stamp_bits(ms: int) -> list[int]:
    """The 32 bits drawn for ``ms``: its low 24 bits, then a check byte.

    The check byte makes a frame whose barcode the encoder smeared read as
    nothing rather than as a wrong latency.
    """
    value = ms % STAMP_MOD
    check = ((value >> 16) ^ (value >> 8) ^ value ^ 0xA5) & 0xFF
    word = value << 8 | check
    return [(word >> (STAMP_BITS - 1 - i)) & 1 for i in range(STAMP_BITS)]


def bits_stamp(bits: list[int]) -> int | None:
    """The ms a barcode's bits carry, None if the check byte disagrees."""
    word = 0
    for bit in bits:
        word = word << 1 | bit
    value, check = word >> 8, word & 0xFF
    return value if ((value >> 16) ^ (value >> 8) ^ value ^ 0xA5) & 0xFF == check else None


def draw_stamp(luma: Any, ms: int, rows: int = 16) -> None:
    """Draw ``ms`` across the top ``rows`` of a luma plane (numpy, h x w): 32 blocks."""
    width = luma.shape[1] // STAMP_BITS
    for i, bit in enumerate(stamp_bits(ms)):
        luma[:rows, i * width:(i + 1) * width] = 235 if bit else 16


def read_stamp(luma: Any, rows: int = 16) -> int | None:
    """The ms in a decoded luma plane's barcode (centre of each block), or None."""
    width = luma.shape[1] // STAMP_BITS
    top, bottom = rows // 4, rows - rows // 4
    bits = []
    for i in range(STAMP_BITS):
        block = luma[top:bottom, i * width + width // 4:(i + 1) * width - width // 4]
        bits.append(1 if float(block.mean()) > 125 else 0)
    return bits_stamp(bits)


def stamp_age_ms(now_ms: int, stamp: int) -> int:
    """How old a stamp is at ``now_ms``, across the 24-bit wrap."""
    return (now_ms - stamp) % STAMP_MOD


# --------------------------------------------------------------------------
# the publisher's video


def video_track(profile: Json) -> Any:
    """The publisher's video track for ``profile``."""
    from aiortc.mediastreams import VideoStreamTrack

    class StampTrack(VideoStreamTrack):
        """Grey frames with the barcode: VP8 makes them one packet each."""

        def __init__(self) -> None:
            super().__init__()
            import numpy as np

            self.width, self.height = profile["width"], profile["height"]
            self.planes = np.full((self.height * 3 // 2, self.width), 128, dtype=np.uint8)
            self.period = 1 / profile["fps"]
            self.start = 0.0
            self.count = 0

        async def recv(self) -> Any:
            import av

            if not self.start:
                self.start = now()
            self.count += 1
            await asyncio.sleep(max(self.start + self.count * self.period - now(), 0))
            draw_stamp(self.planes[:self.height], int(now() * 1000))
            frame = av.VideoFrame.from_ndarray(self.planes, format="yuv420p")
            frame.pts = int(self.count * self.period * 90000)
            frame.time_base = fractions.Fraction(1, 90000)
            return frame

    class ReplayTrack(VideoStreamTrack):
        """Noise encoded once (``encode_noise``), replayed at the frame rate."""

        def __init__(self) -> None:
            super().__init__()
            self.packets = encode_noise(profile)
            self.period = 1 / profile["fps"]
            self.start = 0.0
            self.count = 0

        async def recv(self) -> Any:
            import av

            if not self.start:
                self.start = now()
            await asyncio.sleep(max(self.start + self.count * self.period - now(), 0))
            index = self.count if self.count < len(self.packets) else \
                1 + (self.count - 1) % (len(self.packets) - 1)
            packet = av.Packet(self.packets[index])
            packet.pts = int(self.count * self.period * 90000)
            packet.time_base = fractions.Fraction(1, 90000)
            self.count += 1
            return packet

    return StampTrack() if profile["live"] else ReplayTrack()


def encode_noise(profile: Json, seconds: float = 3.0) -> list[bytes]:
    """A key frame, then 2 s of P-frames of fresh low-level noise at the profile's bitrate.

    Replayed in a loop (the P-frames do not chain across the loop, which
    counting viewers do not see): a periodic key frame of noise would be a
    300 KB burst, which no webinar encoder sends; new viewers get the
    mountpoint's buffered key frame.  The first second is dropped, while the
    rate control settles.
    """
    import av
    import numpy as np

    fps, width, height = profile["fps"], profile["width"], profile["height"]
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.framerate = fractions.Fraction(fps, 1)
    codec.bit_rate = profile["bitrate"]
    codec.qmin, codec.qmax = 4, 63  # ffmpeg's default qmax (31) cannot reach the bitrate
    codec.gop_size = 10 * fps
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(1)
    out: list[bytes] = []
    for i in range(int(fps * seconds)):
        noise = 128 + rng.integers(-4, 5, (height * 3 // 2, width))
        frame = av.VideoFrame.from_ndarray(noise.astype(np.uint8), format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    return out[:1] + out[fps:]


# --------------------------------------------------------------------------
# a viewer's record (filled in a worker, analysed in the main process)


@dataclass
class ViewerRecord:
    side: str
    index: int  # join order within the side's ramp
    decode: bool = False
    node: int = -1  # direct side: the egress node joined
    t_at: float = 0.0  # scheduled join
    t_post: float | None = None  # gateway: POST; direct: attach
    t_answer: float | None = None  # gateway: 201; direct: start acknowledged
    t_offer: float | None = None  # direct: Janus's offer (watch)
    t_local: float | None = None  # direct: aiortc's answer made
    t_ice: float | None = None  # ICE done
    t_connected: float | None = None  # ICE + DTLS done
    t_first: float | None = None  # first video RTP packet
    status: int | None = None
    packets: dict[str, int] = field(default_factory=lambda: {"audio": 0, "video": 0})
    bytes: int = 0
    window: dict[str, int] = field(default_factory=dict)  # video packets etc. in the hold window
    g2g_ms: list[float] = field(default_factory=list)  # decoders: glass-to-glass, hold window
    frames: int = 0
    error: str | None = None


COUNTED: dict[Any, tuple[ViewerRecord, str]] = {}
READERS: dict[Any, StampReader] = {}


class StampReader:
    """A decoding viewer's video: VP8 frames decoded as soon as their last packet
    (marker bit) arrives, and the barcode read from each.

    Not aiortc's own receive path: its jitter buffer hands a frame on only when
    the next frame's first packet arrives, which would add a frame period
    (100 ms at 10 fps) that no browser adds.
    """

    def __init__(self, rec: ViewerRecord, window: list[float]) -> None:
        import av

        self.rec, self.window = rec, window
        self.codec = av.CodecContext.create("vp8", "r")
        self.parts: list[bytes] = []
        self.timestamp: int | None = None

    def feed(self, packet: Any) -> None:
        import av
        import numpy as np
        from aiortc.codecs.vpx import VpxPayloadDescriptor

        if packet.timestamp != self.timestamp:
            self.parts, self.timestamp = [], packet.timestamp
        try:
            _, data = VpxPayloadDescriptor.parse(packet.payload)
        except ValueError:
            return
        self.parts.append(data)
        if not packet.marker:
            return
        payload, self.parts = b"".join(self.parts), []
        try:
            frames = self.codec.decode(av.Packet(payload))
        except av.error.FFmpegError:  # e.g. a P-frame before the first key frame
            return
        for frame in frames:
            self.rec.frames += 1
            t = now()
            if not self.window or not self.window[0] <= t <= self.window[1]:
                continue
            plane = frame.planes[0]
            luma = np.frombuffer(bytes(plane), np.uint8).reshape(
                frame.height, plane.line_size)[:, :frame.width]
            stamp = read_stamp(luma)
            if stamp is not None:
                self.rec.g2g_ms.append(float(stamp_age_ms(int(t * 1000), stamp)))


def install_counting_receivers() -> None:
    """Counting viewers skip the jitter buffer and the decoder; decoders count too."""
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    handle_rtp = RTCRtpReceiver._handle_rtp_packet

    async def counting(self: Any, packet: Any, arrival_time_ms: int) -> None:
        seen = COUNTED.get(self)
        if seen is None:
            return await handle_rtp(self, packet, arrival_time_ms)
        rec, kind = seen
        rec.packets[kind] += 1
        rec.bytes += len(packet.payload) + 12
        if kind == "video" and rec.t_first is None:
            rec.t_first = now()
        reader = READERS.get(self)
        if reader is not None and kind == "video":
            reader.feed(packet)

    RTCRtpReceiver._handle_rtp_packet = counting  # type: ignore[method-assign]


class Viewer:
    """One PeerConnection whose receivers only count (decoders also read the barcode)."""

    def __init__(self, rec: ViewerRecord, window: list[float]) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        self.rec, self.window = rec, window
        # No STUN server: aiortc's default (Google's) makes every gathering
        # resolve a name in a namespace without network, through the default
        # executor's few threads; with hundreds of viewers that queue is what
        # set-ups waited on (seconds per offer).
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.on("iceconnectionstatechange", self._ice)
        self.pc.on("connectionstatechange", self._connected)

    def _ice(self) -> None:
        if self.pc.iceConnectionState in ("completed", "connected") and self.rec.t_ice is None:
            self.rec.t_ice = now()

    def _connected(self) -> None:
        if self.pc.connectionState == "connected" and self.rec.t_connected is None:
            self.rec.t_connected = now()

    def count(self) -> None:
        for transceiver in self.pc.getTransceivers():
            COUNTED[transceiver.receiver] = (self.rec, transceiver.kind)
            if self.rec.decode and transceiver.kind == "video":
                READERS[transceiver.receiver] = StampReader(self.rec, self.window)

    async def close(self) -> None:
        for transceiver in self.pc.getTransceivers():
            COUNTED.pop(transceiver.receiver, None)
            READERS.pop(transceiver.receiver, None)
        await self.pc.close()


# --------------------------------------------------------------------------
# one ramp in one worker process


class Ramp:
    """A worker's share of one side's ramp: joins on schedule, then the hold, then teardown."""

    def __init__(self, cmd: Json) -> None:
        self.cmd = cmd
        self.window: list[float] = []
        self.viewers: list[Viewer] = []
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(cmd["request_timeout"]),
                                      limits=httpx.Limits(max_connections=64))
        self.janus: list[NativeJanus] = []
        self.handles: list[tuple[NativeJanus, int]] = []
        self.sessions: list[str] = []

    async def run(self, conn: Any) -> Json:
        cmd = self.cmd
        if cmd["side"] == "direct":
            self.janus = [NativeJanus(url, cmd["request_timeout"]) for url in cmd["janus_urls"]]
            await asyncio.gather(*(j.start() for j in self.janus))
        joins = [asyncio.ensure_future(self.join(ViewerRecord(cmd["side"], i, bool(d)), at))
                 for i, at, d in cmd["joins"]]
        hold: Json | None = None
        while hold is None:  # progress every half second until the main process says hold
            await asyncio.sleep(0.5)
            recs = [v.rec for v in self.viewers]
            conn.send({"phase": "progress", "started": len(recs),
                       "first": sum(r.t_first is not None for r in recs),
                       "failed": sum(r.error is not None for r in recs)})
            if conn.poll():
                hold = conn.recv()
        await asyncio.gather(*joins, return_exceptions=True)
        self.window[:] = [hold["from"], hold["until"]]
        await asyncio.sleep(max(hold["from"] - now(), 0))
        before = {id(v): (dict(v.rec.packets), v.rec.bytes) for v in self.viewers}
        await asyncio.sleep(max(hold["until"] - now(), 0))
        for v in self.viewers:
            packets, octets = before[id(v)]
            v.rec.window = {**{k: v.rec.packets[k] - packets[k] for k in packets},
                            "bytes": v.rec.bytes - octets}
        t = now()
        errors = await self.teardown()
        return {"phase": "done", "viewers": [asdict(v.rec) for v in self.viewers],
                "teardown_s": now() - t, "teardown_errors": errors}

    async def join(self, rec: ViewerRecord, at: float) -> None:
        await asyncio.sleep(max(at - now(), 0))
        rec.t_at = at
        viewer = Viewer(rec, self.window)
        self.viewers.append(viewer)
        try:
            await asyncio.wait_for(self._gateway(viewer) if rec.side == "gateway"
                                   else self._direct(viewer), self.cmd["request_timeout"] * 2)
        except Exception as exc:  # noqa: BLE001 - recorded, the ramp goes on
            rec.error = rec.error or f"{type(exc).__name__}: {exc}"

    async def _gateway(self, viewer: Viewer) -> None:
        from aiortc import RTCSessionDescription

        rec = viewer.rec
        for kind in self.cmd["kinds"]:
            viewer.pc.addTransceiver(kind, direction="recvonly")
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        viewer.count()
        rec.t_post = now()
        reply = await self.http.post(self.cmd["whep_url"], content=viewer.pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp"})
        rec.t_answer, rec.status = now(), reply.status_code
        if reply.status_code != 201:
            raise BenchError(f"POST {reply.status_code} {reply.text[:120]}")
        self.sessions.append(urljoin(self.cmd["whep_url"], reply.headers["location"]))
        await viewer.pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))

    async def _direct(self, viewer: Viewer) -> None:
        from aiortc import RTCSessionDescription

        rec = viewer.rec
        rec.node = rec.index % len(self.janus)
        janus = self.janus[rec.node]
        rec.t_post = now()
        handle = await janus.attach(STREAMING)
        self.handles.append((janus, handle))
        offer = await janus.watch(handle, self.cmd["mountpoints"][rec.node])
        rec.t_offer = now()
        await viewer.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        viewer.count()
        await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
        rec.t_local = now()
        await janus.answer(handle, viewer.pc.localDescription.sdp)
        rec.t_answer = now()

    async def teardown(self) -> list[str]:
        timeout = self.cmd["request_timeout"]
        calls: list[Any] = [self.http.delete(url) for url in self.sessions]
        calls += [janus.detach(handle) for janus, handle in self.handles]
        outcomes = await asyncio.gather(*(asyncio.wait_for(c, timeout) for c in calls),
                                        return_exceptions=True)
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        errors += [f"DELETE {o.status_code}" for o in outcomes
                   if isinstance(o, httpx.Response) and o.status_code != 200]
        await asyncio.gather(*(v.close() for v in self.viewers), return_exceptions=True)
        await asyncio.gather(*(j.close() for j in self.janus), return_exceptions=True)
        await self.http.aclose()
        return errors


def worker_main(conn: Any, index: int) -> None:
    """A viewer process: ramps on command, each in a fresh event loop."""
    install_counting_receivers()
    serve(conn, index, lambda cmd: Ramp(cmd).run(conn), lift_open_files=True)
