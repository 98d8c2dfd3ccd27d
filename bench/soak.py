#!/usr/bin/env python3
"""Soak: thousands of random WHIP/WHEP lifecycle operations, then leaks and memory.

The gateway runs as its own process, ``whip-gateway serve`` in its embedded
default: it starts and supervises two Janus processes of its own (an ingest
node and an ICE-lite egress node).  The bench then drives it with ``--ops``
operations chosen at random (weights below), ``--concurrency`` at a time:

- publish: POST a real aiortc offer to /whip/sN.  Most are signalling only
  (an offer from a pool made up front; nobody ever answers Janus's ICE
  checks, so the gateway reaps them after its connect timeout).  A share
  (``--media-share``) makes a fresh aiortc publisher that connects and
  sends media (tone + test pattern), so streams go live;
- view: POST a recvonly aiortc offer to /whep/sN of a stream that is live
  (or has a publisher): 201 or 409.  The same share connects real media;
- trickle: PATCH a candidate to a known resource with its ETag (204);
- ice_restart: PATCH new ICE credentials, ``If-Match: "*"`` (WHIP, 200);
- delete: DELETE a known resource (200; 404 once the gateway reaped it);
- drop: forget a resource without DELETE (a media peer is closed).

At 50 % of the run the ingest Janus gets SIGKILL, at 75 % the egress one;
the gateway must restart them.  503s while a node is down are expected and
counted apart.  Then everything still known is DELETEd, the gateway's
timeouts are left to expire, and both Janus nodes are asked (admin API) what
they still hold: sessions beyond the gateway's own, handles beyond its two
control handles, VideoRoom rooms, Streaming mountpoints, RTP forwarders.
The gateway's RSS is compared after warm-up and at the end.

The bench is split: ``soak_scenario`` (the operations), ``soak_driver`` (the
gateway, its nodes, the run), ``soak_report`` (figures and verdict); this
file is the command line.  ``--heap-profile`` runs the gateway through
bench/probes.py (tracemalloc, heap dumps on SIGUSR2).

Run as root (it makes a private network namespace, see tests/sandbox.py):

    sudo .venv/bin/python bench/soak.py [--ops 10000] [--concurrency 8]
        [--media-share 0.03] [--seed 1] [--json out.json] [--max-seconds 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import tempfile
import time
from pathlib import Path

import httpx
from harness import (KEEPALIVE_S, Json, cpu_seconds, enter_netns, git, guarded, install_hard_cap,
                     params_of, rss_kb, run_capped, write_json)
from probes import session_types
from soak_driver import EXIT_LINE, Gateway, Soak, backtrace, describe_status
from soak_report import failures_of, heap_report, log_summary, report, summarize
from soak_scenario import DEFAULT_WEIGHTS, FORGET_S, OPS, offer_pool

# Longer than a resource lives in the mix (FORGET_S, plus the gateway's timers).
WARMUP_S = FORGET_S + 10
WARMUP_CAP = 20_000  # operations, whatever the rate
DEFAULT_SID_CHROOT = "/var/cache/whip-gateway/janus-sid"  # as tests/janus_versions.py


# --------------------------------------------------------------------------
# main


async def run(args: argparse.Namespace, gateway: Gateway, results: Json, started: float) -> None:
    http = httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout), limits=httpx.Limits(
        max_connections=None, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_S))
    admin_http = httpx.AsyncClient(timeout=5)
    soak: Soak | None = None
    poller: asyncio.Task[None] | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        t0 = time.monotonic()
        pub_offers = await offer_pool(args.offers, "sendonly")
        view_offers = await offer_pool(args.offers, "recvonly")
        results["offer_pool_s"] = time.monotonic() - t0
        soak = Soak(args, gateway, http, admin_http, pub_offers, view_offers)
        soak.stop_ops_at = started + args.max_seconds - 90  # leave time to clean up
        soak.started = started
        soak.crash_dir = Path(results["crash_dir"])
        watcher = asyncio.create_task(soak.watch_janus())
        results["nodes_at_start"] = {r: {"pid": n.pid, "admin_url": n.admin_url,
                                         "folder": str(n.folder)} for r, n in soak.nodes.items()}
        results["janus_at_start"] = await soak.janus_state()
        poller = asyncio.create_task(soak.poller())

        # The RSS baseline must be taken at the main phase's steady state: after
        # as long a stretch of the same mix as the longest a resource lives in
        # it (signalling-only ones are forgotten after FORGET_S), so that the
        # gateway has held as many live sessions as it will in the main phase.
        # Before that, RSS still climbs with the live population, and the
        # allocator keeps that memory afterwards: growth, but no leak.
        print(f"warm-up: at least {args.warmup} ops and {args.warmup_seconds:g} s ...", flush=True)
        warm_ops = 0
        warm_t0 = time.monotonic()
        while warm_ops < args.warmup or (time.monotonic() - warm_t0 < args.warmup_seconds
                                         and warm_ops < WARMUP_CAP):
            await soak.run_ops("warmup", args.warmup, kills=False)
            warm_ops += args.warmup
        results["warmup_ops"] = warm_ops
        results["warmup_s"] = round(time.monotonic() - warm_t0, 1)
        results["after_warmup"] = await soak.settle("after_warmup")
        await gateway.heap_dump()
        rss_start = rss_kb(gateway.proc.pid)
        cpu0 = cpu_seconds(gateway.proc.pid)
        soak.sample("main", 0)
        print(f"gateway RSS after warm-up {rss_start / 1024:.1f} MiB; {args.ops} ops ...", flush=True)

        progress = asyncio.create_task(show_progress(soak, args.ops))
        try:
            await soak.run_ops("main", args.ops, kills=True)
        finally:
            progress.cancel()
        await soak.audit("end of ops")
        cpu1 = cpu_seconds(gateway.proc.pid)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        poller = None
        print("deleting what is left, letting the gateway's timers expire ...", flush=True)
        end = await soak.settle("end")
        await asyncio.sleep(5)
        end["janus_again"] = await soak.janus_state()
        results["end"] = end
        rss_end = rss_kb(gateway.proc.pid)
        last = await gateway.heap_dump()
        if last is not None:
            results["heap"] = heap_report(gateway.heap_dir, 0, last)  # type: ignore[arg-type]
        peak = max([rss_end, rss_start] + [s["gateway_rss_kb"] for s in soak.series
                                           if s["phase"] == "main"])
        main_series = [x for x in soak.series if x["phase"] == "main"]
        trajectory = {}
        for share in (0.25, 0.5, 0.75):
            near = [x for x in main_series if x["op"] >= args.ops * share]
            if near:
                trajectory[f"op {near[0]['op']}"] = near[0]["gateway_rss_kb"]
        # The target applies from the middle of the main phase on: by then the
        # live population (and the RSS that follows it) has reached its steady
        # state, whatever the rate; a leak per operation still shows there.
        half = [x for x in main_series if x["op"] >= args.ops * 0.5]
        half_kb = half[0]["gateway_rss_kb"] if half else None
        results["rss"] = {"start_kb": rss_start, "end_kb": rss_end, "peak_kb": peak,
                          "trajectory_kb": trajectory, "half_kb": half_kb,
                          "steady_growth_pct": ((rss_end - half_kb) * 100 / half_kb
                                                if half_kb else None),
                          "growth_pct": (rss_end - rss_start) * 100 / rss_start,
                          "gateway_cpu_s": cpu1 - cpu0,
                          "gateway_cpu_ms_per_op": (cpu1 - cpu0) * 1000 / max(args.ops, 1)}
    finally:
        for task in (poller, watcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if soak is not None and soak._fills:
            await asyncio.gather(*soak._fills, return_exceptions=True)
        if soak is not None:
            results["crashes"] = soak.crashes
            results["kill_errors"] = soak.kill_errors
            for res in soak.resources:
                await soak.close_peer(res)
            summarize(soak, results)
            results["aborted"] = soak.aborted
            results["media"] = dict(soak.media)
            results["forgotten"] = soak.forgotten
            results["restarts"] = [{k: v for k, v in o.items() if k != "start" and k != "end"}
                                   for o in soak.outages if not o.get("unplanned")]
            results["audits"] = soak.audits
            results["series"] = soak.series
            results["health_seen"] = dict(soak.health_seen)
        await http.aclose()
        await admin_http.aclose()


async def show_progress(soak: Soak, total: int) -> None:
    while True:
        await asyncio.sleep(15)
        ph = soak.phase
        rate = ph.ops / max(time.monotonic() - ph.started, 1e-9)
        print(f"  {ph.ops}/{total} ops, {rate:.1f} ops/s, known {len(soak.resources)}, "
              f"live {len(soak.live)}, media peers {soak.media_open}, gateway RSS "
              f"{rss_kb(soak.gw.proc.pid) / 1024:.1f} MiB", flush=True)


def parse_weights(text: str) -> dict[str, float]:
    weights = {op: 0.0 for op in OPS}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise argparse.ArgumentTypeError(f"unknown operation {name!r} (known: {', '.join(OPS)})")
        weights[name.strip()] = float(value)
    if sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError("the weights add up to nothing")
    return weights


def parse_inject(text: str) -> tuple[str, int]:
    role, _, op = text.partition(":")
    if role not in ("ingest", "egress") or not op.isdigit():
        raise argparse.ArgumentTypeError("ROLE:OP, e.g. ingest:100")
    return role, int(op)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="operations in the measured run")
    parser.add_argument("--warmup", type=int, default=200,
                        help="operations before the RSS baseline (not counted in --ops), at "
                             "least; repeated until --warmup-seconds have passed")
    parser.add_argument("--warmup-seconds", type=float, default=WARMUP_S,
                        help="the warm-up lasts at least this long, so that the RSS baseline "
                             "is taken at the main phase's steady state (0: --warmup ops only)")
    parser.add_argument("--concurrency", type=int, default=8, help="operations in flight at once")
    parser.add_argument("--media-share", type=float, default=0.03,
                        help="share of publishes and views that connect real aiortc media")
    parser.add_argument("--max-media", type=int, default=3,
                        help="media publishers open at once, at most; the same again for viewers")
    parser.add_argument("--streams", type=int, default=500, help="stream names s0..sN-1")
    parser.add_argument("--offers", type=int, default=30, help="pooled offers of each kind")
    parser.add_argument("--weights", type=parse_weights, default=parse_weights(DEFAULT_WEIGHTS),
                        help=f"operation weights (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-kills", action="store_true", help="do not SIGKILL Janus mid-way")
    parser.add_argument("--op-timeout", type=float, default=20.0, help="per operation, seconds")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="per HTTP request")
    parser.add_argument("--settle-timeout", type=float, default=15.0,
                        help="bound on waiting for the gateway to empty after the final DELETEs")
    parser.add_argument("--audit-every", type=float, default=5.0,
                        help="seconds between forwarder audits during the run (0: off)")
    parser.add_argument("--max-seconds", type=float, default=1200.0,
                        help="cap on the whole run: no new operations after cap-90 s, then clean-up")
    parser.add_argument("--gateway-log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the gateway (e.g. to change a timeout)")
    parser.add_argument("--heap-profile", action="store_true",
                        help="run the gateway under tracemalloc and report what its Python heap "
                             "gained between the two settled points (slows the gateway down)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--janus-sid", type=Path, nargs="?", const=Path(DEFAULT_SID_CHROOT),
                        default=None, metavar="CHROOT",
                        help="run the Janus of this chroot (deploy/janus-sid.sh; default "
                             f"{DEFAULT_SID_CHROOT}) instead of the host's")
    parser.add_argument("--inject-crash", type=parse_inject, default=None, metavar="ROLE:OP",
                        help="testing the soak itself: SIGSEGV the ROLE (ingest/egress) Janus "
                             "at main-phase operation OP, as an unplanned crash")
    parser.add_argument("--crash-dir", type=Path, default=Path("/var/tmp/soak-crashes"),
                        help="where the Janus log, core dump and backtrace of each unplanned "
                             "Janus exit are kept (a folder per run)")
    args = parser.parse_args(argv)
    if args.ops < 4 or args.concurrency < 1 or args.offers < 1 or args.streams < 1:
        parser.error("--ops >= 4, --concurrency, --offers and --streams >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not enter_netns("soak"):
        return 2
    if args.heap_profile:
        session_types()  # the classes it counts must exist where it looks: fail now, not at the end
    workdir = Path(tempfile.mkdtemp(prefix="whip-soak-"))
    if args.janus_sid is not None and not (args.janus_sid / "usr/bin/janus").is_file():
        print(f"soak: no Janus in {args.janus_sid}; run deploy/janus-sid.sh", flush=True)
        return 2
    # Core dumps of a crashing Janus (it inherits this limit through the gateway).
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))
    gateway: Gateway | None = None

    def kill_children() -> None:
        if gateway is not None:
            gateway.kill_all()

    install_hard_cap("soak", args.max_seconds + 120, kill_children)
    results: Json = {"params": params_of(args), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     "crash_dir": str(args.crash_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-"
                                      f"{workdir.name}")}
    started = time.monotonic()

    def body() -> None:
        nonlocal gateway
        heap_dir = workdir / "heap" if args.heap_profile else None
        if heap_dir is not None:
            heap_dir.mkdir()
        gateway = Gateway(workdir, args.gateway_log_level, args.gateway_env, heap_dir,
                          janus_chroot=args.janus_sid)
        results["gateway_command"] = gateway.command
        results["gateway_env"] = gateway.env
        results["gateway_log_path"] = str(gateway.log_path)
        print(f"gateway log: {gateway.log_path}", flush=True)
        results["gateway_health"] = gateway.wait_healthy(60, poll=0.1)
        results["gateway_commit"] = git("describe", "--always", "--dirty")
        results["gateway_dirty_files"] = git("status", "--porcelain", "--", "gateway").splitlines()
        print(f"gateway {results['gateway_commit']} at {gateway.url} (pid {gateway.proc.pid}), "
              f"nodes {list(results['gateway_health']['nodes'])}", flush=True)
        run_capped(lambda: run(args, gateway, results, started),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (time.monotonic() - started))

    status = 1
    try:
        status, outcome = guarded("soak", body, args.max_seconds,
                                  lambda: gateway.log_tail() if gateway is not None else "")
        if outcome == "timeout":
            results["aborted"] = True
    finally:
        if gateway is not None:
            results["gateway_exit"] = gateway.stop()
            results["gateway_log"] = log_summary(gateway.log_path)
            cross_check_exits(gateway, results)
            backtraces(gateway, results)
        signal.alarm(0)
    results["elapsed_s"] = time.monotonic() - started

    print()
    print(report(results))
    failures = failures_of(results)
    results["failures"] = failures
    print(f"\nresult: {'PASS' if not failures else 'FAIL: ' + ', '.join(failures)}")
    write_json(args.json, results)
    return status if status else (1 if failures else 0)


def cross_check_exits(gateway: Gateway, results: Json) -> None:
    """Every "Janus exited (code N)" in the gateway's log: planned SIGKILLs are -9.

    The watcher may miss an exit whose zombie was reaped between two polls;
    the gateway logs each one, so an unplanned exit not yet recorded is added
    here (without its operation number, which only the watcher knows).
    """
    try:
        codes = EXIT_LINE.findall(gateway.log_path.read_text(errors="replace"))
    except OSError:
        return
    results["janus_exits_in_log"] = codes
    planned = sum(1 for o in results.get("restarts", []) if "t_kill" in o.get("event", {}))
    unplanned = [c for c in codes if c != "-9"]
    unplanned += ["-9"] * max(0, codes.count("-9") - planned)  # a SIGKILL not ours
    crashes = results.setdefault("crashes", [])
    for crash, code in zip(crashes, unplanned):
        if crash.get("signal") is None and crash.get("exit_code") is None and code != "None":
            number = int(code)
            crash.update(describe_status(-number if number < 0 else number << 8))
            crash["status_from"] = "gateway log"
    for code in unplanned[len(crashes):]:
        code_n = int(code) if code != "None" else None
        status = -code_n if code_n is not None and code_n < 0 else None
        entry: Json = {"role": "?", "pid": None, **describe_status(status), "op": None,
                       "in_flight": [], "source": "gateway log only"}
        if code_n is not None and code_n >= 0:
            entry["exit_code"] = code_n
        crashes.append(entry)


def backtraces(gateway: Gateway, results: Json) -> None:
    """gdb on each core kept; the full text next to it, the top frames in the results."""
    for crash in results.get("crashes", []):
        core = crash.get("core")
        if not core:
            continue
        text = backtrace(Path(core), gateway.janus_chroot)
        out = Path(core).with_name("backtrace.txt")
        try:
            out.write_text(text)
            crash["backtrace_file"] = str(out)
        except OSError:
            pass
        frames = [line for line in text.splitlines() if line.startswith("#")]
        crash["backtrace_top"] = frames[:12]


if __name__ == "__main__":
    raise SystemExit(main())
