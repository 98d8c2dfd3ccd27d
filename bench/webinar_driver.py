"""webinar's driver: the Janus nodes, the gateway, the publisher, the two ramps.

It starts one ingest Janus and K ICE-lite egress Janus (``ManagedJanus``,
each with its own port ranges and two event loops, as a deployment would),
and the gateway as its own process on a TOML node list naming them (the
documented way to run on your own nodes).  One aiortc publisher publishes by
WHIP.  Then the same ramp runs twice, viewers joining at ``--rate`` per
second: through the gateway, then directly on Janus (the bench's own
mountpoint on each egress node, fed by ``rtp_forward`` from the gateway's
room).  After each ramp settles, every viewer holds for ``--hold`` seconds:
the window in which packets are counted against what the publisher sent.
A sampler reads the CPU and RSS of every process once a second.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import (
    RATE_LIMITS_OFF,
    BenchError,
    GatewayProcess,
    Json,
    cpu_seconds,
    gateway_env,
    machine_busy,
    rss_kb,
    rss_threads,
)
from janus_direct import JanusAdmin, admin_of
from webinar_scenario import PROFILES, STREAM, now, video_track
from whep_ttff_driver import Workers
from whep_ttff_sides import NativeFeed

PORTS_PER_NODE = 3000


# --------------------------------------------------------------------------
# processes


def start_nodes(egress: int, interface: str, event_loops: int = 2) -> list[Any]:
    """Ingest first, then ``egress`` ICE-lite egress nodes; distinct port ranges.

    ``event_loops`` is the egress nodes' (bench/egress_cost.py varies it; 0 is
    Janus's own default, a loop thread per handle); the ingest keeps two.
    """
    from gateway.janus.process import JanusProcessConfig, ManagedJanus

    nodes = []
    for i in range(egress + 1):
        base = 20000 + i * PORTS_PER_NODE
        janus = ManagedJanus(JanusProcessConfig(
            ice_enforce_list=interface, ice_lite=i > 0,
            event_loops=event_loops if i > 0 else 2, debug_level=3, websockets=True,
            rtp_port_range=f"{base}-{base + 2499}",
            streaming_port_range=f"{base + 2500}-{base + PORTS_PER_NODE - 1}"))
        janus.start()
        nodes.append(janus)
    return nodes


def gateway_toml(nodes: list[Any], port: int) -> str:
    """The node list as an operator writes it (README "Configuration")."""
    lines = [f"port = {port}", 'log_level = "warning"', ""]
    for i, janus in enumerate(nodes):
        cfg = janus.cfg
        lines += ["[[janus]]", f'name = "{"ingest" if i == 0 else f"egress{i - 1}"}"',
                  f'role = "{"ingest" if i == 0 else "egress"}"', f'url = "{cfg.api_url}"',
                  f'admin_url = "{cfg.admin_url}"', f'admin_secret = "{cfg.admin_secret}"',
                  f'plugin_admin_key = "{cfg.plugin_admin_key}"',
                  *([f'ws_url = "{cfg.ws_url}"'] if cfg.websockets else []), ""]
    return "\n".join(lines)


def start_gateway(nodes: list[Any], port: int, workdir: Path,
                  extra_env: list[str] | None, profile: Path | None = None) -> GatewayProcess:
    """The gateway on ``nodes``; with ``profile``, under cProfile (bench/probes.py)."""
    from harness import apply_env_items
    from probes import gateway_base

    toml = workdir / "gateway.toml"
    toml.write_text(gateway_toml(nodes, port))
    env = gateway_env(clean=True)
    env.update(RATE_LIMITS_OFF)
    apply_env_items(env, extra_env)
    return GatewayProcess(gateway_base(env, profile=profile), env, workdir / "gateway.log", port,
                          ["--config", str(toml)])


class Sampler:
    """Once a second: CPU seconds of each process, the machine's busy time, gateway RSS,
    and each Janus's RSS and thread count (what event_loops and mountpoint threads change)."""

    def __init__(self, pids: dict[str, int], gateway_pid: int) -> None:
        self.pids, self.gateway_pid = pids, gateway_pid
        self.samples: list[Json] = []

    def sample(self) -> Json:
        row = {"t": now(), "busy": machine_busy(),
               "cpu": {name: cpu_seconds(pid) for name, pid in self.pids.items()}}
        try:
            row["rss_kb"] = rss_kb(self.gateway_pid)
        except (OSError, RuntimeError):
            row["rss_kb"] = float("nan")
        row["janus"] = {name: rss_threads(pid) for name, pid in self.pids.items()
                        if name.startswith(("ingest", "egress"))}
        self.samples.append(row)
        return row

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(1.0)


# --------------------------------------------------------------------------
# the publisher


async def start_publisher(gateway_url: str, profile: Json, timeout: float) -> tuple[Any, str, dict[str, str]]:
    """aiortc publishing the profile by WHIP; returns once the gateway says live."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from gateway.clients.media import ToneTrack
    from gateway.clients.whip import prefer_codec

    install_sent_log()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN lookup (no network here)
    if "audio" in profile["kinds"]:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    pc.addTransceiver(video_track(profile), direction="sendonly")
    prefer_codec(pc, "video", "video/VP8")
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.post(f"{gateway_url}/whip/{STREAM}", content=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"})
        if reply.status_code != 201:
            await pc.close()
            raise BenchError(f"WHIP POST: {reply.status_code} {reply.text[:300]}")
        location = urljoin(f"{gateway_url}/whip/{STREAM}", reply.headers["location"])
        await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
        deadline = now() + timeout
        while now() < deadline:
            streams = (await http.get(f"{gateway_url}/api/streams")).json().get("streams", {})
            if (streams.get(STREAM) or {}).get("live"):
                mids = {t.kind: str(t.mid) for t in pc.getTransceivers()}
                return pc, location, mids
            await asyncio.sleep(0.2)
    raise BenchError(f"the stream did not go live within {timeout} s")


SENT: list[tuple[float, str, int]] = []  # (when, kind, RTP packets) per frame the publisher sent


def install_sent_log() -> None:
    """Log when each frame leaves the publisher and in how many packets.

    The window's "sent" is then counted by time, like the viewers count
    theirs; reading aiortc's counters at the window's edges would be off by
    however late a busy main process got round to it.
    """
    from aiortc.rtcrtpsender import RTCRtpSender

    if getattr(RTCRtpSender, "_bench_sent_log", False):  # once per process: a publisher per
        return  # configuration (bench/egress_cost.py) must not wrap it twice, double-counting
    RTCRtpSender._bench_sent_log = True  # type: ignore[attr-defined]
    next_frame = RTCRtpSender._next_encoded_frame

    async def logged(self: Any, codec: Any) -> Any:
        frame = await next_frame(self, codec)
        if frame is not None:
            SENT.append((now(), self.kind, len(frame.payloads)))
        return frame

    RTCRtpSender._next_encoded_frame = logged  # type: ignore[method-assign]


def sent_between(t0: float, t1: float) -> dict[str, int]:
    out: dict[str, int] = {}
    for t, kind, count in SENT:
        if t0 <= t <= t1:
            out[kind] = out.get(kind, 0) + count
    return out


def handles_per_node(admins: list[JanusAdmin]) -> list[int]:
    """Plugin handles on each egress node (viewers, plus the fixed control ones)."""
    def handles(admin: JanusAdmin, session: int) -> int:
        try:
            return len(admin.call(f"/{session}", {"janus": "list_handles"}).get("handles", []))
        except BenchError:  # 458: gone between the two calls
            return 0

    return [sum(handles(admin, s) for s in admin.call("", {"janus": "list_sessions"})
                .get("sessions", [])) for admin in admins]


# --------------------------------------------------------------------------
# one side's ramp


async def run_side(args: argparse.Namespace, side: str, workers: Workers, gateway_url: str,
                   feeds: list[NativeFeed], egress: list[Any], publisher: Any,
                   sampler: Sampler, progress: Any) -> Json:
    """N viewers join at ``--rate``/s (round robin over the workers), settle, hold, leave."""
    profile = PROFILES[args.profile]
    admins = [admin_of(j.cfg) for j in egress]
    handles0 = await asyncio.to_thread(handles_per_node, admins)
    t0 = now() + 1.0
    decoders = args.decoders if profile["live"] else 0  # only the light profile has the barcode
    schedule = [(i, t0 + i / args.rate, i < decoders) for i in range(args.viewers)]
    shares = [schedule[w::len(workers.conns)] for w in range(len(workers.conns))]
    base = {"side": side, "kinds": profile["kinds"], "request_timeout": args.request_timeout,
            "whep_url": f"{gateway_url}/whep/{STREAM}",
            "janus_urls": [j.cfg.api_url for j in egress],
            "mountpoints": [f.mountpoint for f in feeds]}
    active = [(c, share) for c, share in zip(workers.conns, shares) if share]
    for conn, share in active:
        conn.send({**base, "joins": share})
    task = progress.add_task(f"{side:>7} ramp", total=args.viewers)
    last_join = schedule[-1][1]
    state = {id(c): {"started": 0, "first": 0, "failed": 0} for c, _ in active}
    while True:
        await asyncio.sleep(0.5)
        for conn, _ in active:
            while conn.poll():
                msg = conn.recv()
                if msg.get("phase") == "error":
                    raise BenchError(msg["error"])
                state[id(conn)] = msg
        first = sum(s["first"] for s in state.values())
        failed = sum(s["failed"] for s in state.values())
        progress.update(task, completed=first + failed,
                        description=f"{side:>7} ramp: {first} receiving, {failed} failed")
        if first + failed >= args.viewers or now() > last_join + args.first_timeout:
            break
    settled = now()
    progress.remove_task(task)
    hold_from = now() + 0.5
    hold_until = hold_from + args.hold
    for conn, _ in active:
        conn.send({"op": "hold", "from": hold_from, "until": hold_until})
    await asyncio.sleep(max(hold_from - now(), 0))
    hold_task = progress.add_task(f"{side:>7} hold", total=args.hold)
    handles1: list[int] = []
    while now() < hold_until:
        await asyncio.sleep(min(0.5, max(hold_until - now(), 0)))
        progress.update(hold_task, completed=min(now() - hold_from, args.hold))
        if not handles1 and now() > hold_from + args.hold / 2:  # the viewers leave at the end
            handles1 = await asyncio.to_thread(handles_per_node, admins)
    progress.remove_task(hold_task)
    replies: list[Json] = []
    for conn, _ in active:
        while True:
            msg = await asyncio.to_thread(conn.recv)
            if msg.get("phase") == "error":
                raise BenchError(msg["error"])
            if msg.get("phase") == "done":
                replies.append(msg)
                break
    return {"side": side, "t0": t0, "last_join": last_join, "settled": settled,
            "hold": [hold_from, hold_until],
            "sent": sent_between(hold_from, hold_until),
            # Direct viewers know their node; the gateway's are counted on the nodes.
            "viewers_per_node": [b - a for a, b in zip(handles0, handles1)] if side == "gateway"
            else [sum(1 for r in replies for v in r["viewers"] if v["node"] == k)
                  for k in range(len(egress))],
            "teardown_s": max(r["teardown_s"] for r in replies),
            "teardown_errors": [e for r in replies for e in r["teardown_errors"]],
            "viewers": sorted((v for r in replies for v in r["viewers"]), key=lambda v: v["index"])}


async def measure(args: argparse.Namespace, nodes: list[Any], gateway: GatewayProcess,
                  workers: Workers, results: Json,
                  sides_run: tuple[str, ...] = ("gateway", "direct")) -> None:
    """Publisher, then the gateway ramp, then the direct ramp; the sampler all along.

    ``sides_run=("gateway",)`` skips the direct ramp (bench/egress_cost.py).
    """
    from rich.progress import BarColumn, Progress, TimeElapsedColumn

    profile = PROFILES[args.profile]
    ingest, egress = nodes[0], nodes[1:]
    pids = {"gateway": gateway.proc.pid, "ingest": ingest.proc.pid,
            **{f"egress{i}": j.proc.pid for i, j in enumerate(egress)},
            **{f"worker{i}": p.pid for i, p in enumerate(workers.procs)}, "bench": os.getpid()}
    sampler = Sampler(pids, gateway.proc.pid)
    sampling = asyncio.ensure_future(sampler.run())
    publisher: Any = None
    location = ""
    feeds: list[NativeFeed] = []
    try:
        publisher, location, mids = await start_publisher(gateway.url, profile, 20)
        results["mids"] = mids
        await asyncio.sleep(2.0)  # idle baseline: what the nodes cost with no viewer
        results["idle"] = [sampler.samples[-1]["t"], now()]
        await asyncio.sleep(2.0)
        results["idle"][1] = now()
        sides = []
        with Progress("[progress.description]{task.description}", BarColumn(),
                      "{task.completed:.0f}/{task.total:.0f}", TimeElapsedColumn()) as progress:
            for side in sides_run:
                if side == "direct":
                    ingest_admin = admin_of(ingest.cfg)
                    for janus in egress:
                        feed = NativeFeed(ingest_admin, bufferkf=True, egress=admin_of(janus.cfg),
                                          kinds=tuple(profile["kinds"]))
                        await asyncio.to_thread(feed.create, mids)
                        feeds.append(feed)
                    await asyncio.sleep(1.0)
                sides.append(await run_side(args, side, workers, gateway.url, feeds, egress,
                                            publisher, sampler, progress))
                done = sides[-1]
                got = sum(v["t_first"] is not None for v in done["viewers"])
                progress.console.print(f"{side}: {got}/{args.viewers} receiving; "
                                       f"per node {done['viewers_per_node']}")
                await asyncio.sleep(args.gap)
        results["sides"] = sides
    finally:
        errors: list[str] = []
        for feed in feeds:
            errors += await asyncio.to_thread(feed.destroy)
        if publisher is not None:
            async with httpx.AsyncClient(timeout=10) as http:
                try:
                    await http.delete(location)
                except httpx.HTTPError as exc:
                    errors.append(f"publisher DELETE: {exc!r}")
            await publisher.close()
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        results["samples"] = sampler.samples
        results["cleanup_errors"] = errors
        results["end"] = time.time()
