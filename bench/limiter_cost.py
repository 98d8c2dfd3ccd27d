#!/usr/bin/env python3
"""What the rate limiter costs: gateway CPU per request, with and without it.

Three ``whip-gateway serve`` processes on one Janus, the same but for the
limits: off, counted in memory (the default), counted in a real
``redis-server`` (replicas).  Each gets the same WHEP join traffic from
127.0.0.1: per viewer a POST with a browser's offer, two trickle PATCHes
and a DELETE.  Nobody publishes, so the answers are 409 and 404: the
request passes the limiter and ends in the domain before any Janus work,
which makes the limiter's share as large as it can be (a real WHEP set-up
costs the gateway more, so its share there is smaller).

Blocks of viewers go to the three gateways in turn (A B C C B A ...), so
drift and other load fall on all of them alike.  CPU is utime + stime of
each gateway process from /proc, less what it spends idle (keepalives to
Janus), measured for each before the traffic.  Also printed: the limiter's
``admit()`` alone, in this process, without HTTP.

Run as root (a private network namespace for Janus), about 30 s:

    sudo .venv/bin/python bench/limiter_cost.py [--viewers 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx  # noqa: E402
from harness import (
    RATE_LIMITS_OFF,
    REPO,
    GatewayProcess,
    Json,
    cpu_seconds,
    enter_netns,
    gateway_command,
    gateway_env,
    install_hard_cap,
    janus_nodes_env,
    kill_now,
    machine_busy,
    run_capped,
)

from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402
from tests.sandbox import INTERFACE  # noqa: E402
from tests.webinar import REQUESTS_PER_VIEWER, join_and_leave  # noqa: E402

OFFER = (REPO / "tests" / "fixtures" / "sdp" / "chrome_view.sdp").read_text()


def start(janus: ManagedJanus, name: str, env_extra: dict[str, str], log: Path) -> GatewayProcess:
    env = gateway_env(clean=True)
    env["WHIP_GATEWAY_JANUS"] = janus_nodes_env(janus.cfg)
    env["WHIP_GATEWAY_INSTANCE_NAME"] = f"bench-limiter-{name}"  # three gateways, one Janus
    env["WHIP_GATEWAY_LOG_LEVEL"] = "warning"
    env.update(env_extra)
    return GatewayProcess(gateway_command(), env, log, free_port())


async def idle_rate(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


async def admit_alone(storage: str, n: int) -> float:
    """µs of this process's CPU per ``admit()`` of a WHEP POST (no HTTP, no ASGI)."""
    from gateway.config import load_settings
    from gateway.http.ratelimit import LimitedRequest, RateLimits

    limits = RateLimits.from_settings(load_settings(rate_limit_storage=storage,
                                                    rate_limit_view_per_client=f"{n * 10}/minute"))
    try:
        req = LimitedRequest("POST", "192.0.2.1", "whep", "bench", None, False)
        await limits.admit(req)  # connect, load scripts
        t0 = time.process_time()
        for _ in range(n):
            await limits.admit(req)
        return (time.process_time() - t0) / n * 1e6
    finally:
        await limits.close()


async def measure(args: argparse.Namespace, gateways: dict[str, GatewayProcess],
                  redis_url: str, results: Json) -> None:
    idle = {name: await idle_rate(gw.proc.pid, args.idle_seconds) for name, gw in gateways.items()}
    cpu = dict.fromkeys(gateways, 0.0)
    statuses = {name: Counter[int]() for name in gateways}
    names = list(gateways)
    blocks = max(1, args.viewers // args.block)
    busy_before = machine_busy()
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency,
                          keepalive_expiry=4.0)
    async with httpx.AsyncClient(timeout=15, limits=limits) as http:
        gate = asyncio.Semaphore(args.concurrency)

        async def one(url: str, i: int, into: Counter[int]) -> None:
            async with gate:
                await join_and_leave(http, f"{url}/whep/bench", f"{url}/whep/bench/v{i}", OFFER, into)

        for b in range(blocks):
            order = names if b % 2 == 0 else names[::-1]
            for name in order:
                gw = gateways[name]
                t0, c0 = time.perf_counter(), cpu_seconds(gw.proc.pid)
                await asyncio.gather(*(one(gw.url, b * args.block + i, statuses[name])
                                       for i in range(args.block)))
                spent = cpu_seconds(gw.proc.pid) - c0
                cpu[name] += spent - idle[name] * (time.perf_counter() - t0)
    wall = time.perf_counter() - started
    requests = blocks * args.block * REQUESTS_PER_VIEWER
    per_request = {name: cpu[name] / requests * 1e6 for name in names}
    results.update({
        "requests_per_gateway": requests,
        "statuses": {name: dict(s) for name, s in statuses.items()},
        "idle_cpu_per_s": idle,
        "cpu_us_per_request": per_request,
        "limiter_us_per_request": {n: per_request[n] - per_request["off"] for n in names if n != "off"},
        "ratio_to_off": {n: per_request[n] / per_request["off"] for n in names},
        "admit_alone_us": {"memory": await admit_alone("memory://", 2000),
                           "redis": await admit_alone(redis_url, 2000)},
        "wall_s": wall,
        "other_load_cores": max(0.0, (machine_busy() - busy_before) / wall
                                - sum(cpu.values()) / wall),
    })


def report(results: Json) -> None:
    names = list(results["cpu_us_per_request"])
    print(f"\n{results['requests_per_gateway']} requests per gateway "
          f"(WHEP POST -> 409, 2 PATCH + DELETE -> 404), {results['wall_s']:.1f} s")
    print(f"{'gateway CPU per request (µs)':34}" + "".join(f"{n:>10}" for n in names))
    print(f"{'all of it':34}" + "".join(f"{results['cpu_us_per_request'][n]:10.1f}" for n in names))
    print(f"{'the limiter (minus off)':34}{'-':>10}" + "".join(
        f"{results['limiter_us_per_request'][n]:10.1f}" for n in names[1:]))
    print(f"{'ratio to off':34}" + "".join(f"{results['ratio_to_off'][n]:10.2f}" for n in names))
    alone = results["admit_alone_us"]
    print(f"admit() alone, per WHEP POST (3 budgets): memory {alone['memory']:.1f} µs, "
          f"redis {alone['redis']:.1f} µs (this process; redis-server's own CPU not counted)")
    bad = {n: s for n, s in results["statuses"].items() if set(s) - {409, 404}}
    print("statuses: " + ("all 409/404, no 429" if not bad else f"unexpected {bad}"))
    print(f"other load on the machine meanwhile: {results['other_load_cores']:.2f} cores")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--viewers", type=int, default=500, help="joins per gateway (default 500)")
    parser.add_argument("--block", type=int, default=50, help="joins per block (default 50)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not enter_netns("limiter_cost"):
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="limiter-bench-"))
    gateways: dict[str, GatewayProcess] = {}
    janus: ManagedJanus | None = None

    def kill_children() -> None:
        kill_now(*gateways.values(), janus)

    install_hard_cap("limiter_cost", args.max_seconds + 60, kill_children)
    results: Json = {"params": {k: str(v) for k, v in vars(args).items()}}
    status = 1
    try:
        with redis_server() as redis_url:
            janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE))
            janus.start()
            for name, extra in (("off", RATE_LIMITS_OFF), ("memory", {}),
                                ("redis", {"WHIP_GATEWAY_RATE_LIMIT_STORAGE": redis_url})):
                gateways[name] = start(janus, name, extra, workdir / f"{name}.log")
            for gw in gateways.values():
                gw.wait_healthy(30)
            t0 = time.perf_counter()
            run_capped(lambda: measure(args, gateways, redis_url, results),
                       lambda: args.max_seconds - (time.perf_counter() - t0))
            status = 0
    except Exception as exc:  # noqa: BLE001 - report, then clean up
        print(f"limiter_cost: {exc!r}", file=sys.stderr)
        for name, gw in gateways.items():
            print(f"--- {name}:\n{gw.log_tail(10)}", file=sys.stderr)
    finally:
        for gw in gateways.values():
            gw.stop()
        if janus is not None:
            janus.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        signal.alarm(0)
    if status == 0:
        report(results)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    return status


if __name__ == "__main__":
    sys.exit(main())
