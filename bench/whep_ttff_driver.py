"""whep_ttff's driver: the processes, the publisher, the native feed and the batches.

The main process starts Janus and the gateway (through bench/probes.py
unless ``--no-probes``), publishes one aiortc stream by WHIP, makes the
bench's own mountpoint for the other side (``native``, or a WHEP peer such as
janus-whep-server, whose endpoint serves it), and runs each batch: it tells
the worker processes (``whep_ttff_scenario``) to get ready, gives them one
go instant, waits until every viewer has a frame or gave up, lets them hold,
and collects their records with the CPU each process used meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import (
    BenchError,
    CpuMeter,
    GatewayProcess,
    Json,
    machine_busy,
    percentile,
    start_on_janus,
)
from janus_direct import admin_of
from whep_ttff_report import fmt
from whep_ttff_scenario import (
    STREAM,
    Viewer,
    ViewerRecord,
    now,
    recv,
    worker_main,
    zero_field,
)
from whep_ttff_sides import NativeFeed, PeerGone, Side, other_side

# --------------------------------------------------------------------------
# processes: the gateway, the workers; Janus's admin API


def start_gateway(janus: Any, port: int, log_path: Path, probes: Path | None,
                  log_level: str | None, extra_env: list[str] | None,
                  bufferkf: bool = False, profile: Path | None = None) -> GatewayProcess:
    """``whip-gateway serve`` on the bench's Janus; with probes, through bench/probes.py."""
    # --bufferkf: the gateway's own setting, Janus keeps each mountpoint's last key frame.
    settings = {"WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME": "true"} if bufferkf else {}
    return start_on_janus(janus.cfg, port, log_path, log_level=log_level, extra_env=extra_env,
                          settings=settings, records=probes, profile=profile)


class Workers:
    """Viewer processes, each running ``target(conn, index)`` (whep_ttff's by default;
    bench/webinar.py passes its own)."""

    def __init__(self, count: int, target: Any = worker_main, name: str = "whep-ttff-worker") -> None:
        ctx = multiprocessing.get_context("spawn")  # fresh interpreters; the netns is inherited
        self.conns = []
        self.procs = []
        for index in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(child, index), daemon=True,
                               name=f"{name}-{index}")
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


async def keeper_viewer(url: str, http: httpx.AsyncClient) -> tuple[Viewer, str]:
    """One unmeasured WHEP viewer of ``url`` for the whole run (--warm): on the gateway,
    the PT variant stays up; a peer gets one too, so both sides carry the same."""
    from aiortc import RTCSessionDescription

    viewer = Viewer(ViewerRecord("keeper", -1, 0))
    viewer.pc.addTransceiver("audio", direction="recvonly")
    viewer.pc.addTransceiver("video", direction="recvonly")
    await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
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


async def run_batch(args: argparse.Namespace, side: Side, round_no: int, workers: Workers,
                    gateway: GatewayProcess, viewers: int, cpu: CpuMeter) -> Json:
    await require_live(gateway.url)
    side.check_alive()
    counts = split(viewers, len(workers.conns))
    active = [c for c, n in zip(workers.conns, counts) if n]
    base = {"side": side.name, "round": round_no, "whep_url": side.whep_url,
            "janus_url": side.janus_url, "mountpoint": side.mountpoint,
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
        "side": side.name, "round": round_no, "go": go, "prep_s": prep_s,
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


async def measure(args: argparse.Namespace, janus: Any, gateway: GatewayProcess,
                  workers: Workers, results: Json, peer: Any = None) -> None:
    """Warm-up batches (gateway first: a peer's mountpoint copies its variant), then ABBA."""
    cfg = janus.cfg
    admin = admin_of(cfg)
    http = httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout))
    feed = NativeFeed(admin, bufferkf=args.bufferkf)
    publisher: Any = None
    publisher_url = ""
    keepers: list[tuple[Viewer, str]] = []
    pids = {"janus": janus.proc.pid, "gateway": gateway.proc.pid, "bench": os.getpid(),
            **({"peer": peer.proc.pid} if peer is not None else {}),
            **{f"worker{i}": p.pid for i, p in enumerate(workers.procs)}}
    cpu = CpuMeter(pids)
    ours = Side("gateway", whep_url=f"{gateway.url}/whep/{STREAM}")
    try:
        install_publisher_probe()
        publisher, publisher_url, mids = await start_publisher(gateway.url, http, 15)
        print(f"publisher live (mids {mids}); warm-up and the {args.against} side ...", flush=True)
        if args.warm:
            keepers.append(await keeper_viewer(ours.whep_url, http))
        # Warm-up, not recorded: imports, first connections, code paths, the gateway's variant.
        if args.warmup:
            await run_batch(args, ours, -1, workers, gateway, args.warmup, cpu)
            await asyncio.sleep(args.gap)
        setup: Json = {}
        other = await asyncio.to_thread(other_side, args, feed, mids, cfg.api_url, peer, setup)
        results["native_setup_ms"] = feed.setup_ms
        results["setup"] = setup
        await asyncio.sleep(1.0)
        results["native_mountpoint_age_ms"] = await asyncio.to_thread(feed.age_ms)
        if args.warm and other.whep_url:
            keepers.append(await keeper_viewer(other.whep_url, http))
        if args.warmup:
            await run_batch(args, other, -1, workers, gateway, args.warmup, cpu)
            await asyncio.sleep(args.gap)
        batches: list[Json] = []
        results["batches"] = batches
        try:
            for r in range(args.rounds):
                for side in (ours, other) if r % 4 in (0, 3) else (other, ours):
                    batch = await run_batch(args, side, r, workers, gateway, args.viewers, cpu)
                    batches.append(batch)
                    print_batch(batch)
                    await asyncio.sleep(args.gap)
        except PeerGone as exc:
            results["peer_finding"] = str(exc)
            print(f"FINDING: {exc}", flush=True)
    finally:
        cleanup_errors: list[str] = []
        for keeper in keepers:
            await asyncio.gather(http.delete(keeper[1]), return_exceptions=True)
            await keeper[0].close()
        if peer is not None and peer.died() is None:
            try:
                results["peer_subscribers_left"] = len(await asyncio.to_thread(peer.subscribers))
                await asyncio.to_thread(peer.destroy_endpoint, STREAM)
            except Exception as exc:
                cleanup_errors.append(f"peer endpoint: {exc!r}")
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


def print_batch(batch: Json) -> None:
    zero = zero_field(batch["side"])
    ttff = [(v["t_frame"] - v[zero]) * 1000 for v in batch["viewers"]
            if v["t_frame"] is not None and v[zero] is not None]
    print(f"round {batch['round']} {batch['side']:<8}: {len(ttff)}/{len(batch['viewers'])} "
          f"decoded, TTFF p50 {fmt(percentile(ttff, 50))} p95 {fmt(percentile(ttff, 95))} ms; "
          f"other processes used {batch['other_cores_join']:.2f} cores meanwhile", flush=True)
