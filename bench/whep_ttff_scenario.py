"""whep_ttff's scenario: what one viewer does, in a worker process.

Each worker process (``whep_ttff_driver.Workers``) runs batches on command:
it makes its viewers ready, waits for the common go instant, joins them all
at once (``gateway`` and the WHEP peers such as ``janus-whep-server``: WHEP
POST of an aiortc recvonly offer to the side's URL; ``native``: Janus's own
server-offer flow on a raw client), waits for each first decoded
frame, keeps them decoding for the hold, tears them down, and sends back one
``ViewerRecord`` per viewer.  Hooks in aiortc's receiver time the first
video RTP packet, the first key frame packet and the PLIs each viewer sent.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import STREAMING, BenchError, Json
from janus_direct import NativeJanus
from worker_loop import serve

STREAM = "ttff"
NATIVE = "native"  # the one side that is not WHEP: Janus's server-offer flow


def zero_field(side: str) -> str:
    """Where a viewer's clock starts: its POST on a WHEP side, its ``attach`` on native."""
    return "t_attach" if side == NATIVE else "t_post"


def now() -> float:
    """CLOCK_MONOTONIC: one clock for the bench, its workers and the gateway."""
    return time.monotonic()


# --------------------------------------------------------------------------
# VP8 on the wire


def vp8_keyframe_start(payload: bytes) -> bool:
    """Whether an RTP payload (RFC 7741) starts a VP8 key frame."""
    if len(payload) < 2:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x0F:  # S bit, partition 0
        return False
    i = 1
    if b0 & 0x80:  # X: extension byte
        b1 = payload[i]
        i += 1
        if b1 & 0x80:  # I: picture id, 7 or 15 bits
            i += 2 if payload[i] & 0x80 else 1
        if b1 & 0x40:  # L: TL0PICIDX
            i += 1
        if b1 & 0x30:  # T or K: TID/KEYIDX
            i += 1
    return len(payload) > i and not payload[i] & 0x01  # P bit 0 = key frame


def video_pt(sdp_text: str, codec: str = "VP8") -> int | None:
    """The payload type of ``codec`` in the first video m-section."""
    section = sdp_text.split("m=video", 1)
    if len(section) < 2:
        return None
    found = re.search(rf"a=rtpmap:(\d+) {codec}/90000", section[1].split("\nm=", 1)[0])
    return int(found.group(1)) if found else None


# --------------------------------------------------------------------------
# one viewer's record (filled in a worker, analysed in the main process)


@dataclass
class ViewerRecord:
    side: str
    worker: int
    index: int
    t_go: float = 0.0
    offer_s: float | None = None  # WHEP: createOffer + gathering, done before the go
    t_post: float | None = None  # WHEP
    t_201: float | None = None
    status: int | None = None
    session: str | None = None
    t_attach: float | None = None  # native
    t_attached: float | None = None
    t_watch: float | None = None
    t_offer: float | None = None
    t_answer: float | None = None  # native: aiortc answer made (incl. gathering)
    t_started: float | None = None  # native: Janus's "starting" event
    t_srd: float | None = None  # WHEP: answer applied
    t_ice: float | None = None  # aiortc iceConnectionState "completed" (ICE done)
    t_connected: float | None = None  # aiortc connectionState "connected" (ICE + DTLS)
    t_rtp: float | None = None  # first video RTP packet (after SRTP)
    t_kf: float | None = None  # first packet that starts a VP8 key frame
    t_pli: float | None = None  # first PLI this viewer sent
    plis: int = 0
    t_frame: float | None = None  # first decoded video frame out of track.recv()
    frames: int = 0
    audio_frames: int = 0
    hold_frames: int = 0
    hold_audio: int = 0
    vp8_pt: int | None = None
    error: str | None = None

    @property
    def t_zero(self) -> float | None:
        return getattr(self, zero_field(self.side))


# --------------------------------------------------------------------------
# receive-side probes, installed in each worker


RECEIVERS: dict[Any, ViewerRecord] = {}


def install_receiver_probes() -> None:
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    handle_rtp = RTCRtpReceiver._handle_rtp_packet
    send_pli = RTCRtpReceiver._send_rtcp_pli

    async def probed_rtp(self: Any, packet: Any, arrival_time_ms: int) -> None:
        rec = RECEIVERS.get(self)
        if rec is not None and packet.payload_type == rec.vp8_pt:
            t = now()
            if rec.t_rtp is None:
                rec.t_rtp = t
            if rec.t_kf is None and vp8_keyframe_start(packet.payload):
                rec.t_kf = t
        await handle_rtp(self, packet, arrival_time_ms)

    async def probed_pli(self: Any, media_ssrc: int) -> None:
        rec = RECEIVERS.get(self)
        if rec is not None:
            rec.plis += 1
            if rec.t_pli is None:
                rec.t_pli = now()
        await send_pli(self, media_ssrc)

    RTCRtpReceiver._handle_rtp_packet = probed_rtp  # type: ignore[method-assign]
    RTCRtpReceiver._send_rtcp_pli = probed_pli  # type: ignore[method-assign]


class Viewer:
    """An aiortc PeerConnection that counts decoded frames."""

    def __init__(self, rec: ViewerRecord) -> None:
        from aiortc import RTCPeerConnection

        self.rec = rec
        self.pc = RTCPeerConnection()
        self.first = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def _track(track: Any) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

        @self.pc.on("iceconnectionstatechange")
        def _ice() -> None:
            if self.pc.iceConnectionState in ("completed", "connected") and rec.t_ice is None:
                rec.t_ice = now()

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState == "connected" and rec.t_connected is None:
                rec.t_connected = now()

    async def _consume(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        rec = self.rec
        try:
            while True:
                await track.recv()
                if track.kind == "video":
                    rec.frames += 1
                    if rec.t_frame is None:
                        rec.t_frame = now()
                        self.first.set()
                else:
                    rec.audio_frames += 1
        except MediaStreamError:
            return

    def watch_receivers(self) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "video":
                RECEIVERS[transceiver.receiver] = self.rec

    async def wait_frame(self, deadline: float) -> None:
        try:
            await asyncio.wait_for(self.first.wait(), max(deadline - now(), 0.001))
        except asyncio.TimeoutError:
            self.rec.error = self.rec.error or "no decoded frame before the TTFF timeout"

    async def close(self) -> None:
        for transceiver in self.pc.getTransceivers():
            RECEIVERS.pop(transceiver.receiver, None)
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --------------------------------------------------------------------------
# one batch in one worker process


def recv(conn: Any, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise BenchError(f"no message within {timeout:.0f} s")
    return conn.recv()


async def ready_then_go(conn: Any, cmd: Json) -> tuple[Json, float]:
    """Say ready, wait for the go and its instant: (the go, the TTFF deadline).

    Every worker of a batch starts at the same CLOCK_MONOTONIC instant, so
    the viewers of all processes join at once.
    """
    conn.send({"phase": "ready"})
    go = await asyncio.to_thread(recv, conn, cmd["request_timeout"] * 3)
    cmd["t_go_received"] = now()
    await asyncio.sleep(max(go["at"] - now(), 0))
    cmd["t_woke"] = now()
    return go, go["at"] + cmd["ttff_timeout"]


async def whep_batch(conn: Any, cmd: Json) -> tuple[list[Viewer], list[Any]]:
    """WHEP viewers of one side (the gateway or a peer): POST the offer to its URL."""
    from aiortc import RTCSessionDescription

    url = cmd["whep_url"]
    viewers = []
    for i in range(cmd["count"]):
        rec = ViewerRecord(cmd["side"], cmd["worker"], i)
        viewer = Viewer(rec)
        viewer.pc.addTransceiver("audio", direction="recvonly")
        viewer.pc.addTransceiver("video", direction="recvonly")
        t = now()
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        rec.offer_s = now() - t
        viewer.watch_receivers()
        viewers.append(viewer)
    http = httpx.AsyncClient(timeout=httpx.Timeout(cmd["request_timeout"]),
                             limits=httpx.Limits(max_connections=None,
                                                 max_keepalive_connections=128))
    go, deadline = await ready_then_go(conn, cmd)

    async def one(viewer: Viewer) -> None:
        rec = viewer.rec
        rec.t_go = go["at"]
        offer = viewer.pc.localDescription.sdp
        rec.t_post = now()
        try:
            response = await http.post(url, content=offer,
                                       headers={"Content-Type": "application/sdp"})
            rec.t_201 = now()
            rec.status = response.status_code
            if response.status_code != 201:
                rec.error = f"POST: {response.status_code} {response.text[:200]}"
                return
            location = urljoin(url, response.headers["location"])
            rec.session = location
            rec.vp8_pt = video_pt(response.text)
            await viewer.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
            rec.t_srd = now()
            await viewer.wait_frame(deadline)
        except Exception as exc:
            rec.error = rec.error or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(v) for v in viewers))
    return viewers, [http]


async def native_batch(conn: Any, cmd: Json) -> tuple[list[Viewer], list[Any]]:
    from aiortc import RTCSessionDescription

    janus = NativeJanus(cmd["janus_url"], cmd["request_timeout"])
    await janus.start()
    handles: dict[int, int] = {}
    recs = [ViewerRecord("native", cmd["worker"], i) for i in range(cmd["count"])]
    viewers: list[Viewer] = []
    go, deadline = await ready_then_go(conn, cmd)

    async def one(rec: ViewerRecord) -> None:
        rec.t_go = go["at"]
        rec.t_attach = now()
        try:
            handle = await janus.attach(STREAMING)
            handles[rec.index] = handle
            rec.t_attached = rec.t_watch = now()
            offer = await janus.watch(handle, cmd["mountpoint"])
            rec.t_offer = now()
            viewer = Viewer(rec)
            viewers.append(viewer)
            rec.vp8_pt = video_pt(offer)
            await viewer.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            viewer.watch_receivers()
            await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
            rec.t_answer = now()
            await janus.answer(handle, viewer.pc.localDescription.sdp)
            rec.t_started = now()
            await viewer.wait_frame(deadline)
        except Exception as exc:
            rec.error = rec.error or f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(r) for r in recs))
    # Viewers that failed before their PeerConnection existed still report.
    have = {id(v.rec) for v in viewers}
    for rec in recs:
        if id(rec) not in have:
            viewers.append(_PlaceHolder(rec))  # type: ignore[arg-type]
    return viewers, [(janus, handles)]


class _PlaceHolder:
    def __init__(self, rec: ViewerRecord) -> None:
        self.rec = rec

    async def close(self) -> None:
        return


async def teardown(side: str, viewers: list[Viewer], resources: list[Any], timeout: float) -> list[str]:
    errors: list[str] = []
    if side != NATIVE:
        http = resources[0]

        async def delete(viewer: Viewer) -> None:
            if viewer.rec.session:
                reply = await http.delete(viewer.rec.session)
                if reply.status_code != 200:
                    errors.append(f"DELETE: {reply.status_code}")

        outcomes = await asyncio.gather(*(asyncio.wait_for(delete(v), timeout) for v in viewers),
                                        return_exceptions=True)
        errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await http.aclose()
    else:
        janus, handles = resources[0]
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(janus.detach(h), timeout) for h in handles.values()),
            return_exceptions=True)
        errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await janus.close()
    return errors


async def worker_batch(conn: Any, cmd: Json) -> Json:
    runner = native_batch if cmd["side"] == NATIVE else whep_batch
    viewers, resources = await runner(conn, cmd)
    conn.send({"phase": "settled"})
    hold = await asyncio.to_thread(recv, conn, cmd["ttff_timeout"] + 60)
    await asyncio.sleep(max(hold["from"] - now(), 0))
    before = {id(v): (v.rec.frames, v.rec.audio_frames) for v in viewers}
    await asyncio.sleep(max(hold["until"] - now(), 0))
    for v in viewers:
        v.rec.hold_frames = v.rec.frames - before[id(v)][0]
        v.rec.hold_audio = v.rec.audio_frames - before[id(v)][1]
    t = now()
    errors = await teardown(cmd["side"], viewers, resources, cmd["request_timeout"])
    return {"phase": "done", "viewers": [asdict(v.rec) for v in viewers],
            "teardown_s": now() - t, "teardown_errors": errors,
            "t_go_received": cmd.get("t_go_received"), "t_woke": cmd.get("t_woke")}


def worker_main(conn: Any, index: int) -> None:
    """A viewer process: batches on command, each in a fresh event loop."""
    install_receiver_probes()

    def run(cmd: dict[str, Any]) -> Any:
        cmd["worker"] = index
        return worker_batch(conn, cmd)

    serve(conn, index, run)


