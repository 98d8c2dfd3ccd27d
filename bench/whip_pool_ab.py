#!/usr/bin/env python3
"""WHIP POST -> 201 with the publisher pool on and off, side by side in one run.

Why: on a shared 2-core machine two runs of ``whip_setup.py`` minutes apart
differ by more than the pool saves, and its direct side is as noisy as the
gateway.  Here several gateways run at once on one Janus (each with its own
``instance_name``, so none reaps another's), and the same offers go to each
in turn: sequential publishes in rotating blocks (A B C C B A ...), then
rounds of N concurrent publishes, the variants taking turns.  Each sample is
POST -> 201; the DELETE that follows is not timed.  Every variant sees the
same noise, so their ratios hold even when absolute times do not.

Variants: ``name=KEY=VALUE[,KEY=VALUE]`` (gateway env), and optionally a
``name@DIR`` variant that runs another checkout's code (e.g. the commit before
the pool, exported with ``git archive``).  Default: pool 2 against pool 0.

    sudo .venv/bin/python bench/whip_pool_ab.py [--sequential 200] [--concurrent 20]
        [--rounds 6] [--variant off=WHIP_GATEWAY_INGEST_POOL_SIZE=0] [--variant base@/tmp/old]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import (
    RATE_LIMITS_OFF,
    GatewayProcess,
    Json,
    aiortc_offerer,
    enter_netns,
    gateway_env,
    janus_nodes_env,
    percentile,
    write_json,
)

from gateway.janus.admin import JanusAdmin
from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.sandbox import INTERFACE

SDP = {"Content-Type": "application/sdp"}


def start_variant(spec: str, janus: ManagedJanus, logs: Path) -> tuple[str, GatewayProcess]:
    """``name=K=V,K=V`` (this checkout) or ``name@DIR`` (another checkout's code)."""
    if "@" in spec:
        name, _, folder = spec.partition("@")
        code = Path(folder).resolve()
        items: list[str] = []
    else:
        name, _, rest = spec.partition("=")
        code = Path(__file__).resolve().parent.parent
        items = [i for i in rest.split(",") if i]
    env = gateway_env(clean=True)
    env["PYTHONPATH"] = str(code)
    env["WHIP_GATEWAY_JANUS"] = janus_nodes_env(janus.cfg)
    env["WHIP_GATEWAY_INSTANCE_NAME"] = f"ab-{name}"  # a tag each: none reaps another
    env.update(RATE_LIMITS_OFF)
    for item in items:
        key, _, value = item.partition("=")
        env[key] = value
    port = free_port()
    gw = GatewayProcess([sys.executable, "-m", "gateway.cli"], env, logs / f"{name}.log", port,
                        ["--log-level", "warning"], cwd=code)
    return name, gw


async def publish(http: httpx.AsyncClient, url: str, offer: str, stream: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = await http.post(f"{url}/whip/{stream}", content=offer, headers=SDP)
    took = (time.perf_counter() - t0) * 1000
    if r.status_code != 201:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return took, str(r.headers["location"])


async def measure(args: argparse.Namespace, gateways: list[tuple[str, GatewayProcess]]) -> Json:
    pcs = [await aiortc_offerer("sendonly") for _ in range(args.offers)]
    offers = [pc.localDescription.sdp for pc in pcs]
    seq: dict[str, list[float]] = {name: [] for name, _ in gateways}
    conc: dict[str, list[float]] = {name: [] for name, _ in gateways}
    n = 0
    async with httpx.AsyncClient(timeout=args.request_timeout) as http:
        for name, gw in gateways:  # warm-up (the pools take the offers' room options)
            for i in range(args.warmup):
                _, loc = await publish(http, gw.url, offers[i % len(offers)], f"w{i}")
                await http.delete(loc)
        order = [*gateways, *reversed(gateways)]
        blocks = max(1, args.sequential // args.block) * len(gateways)  # --sequential per variant
        for b in range(blocks):
            name, gw = order[b % len(order)]
            for _ in range(args.block):
                n += 1
                took, loc = await publish(http, gw.url, offers[n % len(offers)], f"s{n}")
                seq[name].append(took)
                await http.delete(loc)
                await asyncio.sleep(args.gap)  # a pool refills between publishes, as in life
        for r in range(args.rounds):
            for name, gw in (gateways if r % 2 == 0 else list(reversed(gateways))):
                got = await asyncio.gather(*(
                    publish(http, gw.url, offers[i % len(offers)], f"c{r}-{i}")
                    for i in range(args.concurrent)))
                conc[name] += [t for t, _ in got]
                await asyncio.gather(*(http.delete(loc) for _, loc in got))
                await asyncio.sleep(0.5)
    for pc in pcs:
        await pc.close()
    out: Json = {}
    for name, _ in gateways:
        out[name] = {"seq_p50": percentile(seq[name], 50), "seq_p95": percentile(seq[name], 95),
                     "conc_p50": percentile(conc[name], 50), "conc_p95": percentile(conc[name], 95),
                     "seq_n": len(seq[name]), "conc_n": len(conc[name])}
    return out


async def leftovers(janus: ManagedJanus) -> Json:
    admin = JanusAdmin(janus.cfg.admin_url, janus.cfg.admin_secret)
    try:
        rooms = await admin.message_plugin("janus.plugin.videoroom",
                                           {"request": "list", "admin_key": janus.cfg.plugin_admin_key})
        return {"sessions": len(await admin.sessions()), "rooms": len(rooms.get("list", []))}
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[],
                        help="name=KEY=VALUE,... or name@DIR (default: on, off)")
    parser.add_argument("--sequential", type=int, default=200, help="per variant")
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between sequential publishes")
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6, help="concurrent rounds per variant")
    parser.add_argument("--offers", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--request-timeout", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    variants = args.variant or ["on=WHIP_GATEWAY_INGEST_POOL_SIZE=2",
                                "off=WHIP_GATEWAY_INGEST_POOL_SIZE=0"]
    if not enter_netns("whip_pool_ab"):
        return 1
    janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE))
    janus.start()
    gateways: list[tuple[str, GatewayProcess]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            gateways = [start_variant(v, janus, Path(tmp)) for v in variants]
            for _, gw in gateways:
                gw.wait_healthy(30)
            results = asyncio.run(measure(args, gateways))
            for _, gw in gateways:
                gw.stop()
            left = asyncio.run(leftovers(janus))
    finally:
        for _, gw in gateways:
            gw.kill_now()
        janus.stop()
    first = next(iter(results))
    print(f"POST -> 201 (ms), {args.sequential} sequential and {args.rounds}x{args.concurrent} "
          f"concurrent per variant; ratio to '{first}'")
    print(f"{'variant':10} {'seq p50':>9} {'seq p95':>9} {'conc p50':>9} {'conc p95':>9}")
    for name, r in results.items():
        ratios = "  ".join(f"{r[k] / results[first][k]:.2f}"
                           for k in ("seq_p50", "seq_p95", "conc_p50", "conc_p95"))
        print(f"{name:10} {r['seq_p50']:9.2f} {r['seq_p95']:9.2f} {r['conc_p50']:9.2f} "
              f"{r['conc_p95']:9.2f}   ratios {ratios}")
    print(f"left in Janus after every gateway stopped: {left}")
    write_json(args.json, {"params": vars(args) | {"json": str(args.json)}, "results": results,
                           "left": left})
    return 0 if left == {"sessions": 0, "rooms": 0} else 1


if __name__ == "__main__":
    sys.exit(main())
