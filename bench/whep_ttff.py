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
and decoding.  With probes (default), the gateway runs through bench/probes.py,
which listens to its named timing hooks (gateway/probes.py) and times each
step of every WHEP POST: variant (mountpoint + rtp_forward for the first
viewer, lock wait for the rest), attach, watch (POST->ack, ack->event),
bridge, start.

``--against janus-whep-server`` replaces the native side by Meetecho's WHEP
server library (npm, ``peer_janus_whep``), on Janus 1.4.1 of the sid chroot
for both sides (its client-offer path needs Janus >= 1.1.4; ``--janus-sid``
is then implied): the same aiortc offers POSTed to its endpoint, whose
mountpoint the bench makes before timing like the gateway's own variant
(``whep_ttff_sides``).  Signalling = POST -> 201, TTFF = POST -> first
decoded frame on both sides; the report gives gateway/peer ratios.

The bench is split: ``whep_ttff_scenario`` (what a viewer does, in the
worker processes), ``whep_ttff_driver`` (processes, publisher, batches),
``whep_ttff_sides`` (what each side's viewers join, its set-up),
``whep_ttff_report`` (figures); this file is the command line.

Run as root (it makes a private network namespace, see tests/sandbox.py):

    sudo .venv/bin/python bench/whep_ttff.py [--viewers 50] [--procs 2]
        [--rounds 3] [--json out.json] [--against janus-whep-server]

Digging: ``--warm`` (one unmeasured gateway viewer all along, so the PT
variant outlives the batches), ``--bufferkf`` (experiment: Janus keeps the
last key frame of every video mountpoint, the bench's own and the gateway's),
``--ice-lite``, ``--gateway-profile FILE`` (cProfile), ``--keep-logs DIR``.
The gateway runs with its POST rate limits off: every viewer is 127.0.0.1.

Afterwards Janus's admin API must show nothing left: sessions, handles,
VideoRoom rooms, Streaming mountpoints.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import peer_janus_whep
from harness import (
    GatewayProcess,
    Json,
    at_least_one,
    enter_netns,
    finish_on_janus,
    guarded,
    install_hard_cap,
    kill_now,
    machine_info,
    params_of,
    report_leftovers,
    run_capped,
    write_json,
)
from janus_direct import leftovers_of
from probes import read_records
from whep_ttff_driver import Workers, measure, start_gateway
from whep_ttff_report import analyse, report
from whep_ttff_scenario import NATIVE, now
from whep_ttff_sides import PEERS

DEFAULT_SID_CHROOT = Path("/var/cache/whip-gateway/janus-sid")  # as tests/janus_versions.py


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
                             "(Janus 'bufferkf'), the bench's own and the gateway's "
                             "(WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME)")
    parser.add_argument("--gateway-profile", type=Path, metavar="FILE",
                        help="run the gateway under cProfile, write the stats to FILE and "
                             "print its top functions; slows the gateway down")
    parser.add_argument("--gateway-log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--gateway-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the gateway only (PYTHONPATH is prepended), "
                             "e.g. WHIP_GATEWAY_MOUNTPOINT_GRACE=30; repeatable")
    parser.add_argument("--ice-lite", action="store_true",
                        help="run Janus in ICE-lite mode (no ICE role conflict on bridged viewers)")
    parser.add_argument("--janus-event-loops", type=int, default=0, help="janus.jcfg event_loops")
    parser.add_argument("--keep-logs", type=Path,
                        help="copy the gateway, Janus, probe (and peer) logs here")
    parser.add_argument("--against", choices=[NATIVE, *PEERS], default=NATIVE,
                        help="the other side: Janus's own server-offer flow (native), or a WHEP "
                             "server on the same Janus (janus-whep-server: implies --janus-sid)")
    parser.add_argument("--janus-sid", type=Path, nargs="?", const=DEFAULT_SID_CHROOT,
                        metavar="CHROOT", help="run the Janus of this chroot (deploy/janus-sid.sh; "
                                               f"default {DEFAULT_SID_CHROOT}) for both sides")
    args = parser.parse_args(argv)
    at_least_one(parser, args, ("viewers", "procs", "rounds"))
    if args.against in PEERS:
        args.janus_sid = args.janus_sid or DEFAULT_SID_CHROOT
        if not (args.warmup or args.warm):
            parser.error(f"--against {args.against} needs --warmup >= 1 or --warm: the peer's "
                         "mountpoint copies the gateway's variant, made by its first viewer")
    if args.janus_sid is not None and not (args.janus_sid / "usr/bin/janus").is_file():
        parser.error(f"no Janus in {args.janus_sid}; run deploy/janus-sid.sh")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
    from tests.sandbox import INTERFACE

    peer_version = ""
    if args.against in PEERS:  # npm needs the network: before the private namespace
        peer_version = peer_janus_whep.install()
    if not enter_netns("whep_ttff"):
        return 2

    janus: Any = None
    gateway: GatewayProcess | None = None
    peer: peer_janus_whep.JanusWhepPeer | None = None
    workers: Workers | None = None
    workdir = Path(tempfile.mkdtemp(prefix="whep-ttff-"))
    probes = workdir / "probes.jsonl" if args.probes else None

    def kill_children() -> None:
        kill_now(workers, peer, gateway, janus)

    install_hard_cap("whep_ttff", args.max_seconds + 90, kill_children)
    results: Json = {"params": params_of(args)}
    started = now()

    def run() -> None:
        nonlocal janus, gateway, workers, peer
        workers = Workers(args.procs)  # spawned early: they import aiortc meanwhile
        janus = ManagedJanus(JanusProcessConfig(
            ice_enforce_list=INTERFACE, ice_lite=args.ice_lite, event_loops=args.janus_event_loops,
            websockets=True,  # the gateway's janus_transport=websocket, and janode peers
            chroot=str(args.janus_sid) if args.janus_sid else None))
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
        if args.against in PEERS:
            peer = peer_janus_whep.JanusWhepPeer(janus.cfg.ws_url, free_port(), workdir / "peer.log")
            peer.wait_ready(30)
            machine["peer"] = f"{peer_janus_whep.PACKAGE} {peer_version}, node {node_version()}"
        print(f"Janus {janus_info.get('version_string')}; gateway pid {gateway.proc.pid}; "
              f"{args.procs} viewer process(es); measuring ...", flush=True)
        run_capped(lambda: measure(args, janus, gateway, workers, results, peer),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (now() - started))

    status = 1
    try:
        status, _ = guarded("whep_ttff", run, args.max_seconds,
                            lambda: gateway.log_tail() if gateway is not None else "")
    finally:
        if workers is not None:
            workers.stop()
        if peer is not None:  # first: what it leaves in Janus counts as its own
            results["peer_died"] = peer.died()
            results["peer_exit"] = peer.stop()
        if gateway is not None and janus is not None and janus.running():
            # The gateway drops its variants after a grace period; let it, then look.
            time.sleep(3.5)
            results["leftovers_gateway_up"] = leftovers_of("whep_ttff", janus.cfg)
        status = finish_on_janus("whep_ttff", results, status, gateway, janus, args.keep_logs,
                                 (workdir / "gateway.log", workdir / "probes.jsonl",
                                  workdir / "peer.log"), 15.0)
        signal.alarm(0)
    results["elapsed_s"] = now() - started
    if status == 0:
        posts, lag = read_records(probes) if probes else ([], [])
        results["analysis"] = analyse(results, posts, lag,
                                      peer_janus_whep.read_probes(workdir / "peer.log"))
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


def node_version() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
