#!/usr/bin/env python3
"""What one Janus HTTP API request costs from Python, per client library.

Sends N sequential ``{"janus":"ping"}`` requests (Janus answers ``pong`` at
once, so nearly all of the time is the client's) over one keep-alive
connection and prints, per client, the median round trip and the CPU time
this process spent per request:

- ``httpx``, as the gateway used it until its Janus client moved to aiohttp
  (``gateway/janus/client.py``), and as the benches' baseline clients still do;
- ``httpx+sniffio``: the same, with ``sniffio`` importable.  httpcore calls
  ``import sniffio`` several times per request; when the package is missing
  (anyio 4.x no longer pulls it in) each call is a failed import that walks
  sys.path.  A stub module in ``sys.modules`` stands in for the package;
- ``aiohttp``, what ``gateway/janus/client.py`` uses now;
- ``raw``: HTTP/1.1 written and read by hand on asyncio streams (a floor).

No network namespace needed: Janus on 127.0.0.1, no media.

    .venv/bin/python bench/janus_http_clients.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import types
from pathlib import Path
from typing import Awaitable, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from gateway.janus.process import JanusProcessConfig, ManagedJanus  # noqa: E402


def ping() -> dict[str, str]:
    return {"janus": "ping", "transaction": secrets.token_hex(8)}


async def with_httpx(url: str, n: int) -> list[float]:
    out = []
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(n):
            start = time.perf_counter()
            reply = (await client.post(url, json=ping())).json()
            out.append(time.perf_counter() - start)
            assert reply["janus"] == "pong", reply
    return out


async def with_httpx_sniffio(url: str, n: int) -> list[float]:
    stub = types.ModuleType("sniffio")
    stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
    saved = sys.modules.get("sniffio")
    sys.modules["sniffio"] = saved or stub
    try:
        return await with_httpx(url, n)
    finally:
        if saved is None:
            del sys.modules["sniffio"]


async def with_aiohttp(url: str, n: int) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            start = time.perf_counter()
            async with session.post(url, json=ping()) as response:
                reply = await response.json()
            out.append(time.perf_counter() - start)
            assert reply["janus"] == "pong", reply
    return out


async def with_raw(url: str, n: int) -> list[float]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    out = []
    try:
        for _ in range(n):
            body = json.dumps(ping()).encode()
            start = time.perf_counter()
            writer.write(b"POST /%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s"
                         % (path.encode(), hostport.encode(), len(body), body))
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            if b"transfer-encoding: chunked" in head:
                payload = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    payload += (await reader.readexactly(size + 2))[:size]
                    if size == 0:
                        break
            else:
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
                payload = await reader.readexactly(length)
            out.append(time.perf_counter() - start)
            assert json.loads(payload)["janus"] == "pong"
    finally:
        writer.close()
    return out


CLIENTS: dict[str, Callable[[str, int], Awaitable[list[float]]]] = {
    "httpx": with_httpx,
    "httpx+sniffio": with_httpx_sniffio,
    "aiohttp": with_aiohttp,
    "raw": with_raw,
}


async def run(url: str, n: int, repeats: int) -> dict[str, tuple[float, float]]:
    best: dict[str, tuple[float, float]] = {}
    for name, client in CLIENTS.items():  # warm-up: imports, first connection
        await client(url, 20)
    for _ in range(repeats):  # interleaved, best of `repeats` to shed noise
        for name, client in CLIENTS.items():
            cpu = time.process_time()
            times = sorted(await client(url, n))
            cpu_per = (time.process_time() - cpu) / n * 1000
            p50 = times[len(times) // 2] * 1000
            old = best.get(name)
            best[name] = (min(p50, old[0]), min(cpu_per, old[1])) if old else (p50, cpu_per)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    janus = ManagedJanus(JanusProcessConfig())
    janus.start()
    try:
        results = asyncio.run(asyncio.wait_for(run(janus.cfg.api_url, args.requests, args.repeats),
                                               600))
    finally:
        janus.stop()
    print(f"{args.requests} sequential Janus pings per client, best of {args.repeats}:")
    print(f"{'client':<16}{'p50 ms':>8}{'CPU ms/request':>16}")
    for name, (p50, cpu) in results.items():
        print(f"{name:<16}{p50:>8.3f}{cpu:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
