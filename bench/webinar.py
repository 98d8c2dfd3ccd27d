#!/usr/bin/env python3
"""Webinar: one publisher, N viewers over K egress Janus, through the gateway and directly.

A benchmark, not a CI test.  In a private network namespace it starts an
ingest Janus, K ICE-lite egress Janus and the gateway on them (a TOML node
list), publishes one stream, and ramps N packet-counting aiortc viewers
(in ``--procs`` processes) at ``--rate`` joins per second through the
gateway (WHEP), holds, then runs the same ramp directly on Janus
(server-offer flow on the bench's own mountpoint per egress node) and
prints both with their ratios: set-ups that succeeded, POST→first packet
per 100 joins and overall, packets per viewer against what was sent,
viewers per node, CPU and RSS of every process in each phase, and, from a
few decoding viewers, glass-to-glass latency read from a barcode the
publisher draws into each frame (light profile).  A PNG (TTFF against join
order, CPU per process, viewers per node) goes to bench/results/.

Profiles: ``light`` (320x180 VP8 at 10 fps) and ``webinar`` (1280x720 at
30 fps, noise at 2.5 Mbit/s, with Opus).  ``--calibrate light.json`` with the
webinar profile fits Janus's cost per viewer-packet and per viewer from both
runs and prints the README's sizing table.

Split as whep_ttff: ``webinar_scenario`` (media, viewers in the worker
processes), ``webinar_driver`` (nodes, gateway, ramps), ``webinar_report``.

    sudo .venv/bin/python bench/webinar.py --viewers 50
    sudo .venv/bin/python bench/webinar.py --profile webinar --viewers 150 --calibrate light.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from harness import (
    REPO,
    GatewayProcess,
    Json,
    at_least_one,
    enter_netns,
    guarded,
    install_hard_cap,
    kill_now,
    machine_busy,
    machine_info,
    machine_line,
    params_of,
    print_node_leftovers,
    run_capped,
    write_json,
)
from janus_direct import leftovers_of
from webinar_driver import measure, start_gateway, start_nodes
from webinar_report import (
    analyse,
    fit_costs,
    fmt,
    plot,
    report,
    sizing_rows,
    sizing_table,
)
from webinar_scenario import PROFILES, now, worker_main
from whep_ttff_driver import Workers

RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="light")
    parser.add_argument("--viewers", type=int, default=1000, help="N, per side")
    parser.add_argument("--egress", type=int, default=3, help="K egress Janus processes")
    parser.add_argument("--procs", type=int, default=6, help="viewer processes")
    parser.add_argument("--rate", type=float, default=20.0, help="joins per second")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds every viewer holds")
    parser.add_argument("--decoders", type=int, default=3,
                        help="the first D viewers of each side decode (glass-to-glass)")
    parser.add_argument("--first-timeout", type=float, default=15.0,
                        help="after the last join, how long to wait for first packets")
    parser.add_argument("--gap", type=float, default=4.0, help="pause between the two sides")
    parser.add_argument("--request-timeout", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, default=360.0, help="cap on the whole run")
    parser.add_argument("--json", type=Path, help="every figure and sample (default bench/results/)")
    parser.add_argument("--calibrate", type=Path, metavar="LIGHT_JSON",
                        help="a light run's --json: fit per-packet and per-viewer costs, print sizing")
    parser.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                        help="no run: print the report (and sizing) of a saved --json again")
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE")
    parser.add_argument("--keep-logs", type=Path)
    args = parser.parse_args(argv)
    at_least_one(parser, args, ("viewers", "egress", "procs"))
    return args


def print_sizing(args: argparse.Namespace, analysis: Json, results: Json) -> None:
    """Per viewer-packet and per viewer costs of the egress Janus; the README's table.

    Packets are counted where the viewers received them: if a starved viewer
    process dropped some from its socket buffer, Janus's cost per packet comes
    out high, never low, so the table errs on the safe side.  The same fit on
    the packets Janus sent (the publisher's rate) is printed as the lower bound.
    """
    sides = [analysis["gateway"], analysis["direct"]]
    if args.calibrate:
        light = analyse(json.loads(args.calibrate.read_text()))
        sides += [light["gateway"], light["direct"]]
    fits = {key: fit_costs([(f[key], f["egress_pct_per_viewer"]) for f in sides])
            for key in ("viewer_pps", "sent_pps")}
    us, base = fits["viewer_pps"]
    packet_bytes = analysis["gateway"]["packet_bytes"]
    results["sizing"] = {"us_per_packet": us, "pct_per_viewer": base, "packet_bytes": packet_bytes,
                         "lower_bound": fits["sent_pps"], "rows": sizing_rows(us, base, packet_bytes)}
    print(f"\nfit over {len(sides)} (packets/s, % of a core per viewer) points: {fmt(us, 1)} µs of "
          f"egress Janus CPU per viewer-packet received + {fmt(base, 4)}% of a core per viewer "
          f"(on packets sent: {fmt(fits['sent_pps'][0], 1)} µs + {fmt(fits['sent_pps'][1], 4)}%); "
          f"{fmt(packet_bytes)} B per packet")
    print(sizing_table(results["sizing"]["rows"]))


def print_report(args: argparse.Namespace, results: Json) -> Json:
    """The figures, targets and (webinar profile, or --calibrate) the sizing table."""
    analysis = results["analysis"] = analyse(results)
    print()
    print(report(results, analysis))
    other = [analysis[s]["cpu"][p]["*other"] for s in analysis for p in ("ramp", "hold")]
    other = [o for o in other if not math.isnan(o)] or [float("nan")]
    print(f"other processes on the machine: {fmt(min(other), 2)}-{fmt(max(other), 2)} cores "
          f"during the ramps and holds; whole run {fmt(results['elapsed_s'])} s")
    if results["params"]["profile"] == "webinar" or args.calibrate:
        print_sizing(args, analysis, results)
    return analysis


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_report(args, json.loads(args.report.read_text()))
        return 0
    from gateway.janus.process import free_port
    from tests.sandbox import INTERFACE

    if not enter_netns("webinar"):
        return 2
    nodes: list[Any] = []
    gateway: GatewayProcess | None = None
    workers: Workers | None = None
    workdir = Path(tempfile.mkdtemp(prefix="webinar-"))

    def kill_children() -> None:
        kill_now(workers, gateway, *nodes)

    install_hard_cap("webinar", args.max_seconds + 60, kill_children)
    results: Json = {"params": params_of(args)}
    started = now()
    busy0, wall0 = machine_busy(), now()

    def run() -> None:
        nonlocal gateway, workers
        workers = Workers(args.procs, worker_main, "webinar-viewers")
        nodes.extend(start_nodes(args.egress, INTERFACE))
        info = httpx.get(f"{nodes[0].cfg.api_url}/info", timeout=5).json()
        gateway = start_gateway(nodes, free_port(), workdir, args.gateway_env)
        results["gateway_health"] = gateway.wait_healthy(30)
        results["machine"] = machine_info(info)
        print(machine_line(results["machine"]), flush=True)
        run_capped(lambda: measure(args, nodes, gateway, workers, results),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (now() - started))

    status = 1
    try:
        status, _ = guarded("webinar", run, args.max_seconds,
                            lambda: gateway.log_tail() if gateway is not None else "")
    finally:
        if workers is not None:
            workers.stop()
        if gateway is not None:
            results["gateway_exit"] = gateway.stop(15)
        results["leftovers"] = [leftovers_of("webinar", j.cfg) for j in nodes if j.running()]
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in [workdir / "gateway.log", *(j.log_path for j in nodes)]:
                if path.exists():
                    shutil.copy(path, args.keep_logs / f"{path.parent.name}-{path.name}")
        for janus in nodes:
            janus.stop()
        signal.alarm(0)
    wall = now() - wall0
    results["elapsed_s"] = now() - started
    results["machine_busy_cores"] = (machine_busy() - busy0) / wall
    if status == 0 and results.get("sides"):
        analysis = print_report(args, results)
        RESULTS.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        png = RESULTS / f"webinar-{args.profile}-{args.viewers}-{stamp}.png"
        plot(results, analysis, png)
        print(f"plot: {png}")
        args.json = args.json or RESULTS / f"webinar-{args.profile}-{args.viewers}-{stamp}.json"
    print_node_leftovers(results["leftovers"])
    shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
