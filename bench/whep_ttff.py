#!/usr/bin/env python3
"""WHEP time to first frame: N aiortc viewers join one live stream at once.

One aiortc publisher (VP8 + Opus) publishes through the gateway (WHIP).  Then,
per round, two batches of N viewers join at the same instant:

- gateway: each viewer POSTs its recvonly offer (aiortc's own payload types,
  Opus 96 / VP8 97, so the gateway's bridged path with a PT variant) to
  ``/whep/<stream>`` of ``whip-gateway serve`` running as its own process.
  Signalling = POST -> 201; TTFF = POST -> first decoded video frame.
- native: the same viewers straight on Janus's server-offer flow, with no
  gateway: a Streaming mountpoint of the bench's own, fed by an
  ``rtp_forward`` (with ``rtcp_port``) from the same publisher; per viewer
  ``attach`` + ``watch`` -> Janus's offer -> aiortc answer -> ``start``.
  Signalling = attach -> offer received (``watch`` alone is shown too);
  TTFF = attach -> first decoded video frame.  A raw httpx Janus client (one
  session per worker, one long-poll task) on purpose, not gateway.janus.

Viewers run in ``--procs`` worker processes (each its own event loop, in the
same network namespace), because one Python process decoding 50 VP8 streams
is a bottleneck of its own.  Every viewer also times ICE+DTLS up, its first
video RTP packet, its first VP8 keyframe packet and any PLI it sent, so a
slow TTFF can be split into signalling, connecting, waiting for a keyframe
and decoding.  With probes (default), the gateway runs with timing wrappers
(no file under gateway/ changes) that time each step of every WHEP POST:
variant (mountpoint + rtp_forward for the first viewer, lock wait for the
rest), attach, watch (POST->ack, ack->event), bridge, start.

Run as root (it makes a private network namespace, see gateway/sandbox.py):

    sudo .venv/bin/python bench/whep_ttff.py [--viewers 50] [--procs 2]
        [--rounds 3] [--json out.json]

Digging: ``--warm`` (one unmeasured gateway viewer all along, so the PT
variant outlives the batches), ``--bufferkf`` (experiment: Janus keeps the
last key frame of every video mountpoint, the gateway's through the probes),
``--ice-lite``, ``--gateway-profile FILE`` (cProfile), ``--keep-logs DIR``.
The gateway runs with its POST rate limits off: every viewer is 127.0.0.1.

Afterwards Janus's admin API must show nothing left: sessions, handles,
VideoRoom rooms, Streaming mountpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import (RATE_LIMITS_OFF, STREAMING, VIDEOROOM, BenchError, CpuMeter, GatewayProcess,
                     JanusAdmin, Json, RawJanus, apply_env_items, enter_netns, gateway_command,
                     gateway_env, guarded, install_hard_cap, janus_nodes_env, keep_logs,
                     machine_busy, machine_info, machine_line, params_of, percentile,
                     report_leftovers, run_capped,
                     write_json)

STREAM = "ttff"
TARGET_GATEWAY_TTFF_P95_MS = 150.0
PROBE_ENV = "WHEP_TTFF_PROBES"
PROFILE_ENV = "WHEP_TTFF_PROFILE"


def now() -> float:
    """CLOCK_MONOTONIC: one clock for the bench, its workers and the gateway."""
    return time.monotonic()


# --------------------------------------------------------------------------
# statistics


def summary(ms: list[float]) -> Json:
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "max_ms": max(ms) if ms else float("nan"), "min_ms": min(ms) if ms else float("nan")}


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN -> "-"


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
    offer_s: float | None = None  # gateway: createOffer + gathering, done before the go
    t_post: float | None = None  # gateway
    t_201: float | None = None
    status: int | None = None
    session: str | None = None
    t_attach: float | None = None  # native
    t_attached: float | None = None
    t_watch: float | None = None
    t_offer: float | None = None
    t_answer: float | None = None  # native: aiortc answer made (incl. gathering)
    t_started: float | None = None  # native: Janus's "starting" event
    t_srd: float | None = None  # gateway: answer applied
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
        return self.t_post if self.side == "gateway" else self.t_attach


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
# the native side: a minimal Janus HTTP client, on purpose not gateway.janus.client


class NativeJanus(RawJanus):
    """Janus's Streaming server-offer flow for one worker's viewers, no gateway."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout, keepalive=128, keepalive_expiry=60)

    async def message(self, handle: int, body: Json, jsep: Json | None = None) -> Json:
        """An asynchronous plugin request: the event with our transaction."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self.waiters[transaction] = future
        payload: Json = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await self.post(f"/{self.session}/{handle}", payload)
            if reply.get("janus") != "ack":
                event = reply
            else:
                event = await asyncio.wait_for(future, self.timeout)
        finally:
            self.waiters.pop(transaction, None)
        data = (event.get("plugindata") or {}).get("data") or {}
        if event.get("janus") == "error" or "error_code" in data:
            raise BenchError(f"{body.get('request')}: {event.get('error') or data}")
        return event

    async def detach(self, handle: int) -> None:
        await self.post(f"/{self.session}/{handle}", {"janus": "detach"})


# --------------------------------------------------------------------------
# one batch in one worker process


def recv(conn: Any, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise BenchError(f"no message within {timeout:.0f} s")
    return conn.recv()


async def gateway_batch(conn: Any, cmd: Json) -> tuple[list[Viewer], list[Any]]:
    from aiortc import RTCSessionDescription

    url = cmd["whep_url"]
    viewers = []
    for i in range(cmd["count"]):
        rec = ViewerRecord("gateway", cmd["worker"], i)
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
    conn.send({"phase": "ready"})
    go = await asyncio.to_thread(recv, conn, cmd["request_timeout"] * 3)
    cmd["t_go_received"] = now()
    await asyncio.sleep(max(go["at"] - now(), 0))
    cmd["t_woke"] = now()
    deadline = go["at"] + cmd["ttff_timeout"]

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
    conn.send({"phase": "ready"})
    go = await asyncio.to_thread(recv, conn, cmd["request_timeout"] * 3)
    cmd["t_go_received"] = now()
    await asyncio.sleep(max(go["at"] - now(), 0))
    cmd["t_woke"] = now()
    deadline = go["at"] + cmd["ttff_timeout"]

    async def one(rec: ViewerRecord) -> None:
        rec.t_go = go["at"]
        rec.t_attach = now()
        try:
            handle = await janus.attach(STREAMING)
            handles[rec.index] = handle
            rec.t_attached = rec.t_watch = now()
            event = await janus.message(handle, {"request": "watch", "id": cmd["mountpoint"]})
            rec.t_offer = now()
            jsep = event.get("jsep") or {}
            if jsep.get("type") != "offer":
                raise BenchError(f"watch: no offer in {event}")
            viewer = Viewer(rec)
            viewers.append(viewer)
            rec.vp8_pt = video_pt(jsep["sdp"])
            await viewer.pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "offer"))
            viewer.watch_receivers()
            await viewer.pc.setLocalDescription(await viewer.pc.createAnswer())
            rec.t_answer = now()
            await janus.message(handle, {"request": "start"},
                                {"type": "answer", "sdp": viewer.pc.localDescription.sdp})
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
    if side == "gateway":
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
    runner = gateway_batch if cmd["side"] == "gateway" else native_batch
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides
    install_receiver_probes()
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd.get("op") == "stop":
            return
        cmd["worker"] = index
        try:
            result = asyncio.run(worker_batch(conn, cmd))
        except BaseException as exc:  # report it; the main process decides
            result = {"phase": "error", "error": f"worker {index}: {exc!r}"}
        try:
            conn.send(result)
        except (OSError, EOFError):
            return


# --------------------------------------------------------------------------
# the gateway with timing probes (its own process; nothing under gateway/ changes)


def serve_probed(argv: list[str]) -> int:
    """``whip-gateway serve`` with wrappers that time each step of a WHEP POST.

    One JSON line per POST goes to $WHEP_TTFF_PROBES: the ASGI call, each
    wrapped step as (name, start, end) on CLOCK_MONOTONIC, and for Janus
    requests the moment the long-poll pump had the event.  Event-loop lag
    samples (a 5 ms ticker) go there too, once a second.
    """
    import functools

    from gateway import app as app_module
    from gateway.core import egress as egress_module
    from gateway.sdp import bridge as sdp_bridge
    from gateway.janus import client as client_module
    from gateway.janus import streaming as streaming_module
    from gateway.janus import videoroom as videoroom_module

    out = open(os.environ[PROBE_ENV], "a", buffering=1)  # noqa: SIM115
    current: contextvars.ContextVar[Json | None] = contextvars.ContextVar("whep_probe", default=None)
    arrivals: dict[str, float] = {}
    lag: list[tuple[float, float]] = []

    def step(name: str, t0: float, extra: Json | None = None) -> None:
        rec = current.get()
        if rec is not None:
            entry: Json = {"name": name, "t0": t0, "t1": now()}
            if extra:
                entry.update(extra)
            rec["steps"].append(entry)

    def timed_async(func: Any, name: str) -> Any:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = now()
            try:
                return await func(*args, **kwargs)
            finally:
                step(name, t0)
        return wrapper

    def timed_sync(func: Any, name: str) -> Any:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = now()
            try:
                return func(*args, **kwargs)
            finally:
                step(name, t0)
        return wrapper

    missing: list[str] = []

    def patch(owner: Any, name: str, label: str, *, sync: bool = False) -> None:
        """Wrap ``owner.name`` with a timer; a probe whose target moved is skipped."""
        raw = getattr(owner, "__dict__", {}).get(name) if isinstance(owner, type) else None
        func = getattr(owner, name, None)
        if func is None:
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
            return
        if isinstance(raw, classmethod):
            inner = raw.__func__
            timed = timed_async(inner, label)
            setattr(owner, name, classmethod(timed))
        else:
            setattr(owner, name, (timed_sync if sync else timed_async)(func, label))

    patch(egress_module.Egress, "view", "view")
    patch(egress_module.Egress, "_variant", "variant")
    patch(streaming_module.Mountpoint, "create", "mountpoint_create")
    patch(streaming_module.StreamingViewer, "attach", "attach")
    patch(streaming_module.StreamingViewer, "watch", "watch")
    patch(streaming_module.StreamingViewer, "start", "start")
    patch(videoroom_module.RoomPublisher, "forward", "rtp_forward")
    patch(sdp_bridge, "bridge", "bridge", sync=True)
    patch(sdp_bridge, "choose_codecs", "choose_codecs", sync=True)
    Handle = client_module.JanusHandle
    handle_post = Handle._post

    async def probed_post(self: Any, body: Json) -> Json:
        t0 = now()
        try:
            return await handle_post(self, body)
        finally:
            if body.get("janus") == "message":
                request = (body.get("body") or {}).get("request", "?")
                step(f"post:{request}", t0, {"transaction": body.get("transaction")})

    Handle._post = probed_post  # type: ignore[method-assign]
    Session = client_module.JanusSession
    dispatch = Session._dispatch

    def probed_dispatch(self: Any, event: Json) -> None:
        transaction = event.get("transaction")
        if transaction and event.get("janus") in ("event", "success", "error"):
            arrivals[transaction] = now()
        dispatch(self, event)

    Session._dispatch = probed_dispatch  # type: ignore[method-assign]

    async def lag_ticker() -> None:
        last_flush = now()
        while True:
            t = now()
            await asyncio.sleep(0.005)
            late = now() - t - 0.005
            if late > 0.002:
                lag.append((t, late))
            if now() - last_flush > 1.0 and lag:
                out.write(json.dumps({"lag": lag}) + "\n")
                lag.clear()
                last_flush = now()

    create_app = app_module.create_app
    ticker: list[asyncio.Task[None]] = []

    def probed_create_app(*args: Any, **kwargs: Any) -> Any:
        inner = create_app(*args, **kwargs)

        async def app(scope: Json, receive: Any, send: Any) -> None:
            if not ticker and scope["type"] in ("http", "lifespan"):
                ticker.append(asyncio.get_running_loop().create_task(lag_ticker()))
            path = scope.get("path", "")
            if scope["type"] != "http" or scope["method"] != "POST" \
                    or not path.startswith("/whep/") or path.count("/") != 2:
                await inner(scope, receive, send)
                return
            rec: Json = {"t_asgi": now(), "steps": []}
            token = current.set(rec)

            async def probed_send(message: Json) -> None:
                if message["type"] == "http.response.start":
                    rec["t_response"] = now()
                    rec["status"] = message["status"]
                    for key, value in message.get("headers", []):
                        if key.lower() == b"location":
                            rec["session"] = value.decode().rsplit("/", 1)[-1]
                await send(message)

            try:
                await inner(scope, receive, probed_send)
            finally:
                current.reset(token)
                rec["t_end"] = now()
                for entry in rec["steps"]:
                    if entry.get("transaction") in arrivals:
                        entry["t_event"] = arrivals.pop(entry["transaction"])
                out.write(json.dumps(rec) + "\n")

        return app

    app_module.create_app = probed_create_app
    if missing:
        print(f"whep_ttff probes: not found, not timed: {missing}", file=sys.stderr, flush=True)
    from gateway.cli import main as cli_main

    def on_term(_signum: int, _frame: Any) -> None:
        # uvicorn re-raises the SIGTERM it captured once it has shut down;
        # leave through Python so the probes and the profile get written.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    profiler = None
    if os.environ.get(PROFILE_ENV):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return cli_main(argv)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ[PROFILE_ENV])
        if lag:
            out.write(json.dumps({"lag": lag}) + "\n")
        out.close()


# --------------------------------------------------------------------------
# processes: the gateway, the workers; Janus's admin API


def start_gateway(janus: Any, port: int, log_path: Path, probes: Path | None,
                  log_level: str | None, extra_env: list[str] | None,
                  bufferkf: bool = False, profile: Path | None = None) -> GatewayProcess:
    """``whip-gateway serve`` on the bench's Janus; with probes, through ``serve_probed``."""
    env = gateway_env()
    env["WHIP_GATEWAY_JANUS"] = janus_nodes_env(janus.cfg)
    for key, value in RATE_LIMITS_OFF.items():  # every viewer comes from 127.0.0.1
        env.setdefault(key, value)
    apply_env_items(env, extra_env)
    if bufferkf:  # the gateway's own setting: Janus keeps each mountpoint's last key frame
        env["WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME"] = "true"
    if profile is not None:
        env[PROFILE_ENV] = str(profile)
    if probes is not None:
        env[PROBE_ENV] = str(probes)
        base = [sys.executable, str(Path(__file__).resolve()), "--probed-gateway"]
    else:
        base = gateway_command()
    return GatewayProcess(base, env, log_path, port, ["--log-level", log_level] if log_level else [])


@dataclass
class NativeFeed:
    """The bench's own mountpoint, fed by an rtp_forward from the gateway's room."""

    admin: JanusAdmin
    bufferkf: bool = False
    room: int = 0
    publisher_id: int = 0
    mountpoint: int = 0
    forwarders: list[int] = field(default_factory=list)
    setup_ms: Json = field(default_factory=dict)

    def create(self, mids: dict[str, str]) -> None:
        t = now()
        rooms = self.admin.plugin(VIDEOROOM, {"request": "list"}).get("list", [])
        if len(rooms) != 1:
            raise BenchError(f"expected the gateway's one room, found {rooms}")
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
                reply = self.admin.plugin(STREAMING, {
                    "request": "create", "type": "rtp", "id": mountpoint, "permanent": False,
                    "is_private": True, "description": "whep_ttff native",
                    "media": [
                        {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
                        {"type": "video", "mid": "v", "port": 0, "rtcpport": 0, "pt": 96,
                         "codec": "vp8", **({"bufferkf": True} if self.bufferkf else {})},
                    ]})
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
        streams = [{"mid": mids["audio"], "port": int(ports["a"]["port"])},
                   {"mid": mids["video"], "port": int(ports["v"]["port"]),
                    "rtcp_port": int(ports["v"]["rtcp_port"])}]
        reply = self.admin.plugin(VIDEOROOM, {
            "request": "rtp_forward", "room": self.room, "publisher_id": self.publisher_id,
            "host": "127.0.0.1", "streams": streams})
        self.forwarders = [int(f["stream_id"]) for f in reply.get("forwarders", [])]
        self.setup_ms["rtp_forward"] = (now() - t) * 1000
        if len(self.forwarders) != 2:
            raise BenchError(f"rtp_forward made {reply.get('forwarders')}")

    def age_ms(self) -> Json:
        info = self.admin.plugin(STREAMING, {"request": "info", "id": self.mountpoint})
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
                self.admin.plugin(STREAMING, {"request": "destroy", "id": self.mountpoint,
                                              "permanent": False})
            except Exception as exc:
                errors.append(f"destroy mountpoint: {exc!r}")
            self.mountpoint = 0
        return errors


class Workers:
    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters; the netns is inherited
        self.conns = []
        self.procs = []
        for index in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, index), daemon=True,
                               name=f"whep-ttff-worker-{index}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def gather(self, timeout: float, conns: list[Any] | None = None) -> list[Json]:
        replies = await asyncio.gather(*(asyncio.to_thread(recv, c, timeout)
                                         for c in conns or self.conns))
        for reply in replies:
            if reply.get("phase") == "error":
                raise BenchError(reply["error"])
        return replies

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send({"op": "stop"})
            except (OSError, EOFError):
                pass
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)

    def kill_now(self) -> None:
        for proc in self.procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGKILL)


# --------------------------------------------------------------------------
# the run (main process: the publisher and the orchestration)


PUBLISHER_PLIS: list[float] = []


def install_publisher_probe() -> None:
    """Note when the publisher is asked for a key frame (PLI/FIR from Janus)."""
    from aiortc.rtcrtpsender import RTCRtpSender

    send_keyframe = RTCRtpSender._send_keyframe

    def probed(self: Any) -> None:
        PUBLISHER_PLIS.append(now())
        send_keyframe(self)

    RTCRtpSender._send_keyframe = probed  # type: ignore[method-assign]


async def start_publisher(gateway_url: str, http: httpx.AsyncClient, timeout: float) -> tuple[Any, str, dict[str, str]]:
    from aiortc import RTCSessionDescription

    from tests.publishers import aiortc_publisher

    pc = await aiortc_publisher(video_codec="video/VP8")
    response = await http.post(f"{gateway_url}/whip/{STREAM}", content=pc.localDescription.sdp,
                               headers={"Content-Type": "application/sdp"})
    if response.status_code != 201:
        await pc.close()
        raise BenchError(f"WHIP POST: {response.status_code} {response.text[:300]}")
    location = urljoin(f"{gateway_url}/whip/{STREAM}", response.headers["location"])
    await pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    mids = {t.kind: str(t.mid) for t in pc.getTransceivers()}
    deadline = now() + timeout
    while now() < deadline:
        streams = (await http.get(f"{gateway_url}/api/streams")).json().get("streams", {})
        if (streams.get(STREAM) or {}).get("live"):
            return pc, location, mids
        await asyncio.sleep(0.1)
    raise BenchError(f"the stream did not go live within {timeout} s")


async def keeper_viewer(gateway_url: str, http: httpx.AsyncClient) -> tuple[Viewer, str]:
    """One unmeasured gateway viewer for the whole run, so the PT variant stays up (--warm)."""
    from aiortc import RTCSessionDescription

    viewer = Viewer(ViewerRecord("keeper", -1, 0))
    viewer.pc.addTransceiver("audio", direction="recvonly")
    viewer.pc.addTransceiver("video", direction="recvonly")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
    url = f"{gateway_url}/whep/{STREAM}"
    response = await http.post(url, content=viewer.pc.localDescription.sdp,
                               headers={"Content-Type": "application/sdp"})
    if response.status_code != 201:
        raise BenchError(f"keeper POST: {response.status_code} {response.text[:200]}")
    await viewer.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    await viewer.wait_frame(now() + 10)
    return viewer, urljoin(url, response.headers["location"])


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def require_live(gateway_url: str) -> None:
    """A batch on a dropped publisher measures nothing: stop the run instead."""
    async with httpx.AsyncClient(timeout=5) as http:
        streams = (await http.get(f"{gateway_url}/api/streams")).json().get("streams", {})
    if not (streams.get(STREAM) or {}).get("live"):
        raise BenchError(f"the publisher is no longer live ({streams.get(STREAM)}); the machine "
                         "was probably too busy to keep it sending (publisher_media_timeout)")


async def run_batch(args: argparse.Namespace, side: str, round_no: int, workers: Workers,
                    gateway: GatewayProcess, janus_url: str, mountpoint: int, viewers: int,
                    cpu: CpuMeter) -> Json:
    await require_live(gateway.url)
    counts = split(viewers, len(workers.conns))
    active = [c for c, n in zip(workers.conns, counts) if n]
    base = {"side": side, "round": round_no, "whep_url": f"{gateway.url}/whep/{STREAM}",
            "janus_url": janus_url, "mountpoint": mountpoint,
            "request_timeout": args.request_timeout, "ttff_timeout": args.ttff_timeout}
    for conn, count in zip(workers.conns, counts):
        if count:
            conn.send({**base, "count": count})
    t = now()
    await workers.gather(args.request_timeout * 3 + viewers, active)
    prep_s = now() - t
    go = now() + 0.2
    plis_before = len(PUBLISHER_PLIS)
    cpu0, busy0, wall0 = cpu.read(), machine_busy(), now()
    for conn in active:
        conn.send({"op": "go", "at": go})
    await workers.gather(args.ttff_timeout + 30, active)
    settled = now()
    cpu1, busy1 = cpu.read(), machine_busy()
    hold_from = now() + 0.05
    for conn in active:
        conn.send({"op": "hold", "from": hold_from, "until": hold_from + args.hold})
    replies = await workers.gather(args.hold + args.request_timeout * 2 + 30, active)
    records = [r for reply in replies for r in reply["viewers"]]
    join_wall = settled - wall0
    return {
        "side": side, "round": round_no, "go": go, "prep_s": prep_s,
        "settle_s": settled - go,
        "cpu_cores_join": {k: (cpu1[k] - cpu0[k]) / join_wall for k in cpu0},
        "cpu_s_join": {k: cpu1[k] - cpu0[k] for k in cpu0},
        "other_cores_join": max(busy1 - busy0 - sum(cpu1[k] - cpu0[k] for k in cpu0), 0.0)
        / join_wall,
        "loadavg": os.getloadavg()[0],
        "go_received_ms": [(r["t_go_received"] - go) * 1000 for r in replies if r.get("t_go_received")],
        "woke_ms": [(r["t_woke"] - go) * 1000 for r in replies if r.get("t_woke")],
        "teardown_s": max(r["teardown_s"] for r in replies),
        "teardown_errors": [e for r in replies for e in r["teardown_errors"]],
        "publisher_plis": [p - go for p in PUBLISHER_PLIS[plis_before:]],
        "viewers": records,
    }


def read_probes(path: Path) -> tuple[list[Json], list[tuple[float, float]]]:
    posts: list[Json] = []
    lag: list[tuple[float, float]] = []
    if not path.exists():
        return posts, lag
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "lag" in item:
            lag += [tuple(x) for x in item["lag"]]  # type: ignore[misc]
        else:
            posts.append(item)
    return posts, lag


async def measure(args: argparse.Namespace, janus: Any, gateway: GatewayProcess,
                  workers: Workers, results: Json) -> None:
    cfg = janus.cfg
    admin = JanusAdmin(cfg.admin_url, cfg.admin_secret, cfg.plugin_admin_key)
    http = httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout))
    feed = NativeFeed(admin, bufferkf=args.bufferkf)
    publisher: Any = None
    publisher_url = ""
    keeper: tuple[Viewer, str] | None = None
    cpu = CpuMeter({"janus": janus.proc.pid, "gateway": gateway.proc.pid, "bench": os.getpid(),
                    **{f"worker{i}": p.pid for i, p in enumerate(workers.procs)}})
    try:
        install_publisher_probe()
        publisher, publisher_url, mids = await start_publisher(gateway.url, http, 15)
        print(f"publisher live (mids {mids}); native mountpoint ...", flush=True)
        await asyncio.to_thread(feed.create, mids)
        results["native_setup_ms"] = feed.setup_ms
        await asyncio.sleep(1.0)
        results["native_mountpoint_age_ms"] = await asyncio.to_thread(feed.age_ms)
        if args.warm:
            keeper = await keeper_viewer(gateway.url, http)
        # Warm-up, not recorded: imports, first connections, code paths.
        for side in ("gateway", "native"):
            if args.warmup:
                await run_batch(args, side, -1, workers, gateway, cfg.api_url, feed.mountpoint,
                                args.warmup, cpu)
                await asyncio.sleep(args.gap)
        batches = []
        for r in range(args.rounds):
            order = ("gateway", "native") if r % 4 in (0, 3) else ("native", "gateway")
            for side in order:
                batch = await run_batch(args, side, r, workers, gateway, cfg.api_url,
                                        feed.mountpoint, args.viewers, cpu)
                batches.append(batch)
                zero = "t_post" if side == "gateway" else "t_attach"
                ttff = [(v["t_frame"] - v[zero]) * 1000 for v in batch["viewers"]
                        if v["t_frame"] is not None and v[zero] is not None]
                print(f"round {r} {side:<8}: {len(ttff)}/{len(batch['viewers'])} decoded, TTFF "
                      f"p50 {fmt(percentile(ttff, 50))} p95 {fmt(percentile(ttff, 95))} ms; "
                      f"other processes used {batch['other_cores_join']:.2f} cores meanwhile",
                      flush=True)
                await asyncio.sleep(args.gap)
        results["batches"] = batches
    finally:
        cleanup_errors: list[str] = []
        if keeper is not None:
            await asyncio.gather(http.delete(keeper[1]), return_exceptions=True)
            await keeper[0].close()
        try:
            cleanup_errors += await asyncio.to_thread(feed.destroy)
        except Exception as exc:
            cleanup_errors.append(f"native feed: {exc!r}")
        if publisher is not None:
            try:
                reply = await http.delete(publisher_url)
                if reply.status_code != 200:
                    cleanup_errors.append(f"publisher DELETE: {reply.status_code}")
            except Exception as exc:
                cleanup_errors.append(f"publisher DELETE: {exc!r}")
            await publisher.close()
        await http.aclose()
        results["cleanup_errors"] = cleanup_errors


# --------------------------------------------------------------------------
# analysis and the report


def ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000


def analyse(results: Json, probes: list[Json], lag: list[tuple[float, float]]) -> Json:
    by_session = {p.get("session"): p for p in probes if p.get("session")}
    out: Json = {}
    for side in ("gateway", "native"):
        batches = [b for b in results.get("batches", []) if b["side"] == side]
        recs = [v for b in batches for v in b["viewers"]]
        zero = "t_post" if side == "gateway" else "t_attach"
        done = "t_201" if side == "gateway" else "t_offer"

        def col(a: str, b: str, rows: list[Json] = recs) -> list[float]:
            return [x for x in (ms(r.get(a), r.get(b)) for r in rows) if x is not None]

        ok = [r for r in recs if r["t_frame"] is not None]
        entry: Json = {
            "viewers": len(recs),
            "decoded": len(ok),
            "errors": sorted({r["error"] for r in recs if r["error"]})[:10],
            "signalling": summary(col(zero, done)),
            "ttff": summary(col(zero, "t_frame", ok)),
            "per_round_ttff_p95_ms": [percentile(col(zero, "t_frame", [v for v in b["viewers"]
                                                                       if v["t_frame"]]), 95)
                                      for b in batches],
            "go_lateness": summary(col("t_go", zero)),
            "hold_fps": summary([r["hold_frames"] / max(results["params"]["hold"], 1e-9)
                                 for r in recs]),
            "steps_p50_ms": {},
            "cpu_cores_join": {k: sum(b["cpu_cores_join"][k] for b in batches) / max(len(batches), 1)
                               for k in (batches[0]["cpu_cores_join"] if batches else {})},
            "other_cores_join": [b["other_cores_join"] for b in batches],
            "cpu_ms_per_viewer_join": {
                k: sum(b["cpu_s_join"][k] for b in batches) * 1000 / max(len(recs), 1)
                for k in (batches[0]["cpu_s_join"] if batches else {})},
            "publisher_plis_per_batch": [len(b["publisher_plis"]) for b in batches],
            "first_publisher_pli_ms": [b["publisher_plis"][0] * 1000 if b["publisher_plis"] else None
                                       for b in batches],
            "teardown_s": [b["teardown_s"] for b in batches],
            "teardown_errors": [e for b in batches for e in b["teardown_errors"]][:10],
        }
        steps = [(zero, done, "signalling")]
        if side == "gateway":
            steps += [("t_201", "t_srd", "apply answer"), ("t_srd", "t_connected", "ICE+DTLS")]
            entry["offer_ms"] = summary([r["offer_s"] * 1000 for r in recs if r["offer_s"]])
        else:
            steps += [("t_attach", "t_attached", "attach"), ("t_watch", "t_offer", "watch"),
                      ("t_offer", "t_answer", "aiortc answer"), ("t_answer", "t_started", "start"),
                      ("t_started", "t_connected", "ICE+DTLS")]
        steps += [("t_ice", "t_connected", "DTLS (ICE done->connected)"),
                  ("t_connected", "t_rtp", "connected->1st RTP"),
                  ("t_rtp", "t_kf", "1st RTP->key frame pkt"),
                  ("t_kf", "t_frame", "key frame pkt->decoded"),
                  (zero, "t_connected", "start->connected"),
                  (zero, "t_kf", "start->key frame pkt")]
        for a, b, name in steps:
            values = col(a, b, ok)
            entry["steps_p50_ms"][name] = percentile(values, 50)
            entry.setdefault("steps_p95_ms", {})[name] = percentile(values, 95)
        entry["viewers_waiting_for_keyframe"] = sum(
            1 for r in ok if r["t_kf"] and r["t_rtp"] and r["t_kf"] - r["t_rtp"] > 0.001)
        entry["viewers_sending_pli"] = sum(1 for r in recs if r["plis"])
        ready = "t_srd" if side == "gateway" else "t_answer"
        entry["slow_connect"] = {  # a ~1 s retransmission somewhere in ICE or DTLS
            "over_800ms": sum(1 for r in recs if r.get(ready) and r["t_connected"]
                              and r["t_connected"] - r[ready] > 0.8),
            "of_which_dtls": sum(1 for r in recs if r.get(ready) and r["t_connected"]
                                 and r["t_connected"] - r[ready] > 0.8 and r.get("t_ice")
                                 and r["t_connected"] - r["t_ice"] > 0.5),
            "of": sum(1 for r in recs if r.get(ready) and r["t_connected"])}
        if side == "gateway" and by_session:
            entry["gateway_steps"] = gateway_steps(recs, by_session)
        out[side] = entry
    g, n = out["gateway"], out["native"]
    out["ratio"] = {
        "ttff_p50": g["ttff"]["p50_ms"] / n["ttff"]["p50_ms"] if n["ttff"]["n"] else float("nan"),
        "ttff_p95": g["ttff"]["p95_ms"] / n["ttff"]["p95_ms"] if n["ttff"]["n"] else float("nan"),
        "signalling_p50": g["signalling"]["p50_ms"] / n["signalling"]["p50_ms"]
        if n["signalling"]["n"] else float("nan"),
        "signalling_p95": g["signalling"]["p95_ms"] / n["signalling"]["p95_ms"]
        if n["signalling"]["n"] else float("nan"),
    }
    if lag:
        gw_batches = [b for b in results.get("batches", []) if b["side"] == "gateway"]
        windows = [(b["go"], b["go"] + b["settle_s"]) for b in gw_batches]
        inside = [late * 1000 for t, late in lag if any(a <= t <= z for a, z in windows)]
        out["gateway_loop_lag_during_joins"] = {
            "samples_over_2ms": len(inside), "max_ms": max(inside) if inside else 0.0,
            "sum_ms_per_batch": sum(inside) / max(len(windows), 1)}
    return out


def gateway_steps(recs: list[Json], by_session: dict[str, Json]) -> Json:
    """Per-step times inside the gateway, from its probes, joined by session id."""
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            rows.setdefault(name, []).append(value)

    variant_made = []
    for rec in recs:
        if not rec.get("session"):
            continue
        probe = by_session.get(rec["session"].rsplit("/", 1)[-1])
        if probe is None:
            continue
        add("POST sent -> gateway ASGI call", ms(rec["t_post"], probe["t_asgi"]))
        add("ASGI call -> response start", ms(probe["t_asgi"], probe.get("t_response")))
        add("response start -> 201 at viewer", ms(probe.get("t_response"), rec["t_201"]))
        steps = {}
        for s in probe["steps"]:
            steps.setdefault(s["name"], s)
        view = steps.get("view")
        add("ASGI call -> Egress.view", ms(probe["t_asgi"], view and view["t0"]))
        for name in ("choose_codecs", "variant", "attach", "watch", "bridge", "start"):
            s = steps.get(name)
            add(name, ms(s["t0"], s["t1"]) if s else None)
        if "mountpoint_create" in steps:
            variant_made.append({k: ms(steps[k]["t0"], steps[k]["t1"])
                                 for k in ("variant", "mountpoint_create", "rtp_forward")
                                 if k in steps})
        for request in ("watch", "start"):
            s = steps.get(f"post:{request}")
            if s:
                add(f"{request}: POST -> ack", ms(s["t0"], s["t1"]))
                add(f"{request}: ack -> event at pump", ms(s["t1"], s.get("t_event")))
                outer = steps.get(request)
                if outer and s.get("t_event"):
                    add(f"{request}: pump -> caller resumes", ms(s["t_event"], outer["t1"]))
        add("view end -> response start", ms(view and view["t1"], probe.get("t_response")))
    return {"p50_ms": {k: percentile(v, 50) for k, v in rows.items()},
            "p95_ms": {k: percentile(v, 95) for k, v in rows.items()},
            "max_ms": {k: max(v) for k, v in rows.items()},
            "variant_created": variant_made}


def report(results: Json) -> str:
    a = results["analysis"]
    m = results["machine"]
    p = results["params"]
    out = [f"{machine_line(m)}, aiortc {m['aiortc']}",
           f"run: {p['rounds']} rounds x {p['viewers']} viewers per side, in {p['procs']} worker "
           f"process(es); gateway variant {'warm (--warm)' if p['warm'] else 'cold each batch'}; "
           f"probes {'on' if p['probes'] else 'off'}"
           f"{'; Janus ICE-lite' if p.get('ice_lite') else ''}"
           f"{'; gateway env ' + ' '.join(p['gateway_env']) if p.get('gateway_env') else ''}"
           f"{'; EXPERIMENT bufferkf on both sides' if p.get('bufferkf') else ''}; "
           f"{results.get('elapsed_s', 0):.1f} s", ""]
    g, n = a["gateway"], a["native"]
    out.append(f"{'(ms)':<30}{'gateway':>24}{'native':>24}{'ratio p50/p95':>16}")
    for label, key in (("signalling p50/p95/max", "signalling"), ("TTFF p50/p95/max", "ttff")):
        gs, ns = g[key], n[key]
        out.append(f"{label:<30}"
                   f"{fmt(gs['p50_ms']) + '/' + fmt(gs['p95_ms']) + '/' + fmt(gs['max_ms']):>24}"
                   f"{fmt(ns['p50_ms']) + '/' + fmt(ns['p95_ms']) + '/' + fmt(ns['max_ms']):>24}"
                   f"{a['ratio'][key + '_p50']:>8.2f}{a['ratio'][key + '_p95']:>8.2f}")
    out.append(f"{'decoded (viewers with frames)':<30}{str(g['decoded']) + '/' + str(g['viewers']):>24}"
               f"{str(n['decoded']) + '/' + str(n['viewers']):>24}")
    out.append(f"{'fps while all decode p50/min':<30}"
               f"{fmt(g['hold_fps']['p50_ms']) + '/' + fmt(g['hold_fps']['min_ms']):>24}"
               f"{fmt(n['hold_fps']['p50_ms']) + '/' + fmt(n['hold_fps']['min_ms']):>24}")
    out.append(f"{'TTFF p95 per round':<30}{' '.join(fmt(x) for x in g['per_round_ttff_p95_ms']):>24}"
               f"{' '.join(fmt(x) for x in n['per_round_ttff_p95_ms']):>24}")
    out.append("")
    out.append("where the time goes, viewer side, p50 (p95) ms:")
    for side, entry in (("gateway", g), ("native", n)):
        parts = [f"{k} {fmt(v)} ({fmt(entry['steps_p95_ms'][k])})"
                 for k, v in entry["steps_p50_ms"].items()]
        out.append(f"  {side}: " + "; ".join(parts))
        slow = entry["slow_connect"]
        out.append(f"    ICE+DTLS over 800 ms: {slow['over_800ms']}/{slow['of']} "
                   f"(of which DTLS over 500 ms: {slow['of_which_dtls']})")
        out.append(f"    waited for a key frame after 1st RTP: {entry['viewers_waiting_for_keyframe']}"
                   f"/{entry['decoded']}; viewers that sent PLI: {entry['viewers_sending_pli']}; "
                   f"PLIs reaching the publisher per batch: {entry['publisher_plis_per_batch']}, "
                   f"first at +{[fmt(x) if x is not None else '-' for x in entry['first_publisher_pli_ms']]} ms")
        cores = ", ".join(f"{k} {v:.2f}" for k, v in entry["cpu_cores_join"].items())
        others = " ".join(f"{x:.2f}" for x in entry["other_cores_join"])
        out.append(f"    CPU cores used while joining: {cores}; other processes per batch: {others}")
        per = ", ".join(f"{k} {v:.1f}" for k, v in entry["cpu_ms_per_viewer_join"].items())
        out.append(f"    CPU ms per viewer (go -> all decoded): {per}")
    if g.get("offer_ms"):
        out.append(f"  gateway viewers' offer (createOffer+gathering, before the POST): p50 "
                   f"{fmt(g['offer_ms']['p50_ms'])} ms, p95 {fmt(g['offer_ms']['p95_ms'])} ms")
    gs = g.get("gateway_steps")
    if gs:
        out.append("inside the gateway (probes), p50 / p95 / max ms:")
        for k, v in gs["p50_ms"].items():
            out.append(f"  {k:<36}{fmt(v):>6}{fmt(gs['p95_ms'][k]):>7}{fmt(gs['max_ms'][k]):>7}")
        for made in gs["variant_created"]:
            out.append("  variant made by the first viewer: "
                       + ", ".join(f"{k} {fmt(v)}" for k, v in made.items()))
    lag = a.get("gateway_loop_lag_during_joins")
    if lag:
        out.append(f"gateway event-loop lag while joining: {lag['samples_over_2ms']} ticks late by "
                   f">2 ms, max {lag['max_ms']:.0f} ms, {lag['sum_ms_per_batch']:.0f} ms late per batch")
    out.append("")
    ok = g["ttff"]["p95_ms"] <= TARGET_GATEWAY_TTFF_P95_MS
    out.append(f"target gateway TTFF p95 <= {TARGET_GATEWAY_TTFF_P95_MS:.0f} ms: "
               f"{fmt(g['ttff']['p95_ms'])} ms  {'PASS' if ok else 'MISS'}")
    errors = g["errors"] + n["errors"] + g["teardown_errors"] + n["teardown_errors"]
    errors += results.get("cleanup_errors", [])
    out.append(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--viewers", type=int, default=50, help="viewers per batch (joining at once)")
    parser.add_argument("--procs", type=int, default=2, help="worker processes the viewers run in")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each has a gateway and a native batch")
    parser.add_argument("--json", type=Path, help="write every figure and sample here")
    parser.add_argument("--hold", type=float, default=2.0,
                        help="seconds every viewer keeps decoding after the batch settled (fps check)")
    parser.add_argument("--gap", type=float, default=4.0,
                        help="pause between batches; above the gateway's 3 s mountpoint grace, so "
                             "each gateway batch makes its PT variant anew unless --warm")
    parser.add_argument("--warm", action="store_true",
                        help="keep one unmeasured gateway viewer all along, so the variant stays up")
    parser.add_argument("--warmup", type=int, default=2, help="viewers in an unrecorded batch per side first")
    parser.add_argument("--ttff-timeout", type=float, default=10.0, help="per viewer, from the go")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="per HTTP request")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="cap on the whole run")
    parser.add_argument("--no-probes", dest="probes", action="store_false",
                        help="run plain whip-gateway serve, without the timing wrappers")
    parser.add_argument("--bufferkf", action="store_true",
                        help="experiment: video mountpoints keep the last key frame for new viewers "
                             "(Janus 'bufferkf'), the bench's own and, through the probes, the "
                             "gateway's; needs the probes")
    parser.add_argument("--gateway-profile", type=Path, metavar="FILE",
                        help="run the (probed) gateway under cProfile, write the stats to FILE and "
                             "print its top functions; slows the gateway down")
    parser.add_argument("--gateway-log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the gateway only (PYTHONPATH is prepended), "
                             "e.g. WHIP_GATEWAY_MOUNTPOINT_GRACE=30; repeatable")
    parser.add_argument("--ice-lite", action="store_true",
                        help="run Janus in ICE-lite mode (no ICE role conflict on bridged viewers)")
    parser.add_argument("--janus-event-loops", type=int, default=0, help="janus.jcfg event_loops")
    parser.add_argument("--keep-logs", type=Path, help="copy the gateway, Janus and probe logs here")
    args = parser.parse_args(argv)
    for name in ("viewers", "procs", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.gateway_profile and not args.probes:
        parser.error("--gateway-profile runs through the probes; drop --no-probes")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--probed-gateway"]:
        return serve_probed(argv[1:])
    args = parse_args(argv)
    from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
    from tests.sandbox import INTERFACE

    if not enter_netns("whep_ttff"):
        return 2

    janus: Any = None
    gateway: GatewayProcess | None = None
    workers: Workers | None = None
    workdir = Path(tempfile.mkdtemp(prefix="whep-ttff-"))
    probes = workdir / "probes.jsonl" if args.probes else None

    def kill_children() -> None:
        if workers is not None:
            workers.kill_now()
        if gateway is not None:
            gateway.kill_now()
        if janus is not None and janus.proc is not None and janus.proc.poll() is None:
            janus.proc.kill()

    install_hard_cap("whep_ttff", args.max_seconds + 90, kill_children)
    results: Json = {"params": params_of(args)}
    started = now()

    def run() -> None:
        nonlocal janus, gateway, workers
        workers = Workers(args.procs)  # spawned early: they import aiortc meanwhile
        janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, ice_lite=args.ice_lite,
                                                event_loops=args.janus_event_loops))
        janus.start()
        janus_info = httpx.get(f"{janus.cfg.api_url}/info", timeout=5).json()
        gateway = start_gateway(janus, free_port(), workdir / "gateway.log", probes,
                                args.gateway_log_level, args.gateway_env, args.bufferkf,
                                args.gateway_profile)
        results["gateway_health"] = gateway.wait_healthy(30)
        results["gateway_command"] = gateway.command
        machine = machine_info(janus_info)
        machine["aiortc"] = machine["packages"]["aiortc"]
        results["machine"] = machine
        print(f"Janus {janus_info.get('version_string')}; gateway pid {gateway.proc.pid}; "
              f"{args.procs} viewer process(es); measuring ...", flush=True)
        run_capped(lambda: measure(args, janus, gateway, workers, results),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (now() - started))

    status = 1
    try:
        status, _ = guarded("whep_ttff", run, args.max_seconds,
                            lambda: gateway.log_tail() if gateway is not None else "")
    finally:
        if workers is not None:
            workers.stop()
        if gateway is not None and janus is not None and janus.running():
            # The gateway drops its variants after a grace period; let it, then look.
            time.sleep(3.5)
            try:
                admin = JanusAdmin(janus.cfg.admin_url, janus.cfg.admin_secret, janus.cfg.plugin_admin_key)
                results["leftovers_gateway_up"] = admin.leftovers()
            except Exception as exc:
                print(f"whep_ttff: leak check failed: {exc!r}", file=sys.stderr)
        if gateway is not None:
            results["gateway_exit"] = gateway.stop(15.0)
        if janus is not None:
            if janus.running():
                try:
                    admin = JanusAdmin(janus.cfg.admin_url, janus.cfg.admin_secret,
                                  janus.cfg.plugin_admin_key)
                    results["leftovers"] = admin.leftovers()
                except Exception as exc:
                    print(f"whep_ttff: leak check failed: {exc!r}", file=sys.stderr)
                    status = status or 1
            keep_logs(args.keep_logs, (janus.log_path, workdir / "gateway.log",
                                       workdir / "probes.jsonl"))
            janus.stop()
        signal.alarm(0)
    results["elapsed_s"] = now() - started
    if status == 0:
        posts, lag = read_probes(probes) if probes else ([], [])
        results["analysis"] = analyse(results, posts, lag)
        print()
        print(report(results))
    if args.gateway_profile and args.gateway_profile.exists():
        import io
        import pstats

        text = io.StringIO()
        stats = pstats.Stats(str(args.gateway_profile), stream=text)
        stats.sort_stats("tottime").print_stats(25)
        print("\ngateway profile (whole run, by own time):")
        print("\n".join(text.getvalue().splitlines()[:60]))
    shutil.rmtree(workdir, ignore_errors=True)
    during = results.get("leftovers_gateway_up")
    if during is not None:
        print(f"with the gateway still up (after its grace period): {during['sessions']} sessions, "
              f"{during['handles']} handles (expected 1 and 2: the gateway's own), "
              f"{during['rooms']} rooms, {during['mountpoints']} mountpoints")
    status = report_leftovers(results, ("sessions", "handles", "rooms", "mountpoints"), status)
    write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
