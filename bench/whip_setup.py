#!/usr/bin/env python3
"""WHIP set-up latency: the gateway against the same work done directly on Janus.

What one figure means: the time from sending a WHIP POST (or, for the direct
baseline, the first Janus request) to holding the SDP answer.  Media never
flows; only signalling is measured.

- gateway: ``POST /whip/<stream>`` with the offer -> ``201`` with the answer,
  against ``whip-gateway serve`` running as its own process.
- direct:  the same Janus requests the gateway makes per POST, raw over
  httpx from this process: videoroom ``create`` (on a control handle attached
  once), ``attach``, ``joinandconfigure`` with the offer (``ack``, then the
  event with the answer from the session's long poll).

Both sides use the same pool of real aiortc offers (Opus + VP8, candidates
on v0/127.0.0.2), run in alternating blocks (ABBA) so that drift and
background noise hit both alike, and tear down (DELETE / detach + destroy)
outside the timed part.  Afterwards Janus's admin API must show nothing left.

Run as root (it makes a private network namespace, see tests/sandbox.py):

    sudo .venv/bin/python bench/whip_setup.py [--sequential 200] [--concurrent 20]
        [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin

import httpx  # (no threads at import; checked)
from harness import (KEEPALIVE_S, BenchError, CpuMeter, GatewayProcess, Json, aiortc_offerer,
                     at_least_one, enter_netns, finish_on_janus, guarded, install_hard_cap,
                     kill_now, machine_busy, machine_info, machine_line, params_of, percentile,
                     report_leftovers, run_capped, start_on_janus, write_json)
from janus_direct import DirectJanus, admin_of
from probes import summarize

from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.sandbox import INTERFACE

TARGET_RATIO_P50 = 1.10
TARGET_CONCURRENT_P95_MS = 90.0


# --------------------------------------------------------------------------
# statistics


def summary(samples: list[float]) -> Json:
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        "min_ms": min(ms) if ms else float("nan"),
        "max_ms": max(ms) if ms else float("nan"),
    }


# --------------------------------------------------------------------------
# offers


async def make_offers(count: int) -> tuple[list[Any], list[str]]:
    """Real aiortc offers: sendonly Opus + sendonly VP8 (with rtx), candidates gathered."""
    pcs: list[Any] = []
    offers: list[str] = []
    for _ in range(count):
        pc = await aiortc_offerer("sendonly")
        pcs.append(pc)
        sdp = pc.localDescription.sdp
        if "a=candidate" not in sdp:
            raise RuntimeError("aiortc gathered no candidate; is v0 up?")
        offers.append(sdp)
    return pcs, offers


# --------------------------------------------------------------------------
# the two sides, one publish each: return the time to the answer, plus teardown


@dataclass
class Side:
    name: str
    publish: Callable[[str, str], Awaitable[tuple[float, Callable[[], Awaitable[None]]]]]
    sequential: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    round_walls: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # CPU seconds each process spent during this side's recorded sequential
    # blocks (publish and teardown), from /proc/<pid>/stat.
    cpu: dict[str, float] = field(default_factory=dict)


CPU: CpuMeter | None = None


def gateway_side(http: httpx.AsyncClient, base: str) -> Side:
    async def publish(stream: str, offer: str) -> tuple[float, Callable[[], Awaitable[None]]]:
        start = time.perf_counter()
        response = await http.post(f"{base}/whip/{stream}", content=offer,
                                   headers={"Content-Type": "application/sdp"})
        elapsed = time.perf_counter() - start
        if response.status_code != 201 or not response.text.startswith("v=0"):
            raise BenchError(f"POST {stream}: {response.status_code} {response.text[:200]}")
        location = urljoin(base + "/", response.headers["location"])

        async def teardown() -> None:
            reply = await http.delete(location)
            if reply.status_code != 200:
                raise BenchError(f"DELETE {location}: {reply.status_code}")

        return elapsed, teardown

    return Side("gateway", publish)


def direct_side(janus: DirectJanus) -> Side:
    async def publish(stream: str, offer: str) -> tuple[float, Callable[[], Awaitable[None]]]:
        start = time.perf_counter()
        handle, room, answer = await janus.publish(offer, stream)
        elapsed = time.perf_counter() - start

        async def teardown() -> None:
            await janus.unpublish(handle, room)

        if not answer.startswith("v=0"):
            await teardown()
            raise BenchError("the answer is not SDP")
        return elapsed, teardown

    return Side("direct", publish)


async def run_sequential(side: Side, offers: list[str], start: int, count: int,
                         record: bool = True) -> None:
    before = CPU.read() if CPU and record else None
    for i in range(start, start + count):
        try:
            elapsed, teardown = await side.publish(f"bench-{i}", offers[i % len(offers)])
        except Exception as exc:
            side.errors.append(f"{side.name} sequential {i}: {exc!r}")
            continue
        if record:
            side.sequential.append(elapsed)
        try:
            await teardown()
        except Exception as exc:  # the leak check at the end will show what stayed
            side.errors.append(f"{side.name} sequential {i} teardown: {exc!r}")
    if CPU and before is not None:
        CPU.add(side.cpu, before)


async def run_concurrent(side: Side, offers: list[str], round_no: int, width: int,
                         record: bool = True) -> None:
    async def one(j: int) -> tuple[float, Callable[[], Awaitable[None]]] | Exception:
        try:
            return await side.publish(f"bench-c{round_no}-{j}", offers[j % len(offers)])
        except Exception as exc:
            return exc

    wall = time.perf_counter()
    results = await asyncio.gather(*(one(j) for j in range(width)))
    wall = time.perf_counter() - wall
    teardowns = []
    for j, result in enumerate(results):
        if isinstance(result, Exception):
            side.errors.append(f"{side.name} concurrent round {round_no} #{j}: {result!r}")
            continue
        elapsed, teardown = result
        if record:
            side.concurrent.append(elapsed)
        teardowns.append(teardown())
    if record:
        side.round_walls.append(wall)
    for outcome in await asyncio.gather(*teardowns, return_exceptions=True):
        if isinstance(outcome, Exception):
            side.errors.append(f"{side.name} concurrent round {round_no} teardown: {outcome!r}")


def abba(index: int, a: Side, b: Side) -> tuple[Side, Side]:
    """Block order A B B A A B B A ...: each side goes first equally often."""
    return (a, b) if index % 4 in (0, 3) else (b, a)


# --------------------------------------------------------------------------
# processes and leftovers


def start_gateway(janus: ManagedJanus, port: int, log_path: Path, wrapper: list[str],
                  log_level: str | None, timing: Path | None = None,
                  extra_env: list[str] | None = None) -> GatewayProcess:
    """``whip-gateway serve`` on the bench's Janus; with --gateway-timing, through bench/probes.py."""
    return start_on_janus(janus.cfg, port, log_path, log_level=log_level, extra_env=extra_env,
                          wrapper=wrapper, records=timing)


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(binary).exists():
        raise RuntimeError("--py-spy: no py-spy binary (pip install py-spy)")
    return subprocess.Popen(  # noqa: S603
        [binary, "record", "--pid", str(pid), "--rate", "500", "--format", "raw",
         "--nonblocking", "--output", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    """py-spy writes its file when interrupted."""
    if spy is not None and spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(20)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# --------------------------------------------------------------------------
# machine info and the report


def report(results: Json) -> str:
    g, d = results["gateway"], results["direct"]
    out = []
    m = results["machine"]
    out.append(machine_line(m))
    out.append(f"gateway: {m['gateway_commit']}  httpx {m['packages']['httpx']}, "
               f"uvicorn {m['packages']['uvicorn']}, starlette {m['packages']['starlette']}, "
               f"aiortc {m['packages']['aiortc']}")
    p = results["params"]
    out.append(f"run: {p['sequential']} sequential + {p['rounds']}x{p['concurrent']} concurrent "
               f"publishes per side, {p['offers']} distinct offers, blocks of {p['block']} (ABBA), "
               f"{results['elapsed_s']:.1f} s")
    out.append("")
    out.append(f"{'POST -> answer (ms)':<28}{'gateway':>10}{'direct':>10}{'ratio':>8}")

    def row(label: str, key: str, stat: str) -> None:
        gv, dv = g[key][stat], d[key][stat]
        ratio = gv / dv if dv else float("nan")
        out.append(f"{label:<28}{gv:>10.2f}{dv:>10.2f}{ratio:>8.2f}")

    row("sequential p50", "sequential", "p50_ms")
    row("sequential p95", "sequential", "p95_ms")
    row("sequential mean", "sequential", "mean_ms")
    row(f"concurrent-{p['concurrent']} p50", "concurrent", "p50_ms")
    row(f"concurrent-{p['concurrent']} p95", "concurrent", "p95_ms")
    row(f"concurrent-{p['concurrent']} round wall", "round_wall", "p50_ms")
    steps = results.get("direct_steps_ms") or {}
    out.append("direct sequential, p50 per step (ms): "
               + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    for name, side in (("gateway", g), ("direct", d)):
        cpu = side.get("cpu_ms_per_publish") or {}
        out.append(f"CPU ms per sequential publish+teardown, {name:<7}: "
                   + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    load = results.get("cpu_load")
    if load:
        out.append(f"CPU while measuring: bench+gateway+Janus {load['ours_cores']:.2f} cores, "
                   f"other processes {load['others_cores']:.2f} cores (of {m['nproc']}; "
                   "figures from a busy machine are noisier)")
    out.append("")
    t = results["targets"]
    out.append(f"target sequential gateway/direct p50 <= {TARGET_RATIO_P50:.2f}: "
               f"{t['ratio_p50']:.2f}  {'PASS' if t['ratio_p50_ok'] else 'MISS'}")
    out.append(f"target concurrent-{p['concurrent']} gateway p95 <= {TARGET_CONCURRENT_P95_MS:.0f} ms: "
               f"{t['concurrent_p95_ms']:.1f} ms  {'PASS' if t['concurrent_p95_ok'] else 'MISS'}")
    out.append(f"(sequential p95 ratio {t['ratio_p95']:.2f}; concurrent ratio p50 "
               f"{t['concurrent_ratio_p50']:.2f}, p95 {t['concurrent_ratio_p95']:.2f})")
    errors = results["gateway"]["errors"] + results["direct"]["errors"]
    out.append(f"errors: {len(errors)}" + ("".join(f"\n  {e}" for e in errors[:10])))
    return "\n".join(out)


# --------------------------------------------------------------------------
# the run


async def measure(args: argparse.Namespace, janus: ManagedJanus, gateway: GatewayProcess,
                  results: Json) -> None:
    cfg = janus.cfg
    t0 = time.perf_counter()
    pcs, offers = await make_offers(args.offers)
    results["offer_gathering_s"] = time.perf_counter() - t0
    direct = DirectJanus(cfg.api_url, cfg.plugin_admin_key, args.request_timeout)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(args.request_timeout),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                            keepalive_expiry=KEEPALIVE_S),
    )
    spy: subprocess.Popen[bytes] | None = None
    try:
        await direct.start()
        global CPU
        CPU = CpuMeter({"janus": janus.proc.pid, "gateway": gateway.proc.pid,  # type: ignore[union-attr]
                        "bench": os.getpid()})
        gw, dr = gateway_side(http, gateway.url), direct_side(direct)
        # Warm-up, not recorded: connections, code paths, Janus's first rooms.
        for side in (gw, dr):
            await run_sequential(side, offers, 10_000, args.warmup, record=False)
        direct.steps.clear()
        if args.py_spy:
            spy = start_py_spy(gateway.proc.pid, args.py_spy)
        busy0, ours0 = (machine_busy(), time.monotonic()), CPU.read()
        block = args.block
        done, index = 0, 0
        while done < args.sequential:
            count = min(block, args.sequential - done)
            for side in abba(index, gw, dr):
                await run_sequential(side, offers, done, count)
            done += count
            index += 1
        sequential_steps = list(direct.steps)
        # Warm the connection pools for the concurrent part (kept shorter-lived
        # than the servers' idle timeouts, so none is stale when reused).
        for side in (gw, dr):
            await run_concurrent(side, offers, 10_000, args.concurrent, record=False)
        for r in range(args.rounds):
            for side in abba(r, gw, dr):
                await run_concurrent(side, offers, r, args.concurrent)
        busy1, ours1 = (machine_busy(), time.monotonic()), CPU.read()
        stop_py_spy(spy)
        wall = busy1[1] - busy0[1]
        ours = sum(ours1[k] - ours0[k] for k in ours0)
        results["cpu_load"] = {
            "wall_s": wall,
            "ours_cores": ours / wall,
            "others_cores": max(busy1[0] - busy0[0] - ours, 0.0) / wall,
        }
        # With the gateway still up: only its session and its 2 control
        # handles, plus ours (1 control handle), may remain, and no room.
        admin = admin_of(cfg)
        results["leftovers_during"] = await asyncio.to_thread(admin.leftovers)
        for side in (gw, dr):
            results[side.name] = {
                "sequential": summary(side.sequential),
                "concurrent": summary(side.concurrent),
                "round_wall": summary(side.round_walls),
                "errors": side.errors,
                "cpu_ms_per_publish": {k: v * 1000 / max(len(side.sequential), 1)
                                       for k, v in side.cpu.items()},
                "samples_ms": {"sequential": [s * 1000 for s in side.sequential],
                               "concurrent": [s * 1000 for s in side.concurrent]},
            }
        results["direct_steps_ms"] = {
            name: percentile([step[i] * 1000 for step in sequential_steps], 50)
            for i, name in enumerate(("create_room", "attach", "join_post_to_ack",
                                      "ack_to_event"))
        }
    finally:
        stop_py_spy(spy)
        await http.aclose()
        await asyncio.gather(direct.close(), return_exceptions=True)
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200, help="sequential publishes per side")
    parser.add_argument("--concurrent", type=int, default=20, help="publishes at once per round")
    parser.add_argument("--rounds", type=int, default=5, help="concurrent rounds per side")
    parser.add_argument("--offers", type=int, default=20, help="distinct aiortc offers in the pool")
    parser.add_argument("--block", type=int, default=20, help="sequential publishes per ABBA block")
    parser.add_argument("--warmup", type=int, default=10, help="unrecorded publishes per side first")
    parser.add_argument("--json", type=Path, help="write every figure and sample here")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="cap on the whole run")
    parser.add_argument("--gateway-log-level", choices=["debug", "info", "warning", "error"],
                        help="passed to serve as --log-level (default: the gateway's own, info)")
    parser.add_argument("--gateway-wrapper", default="",
                        help="command put before the gateway's argv (it must pass SIGTERM on)")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="sample the gateway with py-spy (found on PATH or beside python) "
                             "during the timed part; collapsed stacks (raw format) go to FILE")
    parser.add_argument("--gateway-timing", type=Path, metavar="FILE",
                        help="run the gateway with timing probes (bench/probes.py), "
                             "write per-POST stage times to FILE and print their medians")
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the gateway only (PYTHONPATH is prepended), "
                             "e.g. to try it with other packages; repeatable")
    parser.add_argument("--keep-logs", type=Path, help="copy the gateway and Janus logs here")
    args = parser.parse_args(argv)
    at_least_one(parser, args, ("sequential", "concurrent", "rounds", "offers", "block"))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not enter_netns("whip_setup"):
        return 2

    janus: ManagedJanus | None = None
    gateway: GatewayProcess | None = None
    workdir = Path(tempfile.mkdtemp(prefix="whip-bench-"))

    install_hard_cap("whip_setup", args.max_seconds + 60, lambda: kill_now(gateway, janus))
    results: Json = {"params": params_of(args)}
    started = time.perf_counter()

    def run() -> None:
        nonlocal janus, gateway
        janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE))
        janus.start()
        janus_info = httpx.get(f"{janus.cfg.api_url}/info", timeout=5).json()
        gateway = start_gateway(janus, free_port(), workdir / "gateway.log",
                                args.gateway_wrapper.split(), args.gateway_log_level,
                                args.gateway_timing, args.gateway_env)
        health = gateway.wait_healthy(30)
        results["machine"] = machine_info(janus_info)
        results["gateway_health"] = health
        results["gateway_command"] = gateway.command
        results["gateway_env"] = args.gateway_env or []
        print(f"Janus {janus_info.get('version_string')} at {janus.cfg.api_url}; "
              f"gateway at {gateway.url} (pid {gateway.proc.pid}); measuring ...", flush=True)
        run_capped(lambda: measure(args, janus, gateway, results),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (time.perf_counter() - started))
        results["elapsed_s"] = time.perf_counter() - started

    status = 1
    try:
        status, _ = guarded("whip_setup", run, args.max_seconds,
                            lambda: gateway.log_tail() if gateway is not None else "")
    finally:
        status = finish_on_janus("whip_setup", results, status, gateway, janus, args.keep_logs,
                                 (workdir / "gateway.log",))
        shutil.rmtree(workdir, ignore_errors=True)
        signal.alarm(0)

    if status == 0:
        g, d = results["gateway"], results["direct"]
        ratio = g["sequential"]["p50_ms"] / d["sequential"]["p50_ms"]
        results["targets"] = {
            "ratio_p50": ratio,
            "ratio_p50_ok": ratio <= TARGET_RATIO_P50,
            "ratio_p95": g["sequential"]["p95_ms"] / d["sequential"]["p95_ms"],
            "concurrent_p95_ms": g["concurrent"]["p95_ms"],
            "concurrent_p95_ok": g["concurrent"]["p95_ms"] <= TARGET_CONCURRENT_P95_MS,
            "concurrent_ratio_p50": g["concurrent"]["p50_ms"] / d["concurrent"]["p50_ms"],
            "concurrent_ratio_p95": g["concurrent"]["p95_ms"] / d["concurrent"]["p95_ms"],
        }
        print()
        print(report(results))
        during = results.get("leftovers_during", {})
        if args.gateway_timing and args.gateway_timing.exists():
            print()
            print(summarize(args.gateway_timing, g["sequential"]["p50_ms"]))
        print(f"while running: {during.get('sessions')} Janus sessions, {during.get('handles')} "
              f"handles (expected 2 sessions, 3 control handles), {during.get('rooms')} rooms")
    status = report_leftovers(results, ("sessions", "handles", "rooms"), status)
    write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
