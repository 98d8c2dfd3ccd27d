#!/usr/bin/env python3
"""Egress cost per viewer: what event_loops, mountpoint threads and bufferkf change.

A benchmark, not a CI test (issue 13, item 5).  For each configuration, in
ABBA order, it starts one ingest Janus and ONE ICE-lite egress Janus (with
the configuration's ``event_loops``) and the gateway on them (told the
mountpoint ``threads`` and ``bufferkf`` through its own settings), publishes
one stream, brings N counting viewers through WHEP (bench/webinar's gateway
ramp, nothing of its own), holds, and reads the egress Janus's utime+stime
over the hold from /proc: per viewer, per packet sent; its RSS and threads;
the viewers' share of the packets sent, so that a setting that is cheaper
because it drops packets does not pass for a win.  Fresh processes per
configuration: event_loops is read once, when Janus starts.

Through the gateway rather than straight to Janus: the mountpoints are then
made exactly as the gateway makes them, and the gateway ramp connected all
1000 viewers where webinar's direct ramp did not.  In the hold the gateway
sends Janus nothing per packet; its periodic polls are the same in every
configuration.

    sudo .venv/bin/python bench/egress_cost.py --viewers 100 --sweep --rounds 2
    sudo .venv/bin/python bench/egress_cost.py --profile medium --configs E2T2K1,E0T2K1
    .venv/bin/python bench/egress_cost.py --report RUN.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from egress_cost_report import (
    Config,
    abba,
    one_at_a_time,
    parse_config,
    run_row,
    summarise,
    table,
)
from harness import (
    REPO,
    Json,
    enter_netns,
    guarded,
    install_hard_cap,
    kill_now,
    machine_busy,
    machine_info,
    machine_line,
    params_of,
    run_capped,
    write_json,
)
from janus_direct import leftovers_of
from webinar_driver import measure, start_gateway, start_nodes
from webinar_report import analyse, fmt
from webinar_scenario import PROFILES, now, worker_main
from whep_ttff_driver import Workers

RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="light",
                        help="light: 10 packets/s; medium: ~120 packets/s of ~1 KB")
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--configs", default="E2T2K1",
                        help="comma-separated E<event_loops>T<threads>K<0|1>")
    parser.add_argument("--sweep", action="store_true",
                        help="the defaults, then each factor alone: loops 0/1/4, threads 0/1/4, kf off")
    parser.add_argument("--rounds", type=int, default=2, help="ABBA: forward, backward, ...")
    parser.add_argument("--procs", type=int, default=6, help="viewer processes")
    parser.add_argument("--rate", type=float, default=20.0, help="joins per second")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds measured")
    parser.add_argument("--first-timeout", type=float, default=15.0)
    parser.add_argument("--request-timeout", type=float, default=15.0)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="cap on the whole run")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--report", type=Path, metavar="RESULTS_JSON",
                        help="no run: print a saved --json's table again")
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    # What webinar's driver reads and this bench does not vary.
    args.egress, args.decoders, args.gap = 1, 0, 1.0
    return args


def configs_of(args: argparse.Namespace) -> list[Config]:
    base = one_at_a_time() if args.sweep else [parse_config(c) for c in args.configs.split(",")]
    return abba(base, args.rounds)


def run_one(args: argparse.Namespace, config: Config, workers: Workers, workdir: Path,
            live: dict[str, Any], remaining: Any) -> Json:
    """One configuration on fresh Janus processes and a fresh gateway."""
    from gateway.janus.process import free_port
    from tests.sandbox import INTERFACE

    run: Json = {"config": config.label, "loadavg": list(os.getloadavg())}
    nodes = live["nodes"] = start_nodes(1, INTERFACE, config.event_loops)
    try:
        live.setdefault("janus_info", httpx.get(f"{nodes[0].cfg.api_url}/info", timeout=5).json())
        gateway = live["gateway"] = start_gateway(
            nodes, free_port(), workdir, config.gateway_env() + (args.gateway_env or []))
        try:
            gateway.wait_healthy(30)
            run_capped(lambda: measure(args, nodes, gateway, workers, run, ("gateway",)), remaining)
        finally:
            run["gateway_exit"] = gateway.stop(15)
            live["gateway"] = None
    finally:
        run["leftovers"] = [leftovers_of("egress_cost", j.cfg) for j in nodes if j.running()]
        for janus in nodes:
            janus.stop()
        live["nodes"] = []
    figures = analyse(run)["gateway"]
    side = run["sides"][0]
    run["row"] = run_row(config, figures, run["samples"], side["hold"])
    run["viewer_errors"] = figures["errors"]  # the first few, for a run whose viewers failed
    # Keep what the table needs and the viewers' counts; drop the per-viewer timelines.
    run["sides"] = [{k: v for k, v in side.items() if k != "viewers"}]
    return run


def print_table(results: Json) -> None:
    rows = [r["row"] for r in results["runs"] if "row" in r]
    for run in results["runs"]:  # a --json saved before rows carried the handles
        row, side = run.get("row"), (run.get("sides") or [{}])[0]
        if row and "handles" not in row and side.get("viewers_per_node"):
            row["handles"] = sum(side["viewers_per_node"])
            row["us_per_handle_packet"] = row["cores"] / (row["handles"] * row["pps"]) * 1e6
    p = results["params"]
    print(f"\negress cost: profile {p['profile']}, N={p['viewers']}, hold {p['hold']} s, "
          f"one egress Janus; runs in order:")
    for r in rows:
        print(f"  {r['config']}: {fmt(r['cores'] * 100, 1)} % of a core, "
              f"{fmt(r['us_per_packet'], 1)} µs/packet, {r['viewers']} viewers, "
              f"{r.get('handles', '-')} handles mid-hold "
              f"({fmt(r.get('us_per_handle_packet', float('nan')), 1)} µs/packet each), "
              f"median share {fmt(r['share_median'] * 100, 1)} %, other load {fmt(r['other_cores'], 2)}")
    print("\n" + table(summarise(rows)))
    print(f"\nmachine busy {fmt(results.get('machine_busy_cores', float('nan')), 2)} cores "
          f"over the whole run ({fmt(results.get('elapsed_s', float('nan')))} s)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report:
        print_table(json.loads(args.report.read_text()))
        return 0
    if not enter_netns("egress-cost"):
        return 2
    order = configs_of(args)
    live: dict[str, Any] = {"nodes": [], "gateway": None}
    workers: Workers | None = None
    workdir = Path(tempfile.mkdtemp(prefix="egress-cost-"))

    def kill_children() -> None:
        kill_now(workers, live["gateway"], *live["nodes"])

    install_hard_cap("egress_cost", args.max_seconds + 60, kill_children)
    results: Json = {"params": params_of(args), "order": [c.label for c in order], "runs": []}
    started = now()
    busy0 = machine_busy()

    def remaining() -> float:
        return args.max_seconds - (now() - started)

    def body() -> None:
        nonlocal workers
        workers = Workers(args.procs, worker_main, "egress-cost-viewers")
        for i, config in enumerate(order):
            if remaining() < 30:
                print(f"out of time before run {i + 1} ({config.label})", flush=True)
                break
            print(f"run {i + 1}/{len(order)}: {config.label}", flush=True)
            results["runs"].append(run_one(args, config, workers, workdir, live, remaining))
            if "machine" not in results:
                results["machine"] = machine_info(live["janus_info"])
                print(machine_line(results["machine"]), flush=True)

    status = 1
    try:
        status, _ = guarded("egress_cost", body, args.max_seconds, lambda: "")
    finally:
        if workers is not None:
            workers.stop()
        signal.alarm(0)
    results["elapsed_s"] = now() - started
    results["machine_busy_cores"] = (machine_busy() - busy0) / results["elapsed_s"]
    if results["runs"]:
        print_table(results)
    left = [x for r in results["runs"] for x in r.get("leftovers", [])
            if x and any(x[k] for k in ("sessions", "handles", "rooms", "mountpoints"))]
    print("left in Janus after the runs: " + ("nothing" if not left else json.dumps(left)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    write_json(args.json or RESULTS / f"egress-cost-{args.profile}-{args.viewers}-{stamp}.json",
               results)
    shutil.rmtree(workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
