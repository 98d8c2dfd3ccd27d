#!/usr/bin/env python3
"""Setup rate: WHEP set-ups driven at fixed rates, the gateway's CPU per set-up.

A benchmark, not a CI test.  In a private network namespace it starts
webinar's nodes (an ingest Janus and ``--egress`` ICE-lite egress Janus) and
the gateway on them, publishes webinar's light stream by WHIP, then holds
each rate of ``--rates`` for ``--step-seconds``: viewers POST a WHEP offer
at that rate (open loop), each DELETEs its session ``--lifetime`` seconds
later.  Per step it prints the offered and achieved rate, POST→201
p50/p95/max, the statuses, and the CPU per set-up (POST + DELETE and what
Janus tells the gateway meanwhile) of the gateway and of Janus, from
/proc, less what each used idle; then the first rate at which POST→201 p95
passed ``--p95-limit`` (250 ms).

``--baseline DIR`` runs a second gateway from another tree's ``gateway/``
package on the same nodes (e.g. ``git archive 6cfcca8 gateway | tar -x -C
DIR``); the two take each step in turn, A B then B A, and the report gives
their ratio.  ``--profile FILE`` runs this tree's gateway under cProfile
(bench/probes.py).  The viewers are in ``setup_rate_scenario``.

    sudo .venv/bin/python bench/setup_rate.py
    sudo .venv/bin/python bench/setup_rate.py --rates 50,100 --baseline /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from harness import (
    CpuMeter,
    GatewayProcess,
    Json,
    enter_netns,
    guarded,
    install_hard_cap,
    kill_now,
    machine_busy,
    machine_info,
    machine_line,
    params_of,
    percentile,
    print_node_leftovers,
    run_capped,
    write_json,
)
from janus_direct import leftovers_of
from setup_rate_scenario import worker_main
from webinar_driver import start_gateway, start_nodes, start_publisher
from webinar_scenario import PROFILES, STREAM, now
from whep_ttff_driver import Workers

SIDES = ("gateway", "baseline")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rates", default="25,50,75,100,125,150",
                        help="set-ups per second, one step each")
    parser.add_argument("--step-seconds", type=float, default=10.0, help="how long each rate runs")
    parser.add_argument("--lifetime", type=float, default=2.0,
                        help="seconds from a viewer's join to its DELETE")
    parser.add_argument("--egress", type=int, default=1, help="K egress Janus processes")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--pool", type=int, default=16, help="pooled offers per process")
    parser.add_argument("--connect", action="store_true",
                        help="real aiortc viewers that connect (dear for the load generator)")
    parser.add_argument("--p95-limit", type=float, default=250.0, help="ms of POST->201 p95")
    parser.add_argument("--stop-over", action="store_true",
                        help="stop after the first step over the limit (both sides)")
    parser.add_argument("--log-level", default="info", help="the gateway's (its default: info)")
    parser.add_argument("--baseline", type=Path, metavar="TREE",
                        help="a second gateway from TREE/gateway, alternating with this one")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="this tree's gateway under cProfile (CPU time), written to FILE")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds at the first rate per side, not recorded")
    parser.add_argument("--janus-cost", type=int, default=300, metavar="N",
                        help="after the steps, N requests of the gateway's Janus client, timed (0: no)")
    parser.add_argument("--gap", type=float, default=2.0, help="pause between steps")
    parser.add_argument("--request-timeout", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=600.0, help="cap on the whole run")
    parser.add_argument("--json", type=Path, help="every figure and record")
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE")
    parser.add_argument("--keep-logs", type=Path)
    args = parser.parse_args(argv)
    args.rate_steps = [float(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_steps or min(args.rate_steps) <= 0:
        parser.error("--rates: positive numbers, comma-separated")
    return args


# --------------------------------------------------------------------------
# figures (pure: tests/unit/test_setup_rate_bench.py)


def step_figures(records: list[Json], cpu_s: dict[str, float], idle: dict[str, float],
                 window_s: float, gateway: str) -> Json:
    """One step of one side: rates, POST→201 latency, statuses, CPU per set-up.

    ``cpu_s`` is each process's CPU seconds over the step's ``window_s``
    (first join to last DELETE answered), ``idle`` its idle rate (cores);
    CPU per set-up is what the step added, over the set-ups that got 201.
    Janus is every process named ``ingest`` or ``egress*``; the load
    generator is ``worker*``.
    """
    ok = [r for r in records if r["status"] == 201]
    posts = [r for r in records if r["t_answer"] is not None]
    latency = [(r["t_answer"] - r["t_post"]) * 1000 for r in posts]
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) if r["status"] is not None else "error"
        statuses[key] = statuses.get(key, 0) + 1
    deletes: dict[str, int] = {}
    for r in ok:
        key = str(r["delete_status"]) if r["delete_status"] is not None else "error"
        deletes[key] = deletes.get(key, 0) + 1
    span = (max(r["t_answer"] for r in ok) - min(r["t_post"] for r in ok)) if len(ok) > 1 else 0.0

    def added(names: list[str]) -> float:
        return sum(cpu_s[n] - idle.get(n, 0.0) * window_s for n in names)

    janus = [n for n in cpu_s if n == "ingest" or n.startswith("egress")]
    workers = [n for n in cpu_s if n.startswith("worker")]
    per_setup = (lambda s: s * 1000 / len(ok)) if ok else (lambda s: float("nan"))
    return {
        "setups": len(records), "ok": len(ok),
        "achieved": (len(ok) - 1) / span if span > 0 else float("nan"),
        "p50": percentile(latency, 50), "p95": percentile(latency, 95),
        "max": max(latency) if latency else float("nan"),
        "statuses": statuses, "deletes": deletes,
        "errors": sorted({r["error"] for r in records if r.get("error")})[:5],
        # --connect: viewers whose first video packet came (ICE, DTLS, media all up)
        "receiving": sum(1 for r in records if r.get("t_first") is not None),
        "gateway_ms": per_setup(added([gateway])),
        "janus_ms": per_setup(added(janus)),
        "loadgen_cores": sum(cpu_s[n] for n in workers) / window_s if window_s else float("nan"),
        "window_s": window_s,
    }


def first_over(rows: list[Json], limit_ms: float) -> float | None:
    """The lowest offered rate whose POST→201 p95 exceeded ``limit_ms`` (or failed)."""
    over = [r["rate"] for r in rows if not r["p95"] <= limit_ms or r["ok"] < r["setups"]]
    return min(over) if over else None


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def table(rows: list[Json]) -> str:
    """The per-step table (as in bench/README.md)."""
    head = (f"{'side':<9}{'offered/s':>10}{'achieved/s':>11}{'p50 ms':>8}{'p95 ms':>8}"
            f"{'max ms':>8}{'gw ms/setup':>12}{'janus ms':>9}{'loadgen':>8}{'other':>7}  statuses")
    lines = [head]
    for r in rows:
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(r["statuses"].items()))
        deletes = " ".join(f"{k}:{v}" for k, v in sorted(r["deletes"].items()))
        lines.append(f"{r['side']:<9}{fmt(r['rate'], 0):>10}{fmt(r['achieved']):>11}"
                     f"{fmt(r['p50']):>8}{fmt(r['p95']):>8}{fmt(r['max']):>8}"
                     f"{fmt(r['gateway_ms'], 2):>12}{fmt(r['janus_ms'], 2):>9}"
                     f"{fmt(r['loadgen_cores'], 2):>8}{fmt(r['other_cores'], 2):>7}"
                     f"  POST {statuses}; DELETE {deletes}"
                     + (f"; receiving {r['receiving']}" if r.get("receiving") else ""))
    return "\n".join(lines)


def summary(rows: list[Json], limit_ms: float) -> str:
    """First rate over the limit per side, and (with a baseline) the CPU ratios."""
    lines = []
    sides = sorted({r["side"] for r in rows}, key=SIDES.index)
    for side in sides:
        over = first_over([r for r in rows if r["side"] == side], limit_ms)
        lines.append(f"{side}: first offered rate with POST->201 p95 > {limit_ms:g} ms (or a "
                     f"failed set-up): {fmt(over, 0) if over else 'none reached'}")
    if len(sides) == 2:
        pairs = [(a, b) for a in rows if a["side"] == "gateway"
                 for b in rows if b["side"] == "baseline" and b["step"] == a["step"]]
        for a, b in pairs:
            lines.append(f"rate {fmt(a['rate'], 0)}: gateway CPU per set-up {fmt(a['gateway_ms'], 2)} "
                         f"vs baseline {fmt(b['gateway_ms'], 2)} ms, ratio "
                         f"{fmt(a['gateway_ms'] / b['gateway_ms'], 2)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the run


async def run_step(args: argparse.Namespace, side: str, rate: float, gateway: GatewayProcess,
                   workers: Workers, meter: CpuMeter, idle: dict[str, float],
                   seconds: float | None = None) -> Json:
    """One side at one rate: joins for ``--step-seconds``, then every DELETE."""
    t0 = now() + 0.5
    count = max(round(rate * (seconds or args.step_seconds)), 1)
    joins = [(i, t0 + i / rate) for i in range(count)]
    shares = [joins[w::len(workers.conns)] for w in range(len(workers.conns))]
    base = {"side": side, "whep_url": f"{gateway.url}/whep/{STREAM}", "lifetime": args.lifetime,
            "connect": args.connect, "pool": args.pool, "kinds": list(PROFILES["light"]["kinds"]),
            "request_timeout": args.request_timeout}
    active = [c for c, share in zip(workers.conns, shares) if share]
    cpu0, busy0 = meter.read(), machine_busy()
    for conn, share in zip(workers.conns, shares):
        if share:
            conn.send({**base, "joins": share})
    replies = await workers.gather(args.step_seconds + args.lifetime + 3 * args.request_timeout
                                   + 60, active)
    cpu1, busy1, t1 = meter.read(), machine_busy(), now()
    window = t1 - t0
    cpu_s = {k: cpu1[k] - cpu0[k] for k in cpu0}
    records = sorted((r for reply in replies for r in reply["records"]), key=lambda r: r["index"])
    row = {"side": side, "rate": rate, **step_figures(records, cpu_s, idle, window, side)}
    row["other_cores"] = max(busy1 - busy0 - sum(cpu_s.values()), 0.0) / window
    row["cpu_s"] = cpu_s
    return row


async def measure(args: argparse.Namespace, nodes: list[Any], gateways: dict[str, GatewayProcess],
                  workers: Workers, results: Json) -> None:
    """Publishers, the idle baseline, then each rate step, sides in turn (A B, B A, …)."""
    pids = {"ingest": nodes[0].proc.pid,
            **{f"egress{i}": j.proc.pid for i, j in enumerate(nodes[1:])},
            **{side: g.proc.pid for side, g in gateways.items()},
            **{f"worker{i}": p.pid for i, p in enumerate(workers.procs)}, "bench": os.getpid()}
    meter = CpuMeter(pids)
    publishers: list[tuple[Any, str]] = []
    try:
        for gateway in gateways.values():
            pc, location, _ = await start_publisher(gateway.url, PROFILES["light"], 20)
            publishers.append((pc, location))
        await asyncio.sleep(2.0)
        cpu0, t0 = meter.read(), now()
        await asyncio.sleep(4.0)
        cpu1, t1 = meter.read(), now()
        idle = {k: (cpu1[k] - cpu0[k]) / (t1 - t0) for k in cpu0}
        results["idle_cores"] = idle
        print("idle (cores): " + ", ".join(f"{k} {v:.3f}" for k, v in idle.items()), flush=True)
        rows: list[Json] = results.setdefault("steps", [])
        sides = list(gateways)
        for side in sides:  # not recorded: the offer pools, the mountpoint, first connections
            await run_step(args, side, args.rate_steps[0], gateways[side], workers, meter, idle,
                           seconds=args.warmup)
        for n, rate in enumerate(args.rate_steps):
            for side in (sides if n % 2 == 0 else sides[::-1]):
                row = await run_step(args, side, rate, gateways[side], workers, meter, idle)
                row["step"] = n
                rows.append(row)
                print(table([row]).splitlines()[1], flush=True)
                if row["errors"]:
                    print(f"  errors: {row['errors']}", flush=True)
                await asyncio.sleep(args.gap)
            if args.stop_over and all(first_over([r for r in rows if r["side"] == s],
                                                 args.p95_limit) for s in sides):
                break
        if args.janus_cost:
            workers.conns[0].send({"op": "janus_cost", "url": nodes[-1].cfg.api_url,
                                   "count": args.janus_cost})
            cost = (await workers.gather(120, workers.conns[:1]))[0]
            results["janus_client"] = cost
            print(f"gateway's Janus client, CPU per request: keepalive POST "
                  f"{cost['keepalive_us']:.0f} µs; attach + detach (2 POSTs, 1 event) "
                  f"{cost['attach_detach_us']:.0f} µs", flush=True)
    finally:
        async with httpx.AsyncClient(timeout=10) as http:
            for pc, location in publishers:
                try:
                    await http.delete(location)
                except httpx.HTTPError as exc:
                    print(f"publisher DELETE: {exc!r}", file=sys.stderr)
                await pc.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gateway.janus.process import free_port
    from tests.sandbox import INTERFACE

    if not enter_netns("setup_rate"):
        return 2
    nodes: list[Any] = []
    gateways: dict[str, GatewayProcess] = {}
    workers: Workers | None = None
    workdir = Path(tempfile.mkdtemp(prefix="setup-rate-"))

    def kill_children() -> None:
        kill_now(workers, *gateways.values(), *nodes)

    install_hard_cap("setup_rate", args.max_seconds + 60, kill_children)
    results: Json = {"params": params_of(args)}
    started = now()

    def run() -> None:
        nonlocal workers
        workers = Workers(args.procs, worker_main, "setup-rate-viewers")
        nodes.extend(start_nodes(args.egress, INTERFACE))
        info = httpx.get(f"{nodes[0].cfg.api_url}/info", timeout=5).json()
        env = [f"WHIP_GATEWAY_LOG_LEVEL={args.log_level}", "WHIP_BENCH_PROFILE_CLOCK=cpu",
               *(args.gateway_env or [])]
        trees = {"gateway": None, **({"baseline": args.baseline} if args.baseline else {})}
        for side, tree in trees.items():
            (workdir / side).mkdir()
            # Their own tags in Janus: each frees what carries its tag at start.
            extra = [*env, f"WHIP_GATEWAY_INSTANCE_NAME=setup-rate-{side}",
                     *([f"PYTHONPATH={tree}"] if tree else [])]
            gateways[side] = start_gateway(nodes, free_port(), workdir / side, extra,
                                           profile=args.profile if side == "gateway" else None)
        for gateway in gateways.values():
            gateway.wait_healthy(30)
        results["machine"] = machine_info(info)
        print(machine_line(results["machine"]), flush=True)
        run_capped(lambda: measure(args, nodes, gateways, workers, results),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (now() - started))

    status = 1
    try:
        status, _ = guarded("setup_rate", run, args.max_seconds,
                            lambda: "\n".join(g.log_tail() for g in gateways.values()))
    finally:
        if workers is not None:
            workers.stop()
        for side, gateway in gateways.items():
            results[f"{side}_exit"] = gateway.stop(15)
        results["leftovers"] = [leftovers_of("setup_rate", j.cfg) for j in nodes if j.running()]
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in [*(workdir / s / "gateway.log" for s in gateways),
                         *(j.log_path for j in nodes)]:
                if path.exists():
                    shutil.copy(path, args.keep_logs / f"{path.parent.name}-{path.name}")
        for janus in nodes:
            janus.stop()
        signal.alarm(0)
    rows = results.get("steps", [])
    if rows:
        print()
        print(table(rows))
        print(summary(rows, args.p95_limit))
        loadgen = [r["loadgen_cores"] for r in rows]
        print(f"load generator ({args.procs} processes, {'connecting' if args.connect else 'offer-pool'}"
              f" viewers): {fmt(min(loadgen), 2)}-{fmt(max(loadgen), 2)} cores; "
              f"whole run {fmt(now() - started, 0)} s")
    print_node_leftovers(results["leftovers"])
    shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
