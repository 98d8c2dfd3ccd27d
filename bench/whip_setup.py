#!/usr/bin/env python3
"""WHIP set-up latency: the gateway against the same work done without it.

What one figure means: the time from sending a WHIP POST (or, for the direct
baseline, the first Janus request) to holding the SDP answer.  Media never
flows; only signalling is measured.

- gateway: ``POST /whip/<stream>`` with the offer -> ``201`` with the answer,
  against ``whip-gateway serve`` running as its own process.
- peers (``--peer``, one or more):
  - ``direct``: the same Janus requests the gateway makes per POST, raw over
    httpx from this process: videoroom ``create`` (on a control handle attached
    once), ``attach``, ``joinandconfigure`` with the offer (``ack``, then the
    event with the answer from the session's long poll);
  - ``simple-whip-server``: Meetecho's WHIP server, Debian's 2023 build, on the
    same Janus over its WebSocket transport (bench/peer_simple_whip.py);
    ``POST /whip/endpoint/<id>`` -> ``201``, to a room and endpoint made for it
    before timing, as its README asks;
  - ``simple-whip-server-upstream``: the current one (janus-whip-server on
    janode), from a checkout given with ``--peer-dir``.

All sides use the same pool of real aiortc offers (Opus + VP8, candidates
on v0/127.0.0.2), run in alternating blocks (ABBA) so that drift and
background noise hit them alike, and tear down (DELETE / detach + destroy)
outside the timed part, with optional untimed pauses (``--settle-ms`` before
the DELETE, ``--gap-ms`` after it) that the fragile Debian peer needs.  Then,
untimed, rounds of 20, 10, 5, 2 publishes at once show what each server
survives (``--survival``); a peer that dies is restarted and its crash
reported.  Afterwards Janus's admin API must show nothing left from the
gateway; what a peer left is reported.

Run as root (it makes a private network namespace, see tests/sandbox.py):

    sudo .venv/bin/python bench/whip_setup.py [--sequential 200] [--concurrent 20]
        [--rounds 5] [--peer direct|simple-whip-server|simple-whip-server-upstream ...]
        [--peer-dir CHECKOUT] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx  # (no threads at import; checked)
from harness import (KEEPALIVE_S, VIDEOROOM, BenchError, CpuMeter, GatewayProcess, Json,
                     aiortc_offerer, at_least_one, enter_netns, finish_on_janus, guarded,
                     install_hard_cap, kill_now, machine_busy, machine_info, params_of,
                     percentile, report_leftovers, run_capped, start_on_janus, write_json)
from janus_direct import DirectJanus, admin_of, room_request
from peer_simple_whip import (DEBIAN, KINDS, UPSTREAM, PeerServer, PeerUnavailable, findings,
                              install_debian, install_upstream, peer_version, wait_for)
from probes import summarize
from whip_setup_report import report, summary, targets
from whip_setup_sides import (STATE, Side, abba, direct_side, gateway_side, peer_side,
                              run_concurrent, run_sequential, survival)

from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.sandbox import INTERFACE

PEER_CHOICES = ("direct", *KINDS)


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
# processes and leftovers


def start_gateway(janus: ManagedJanus, port: int, log_path: Path, wrapper: list[str],
                  log_level: str | None, timing: Path | None = None,
                  extra_env: list[str] | None = None) -> GatewayProcess:
    """``whip-gateway serve`` on the bench's Janus; with --gateway-timing, through bench/probes.py."""
    return start_on_janus(janus.cfg, port, log_path, log_level=log_level, extra_env=extra_env,
                          wrapper=wrapper, records=timing)


def install_peers(args: argparse.Namespace) -> dict[str, Path]:
    """Each Meetecho peer's folder, installed first if needed (before Janus starts)."""
    folders = {}
    for kind in args.peer:
        if kind == DEBIAN:
            folders[kind] = install_debian()
        elif kind == UPSTREAM:
            folders[kind] = install_upstream(args.peer_dir)
    return folders


def start_peers(args: argparse.Namespace, janus: ManagedJanus, folders: dict[str, Path],
                workdir: Path) -> list[PeerServer]:
    """Rooms made for them through Janus's admin API, then the peers, their endpoints."""
    admin = admin_of(janus.cfg)
    width = max([args.concurrent, *args.survival])
    servers = []
    for n, (kind, folder) in enumerate(folders.items()):
        first = 900_000_000 + n * 10_000
        shared = args.peer_room == "shared"
        rooms = [first] * width if shared else [first + i for i in range(width)]
        for room in sorted(set(rooms)):
            admin.plugin(VIDEOROOM, room_request("create", room, janus.cfg.plugin_admin_key,
                                                 publishers=width if shared else 1))
        server = PeerServer(kind, folder, workdir / kind, janus.cfg.ws_url, free_port(), rooms,
                            labels=not shared,
                            list_sessions=lambda: list(admin.call(
                                "", {"janus": "list_sessions"}).get("sessions", [])))
        server.workdir.mkdir()
        server.start()
        servers.append(server)
    return servers


def stop_peers(servers: list[PeerServer], janus: ManagedJanus | None, results: Json) -> None:
    """What each peer holds in Janus, then stop it and see what stays; then drop its rooms."""
    admin = admin_of(janus.cfg) if janus is not None and janus.running() else None
    for server in servers:
        left: Json = {}
        if admin is not None and server.alive():
            before = admin.leftovers()
            left = {"sessions": len(server.janus_sessions),
                    "handles": sum(len(before["detail"]["handles"].get(str(s), []))
                                   for s in server.janus_sessions)}
        server.stop()
        if admin is not None:
            own = set(server.janus_sessions)

            def still_there(own: set[int] = own, admin: Any = admin) -> set[int]:
                return own & set(admin.call("", {"janus": "list_sessions"}).get("sessions", []))

            # Janus frees a session when its WebSocket closes: wait for that.
            wait_for(lambda: not still_there(), 5.0)
            left["sessions_after_stop"] = len(still_there())
            for room in sorted(set(server.rooms)):
                try:
                    admin.plugin(VIDEOROOM, room_request("destroy", room, admin.admin_key))
                except BenchError:
                    pass
        results.setdefault("peer_leftovers", {}).setdefault(server.kind, {}).update(left)


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
# the run


def side_results(side: Side) -> Json:
    return {
        "sequential": summary(side.sequential),
        "concurrent": summary(side.concurrent),
        "round_wall": summary(side.round_walls),
        "errors": side.errors,
        "cpu_ms_per_publish": {k: v * 1000 / max(len(side.sequential), 1)
                               for k, v in side.cpu.items()},
        "samples_ms": {"sequential": [s * 1000 for s in side.sequential],
                       "concurrent": [s * 1000 for s in side.concurrent]},
    }


async def measure(args: argparse.Namespace, janus: ManagedJanus, gateway: GatewayProcess,
                  servers: list[PeerServer], results: Json) -> None:
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
        pids = {"janus": janus.proc.pid, "gateway": gateway.proc.pid,  # type: ignore[union-attr]
                "bench": os.getpid()}
        sides = [gateway_side(http, gateway.url)]
        for kind in args.peer:
            if kind == "direct":
                await direct.start()
                sides.append(direct_side(direct))
        for server in servers:
            sides.append(peer_side(http, server))
            pids[server.kind] = server.proc.proc.pid  # type: ignore[union-attr]
        STATE.cpu = CpuMeter(pids)
        # Warm-up, not recorded: connections, code paths, Janus's first rooms.
        for side in sides:
            await run_sequential(side, offers, 10_000, args.warmup, record=False)
        direct.steps.clear()
        if args.py_spy:
            spy = start_py_spy(gateway.proc.pid, args.py_spy)
        busy0, ours0 = (machine_busy(), time.monotonic()), STATE.cpu.read()
        done, index = 0, 0
        while done < args.sequential:
            count = min(args.block, args.sequential - done)
            for side in abba(index, sides):
                await run_sequential(side, offers, done, count)
            done += count
            index += 1
        sequential_steps = list(direct.steps)
        # Warm the connection pools for the concurrent part (kept shorter-lived
        # than the servers' idle timeouts, so none is stale when reused).
        for side in sides:
            await run_concurrent(side, offers, 10_000, args.concurrent, record=False)
        for r in range(args.rounds):
            for side in abba(r, sides):
                await run_concurrent(side, offers, r, args.concurrent)
        busy1, ours1 = (machine_busy(), time.monotonic()), STATE.cpu.read()
        stop_py_spy(spy)
        wall = busy1[1] - busy0[1]
        ours = sum(v - ours0[k] for k, v in ours1.items()  # NaN: a peer restarted
                   if not math.isnan(v - ours0[k]))
        results["cpu_load"] = {
            "wall_s": wall,
            "ours_cores": ours / wall,
            "others_cores": max(busy1[0] - busy0[0] - ours, 0.0) / wall,
        }
        # With the servers still up: only the gateway's session and its 2
        # control handles, direct's (1 control handle), each peer's session
        # and the rooms made for the peers may remain.
        admin = admin_of(cfg)
        results["leftovers_during"] = await asyncio.to_thread(admin.leftovers)
        held = results["leftovers_during"]["detail"]["handles"]
        for server in servers:  # every DELETE it answered should have freed its handle
            results.setdefault("peer_leftovers", {})[server.kind] = {"handles_after_timed": sum(
                len(held.get(str(session), [])) for session in server.janus_sessions)}
        for side in sides:
            results[side.name] = side_results(side)
            results[side.name]["expected"] = {"sequential": args.sequential,
                                              "concurrent": args.rounds * args.concurrent}
        results["survival"] = {side.name: await survival(side, offers, args.survival,
                                                          args.survival_rounds)
                               for side in sides if side.name != "direct" and args.survival}
        if "direct" in args.peer:
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


def widths(text: str) -> list[int]:
    """``--survival 20,10,5,2`` -> [20, 10, 5, 2]; empty: none."""
    out = [int(w) for w in text.split(",") if w.strip()]
    if any(w < 1 for w in out):
        raise argparse.ArgumentTypeError("widths must be 1 or more")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=200, help="sequential publishes per side")
    parser.add_argument("--concurrent", type=int, default=20, help="publishes at once per round")
    parser.add_argument("--rounds", type=int, default=5, help="concurrent rounds per side")
    parser.add_argument("--offers", type=int, default=20, help="distinct aiortc offers in the pool")
    parser.add_argument("--block", type=int, default=20, help="sequential publishes per ABBA block")
    parser.add_argument("--warmup", type=int, default=10, help="unrecorded publishes per side first")
    parser.add_argument("--peer", action="append", choices=PEER_CHOICES,
                        help="what the gateway is compared with (repeatable; default: direct)")
    parser.add_argument("--peer-dir", type=Path, metavar="CHECKOUT",
                        help="a clone of meetecho/simple-whip-server, for "
                             "--peer simple-whip-server-upstream (npm-installed on first use)")
    parser.add_argument("--peer-room", choices=["own", "shared"], default="own",
                        help="own: a room and a display name per peer endpoint, as the gateway "
                             "has a room per stream; shared: all endpoints in one room with the "
                             "peer's default display name, as in its README's example")
    parser.add_argument("--settle-ms", type=float, default=0.0,
                        help="untimed pause between a 201 and its DELETE, every side")
    parser.add_argument("--gap-ms", type=float, default=0.0,
                        help="untimed pause after a DELETE before the next publish, every side")
    parser.add_argument("--survival", type=widths, default=None, metavar="W,W,...",
                        help="untimed rounds this many at once, for what each server survives "
                             "(default with a simple-whip-server peer: 20,10,5,2; '' for none)")
    parser.add_argument("--survival-rounds", type=int, default=2, help="rounds per width")
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
    parser.add_argument("--keep-logs", type=Path,
                        help="copy the gateway, Janus and peer logs here")
    args = parser.parse_args(argv)
    at_least_one(parser, args, ("sequential", "concurrent", "rounds", "offers", "block"))
    args.peer = list(dict.fromkeys(args.peer or ["direct"]))
    if UPSTREAM in args.peer and args.peer_dir is None:
        parser.error(f"--peer {UPSTREAM} needs --peer-dir (a clone of meetecho/simple-whip-server)")
    if args.survival is None:
        args.survival = [20, 10, 5, 2] if set(args.peer) & set(KINDS) else []
    STATE.settle_s, STATE.gap_s = args.settle_ms / 1000, args.gap_ms / 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # before the namespace and Janus: npm and apt need the network
        folders = install_peers(args)
    except PeerUnavailable as exc:
        print(f"whip_setup: {exc}", file=sys.stderr)
        return 2
    if not enter_netns("whip_setup"):
        return 2

    janus: ManagedJanus | None = None
    gateway: GatewayProcess | None = None
    servers: list[PeerServer] = []
    workdir = Path(tempfile.mkdtemp(prefix="whip-bench-"))

    def kill_all() -> None:
        for server in servers:
            server.kill_now()
        kill_now(gateway, janus)

    install_hard_cap("whip_setup", args.max_seconds + 60, kill_all)
    results: Json = {"params": params_of(args), "peers": args.peer,
                     "peer_versions": {k: peer_version(k, f) for k, f in folders.items()}}
    started = time.perf_counter()

    def run() -> None:
        nonlocal janus, gateway
        # WebSocket on: the gateway's default janus_transport, and the janode peers'.
        janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, websockets=True))
        janus.start()
        janus_info = httpx.get(f"{janus.cfg.api_url}/info", timeout=5).json()
        gateway = start_gateway(janus, free_port(), workdir / "gateway.log",
                                args.gateway_wrapper.split(), args.gateway_log_level,
                                args.gateway_timing, args.gateway_env)
        health = gateway.wait_healthy(30)
        servers.extend(start_peers(args, janus, folders, workdir))
        results["machine"] = machine_info(janus_info)
        results["gateway_health"] = health
        results["gateway_command"] = gateway.command
        results["gateway_env"] = args.gateway_env or []
        print(f"Janus {janus_info.get('version_string')} at {janus.cfg.api_url}; "
              f"gateway at {gateway.url} (pid {gateway.proc.pid}); "
              + "".join(f"{s.kind} at {s.url}; " for s in servers) + "measuring ...", flush=True)
        run_capped(lambda: measure(args, janus, gateway, servers, results),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (time.perf_counter() - started))
        results["elapsed_s"] = time.perf_counter() - started

    status = 1
    try:
        status, _ = guarded("whip_setup", run, args.max_seconds,
                            lambda: gateway.log_tail() if gateway is not None else "")
    finally:
        try:
            stop_peers(servers, janus, results)
        except Exception as exc:  # noqa: BLE001 - the leak check below still runs
            print(f"whip_setup: stopping the peers: {exc!r}", file=sys.stderr)
        logs = [workdir / "gateway.log", *(log for s in servers for log in s.logs)]
        status = finish_on_janus("whip_setup", results, status, gateway, janus, args.keep_logs,
                                 logs)
        results["peer_crashes"] = {s.kind: [vars(c) for c in s.crashes] for s in servers}
        shutil.rmtree(workdir, ignore_errors=True)
        signal.alarm(0)

    if status == 0:
        g = results["gateway"]
        results["targets"] = {name: targets(g, results[name], name) for name in args.peer}
        print()
        print(report(results))
        for server in servers:
            print()
            print("\n".join(findings(server.kind, results["survival"].get(server.kind, []),
                                     server.crashes,
                                     results.get("peer_leftovers", {}).get(server.kind))))
        if "gateway" in results.get("survival", {}):
            print()
            print("\n".join(findings("gateway", results["survival"]["gateway"], [], None)))
        during = results.get("leftovers_during", {})
        if args.gateway_timing and args.gateway_timing.exists():
            print()
            print(summarize(args.gateway_timing, g["sequential"]["p50_ms"]))
        expected = (1 + ("direct" in args.peer) + len(servers), 2 + ("direct" in args.peer))
        print(f"while running: {during.get('sessions')} Janus sessions, {during.get('handles')} "
              f"handles (expected {expected[0]} sessions, {expected[1]} control handles "
              "+ the gateway's publisher pool, ingest_pool_size: 2 by default), "
              f"{during.get('rooms')} rooms (expected {sum(len(set(s.rooms)) for s in servers)}, "
              "the peers' own, + the pool's)")
    status = report_leftovers(results, ("sessions", "handles", "rooms"), status)
    write_json(args.json, results)
    return status


if __name__ == "__main__":
    sys.exit(main())
