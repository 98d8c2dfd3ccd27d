#!/usr/bin/env python3
"""What one Janus API request costs from Python, per client library and transport.

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
- ``raw``: HTTP/1.1 written and read by hand on asyncio streams (a floor);
- ``aiohttp-ws``: the same pings as frames on one Janus WebSocket
  (subprotocol ``janus-protocol``), each sent once the last reply came.

Then the gateway's own client (``gateway.janus.client.JanusClient``) on each
of its transports, ``janus_transport = "http"`` and ``"websocket"``:

- ``ping``: one request and its reply, as above;
- ``request+event``: an asynchronous plugin request and the event that
  answers it (Streaming ``watch`` of a mountpoint that does not exist: Janus
  acks, then its event says so).  Over HTTP the event comes back through
  the session's long poll, over WebSocket on the socket: this is the round
  trip a WHIP POST makes for its ``publish`` and a viewer for its ``watch``.

No network namespace needed: Janus on 127.0.0.1, no media.  Janus's
WebSocket transport is on, for the WebSocket rows.

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

from gateway.janus.client import JanusClient, JanusPluginError  # noqa: E402
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


async def with_aiohttp_ws(ws_url: str, n: int) -> list[float]:
    import aiohttp

    out = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, protocols=("janus-protocol",)) as ws:
            for _ in range(n):
                start = time.perf_counter()
                await ws.send_str(json.dumps(ping()))
                reply = json.loads(await ws.receive_str())
                out.append(time.perf_counter() - start)
                assert reply["janus"] == "pong", reply
    return out


def gateway_client(cfg: JanusProcessConfig, transport: str) -> JanusClient:
    return JanusClient(cfg.api_url, ws_url=cfg.ws_url if transport == "websocket" else None)


async def with_gateway(cfg: JanusProcessConfig, transport: str, n: int) -> list[float]:
    client = gateway_client(cfg, transport)
    out = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            reply = await client.post("", {"janus": "ping"})
            out.append(time.perf_counter() - start)
            assert reply["janus"] == "pong", reply
    finally:
        await client.close()
    return out


async def with_gateway_event(cfg: JanusProcessConfig, transport: str, n: int) -> list[float]:
    client = gateway_client(cfg, transport)
    out = []
    session = await client.create_session()
    try:
        handle = await session.attach("janus.plugin.streaming")
        for _ in range(n):
            start = time.perf_counter()
            try:
                await handle.message({"request": "watch", "id": 2**31 - 7})
                raise AssertionError("Janus watched a mountpoint that does not exist")
            except JanusPluginError:
                pass
            out.append(time.perf_counter() - start)
    finally:
        await session.destroy()
        await client.close()
    return out


Client = Callable[[int], Awaitable[list[float]]]


def clients(cfg: JanusProcessConfig) -> dict[str, Client]:
    url = cfg.api_url
    return {
        "httpx": lambda n: with_httpx(url, n),
        "httpx+sniffio": lambda n: with_httpx_sniffio(url, n),
        "aiohttp": lambda n: with_aiohttp(url, n),
        "raw": lambda n: with_raw(url, n),
        "aiohttp-ws": lambda n: with_aiohttp_ws(cfg.ws_url, n),
        "gateway http ping": lambda n: with_gateway(cfg, "http", n),
        "gateway ws ping": lambda n: with_gateway(cfg, "websocket", n),
        "gateway http request+event": lambda n: with_gateway_event(cfg, "http", n),
        "gateway ws request+event": lambda n: with_gateway_event(cfg, "websocket", n),
    }


async def run(cfg: JanusProcessConfig, n: int, repeats: int) -> dict[str, tuple[float, float]]:
    best: dict[str, tuple[float, float]] = {}
    every = clients(cfg)
    for name, client in every.items():  # warm-up: imports, first connection
        await client(20)
    for _ in range(repeats):  # interleaved, best of `repeats` to shed noise
        for name, client in every.items():
            cpu = time.process_time()
            times = sorted(await client(n))
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
    janus = ManagedJanus(JanusProcessConfig(websockets=True))
    janus.start()
    try:
        results = asyncio.run(asyncio.wait_for(run(janus.cfg, args.requests, args.repeats), 600))
    finally:
        janus.stop()
    print(f"{args.requests} sequential Janus requests per client, best of {args.repeats}:")
    print(f"{'client':<28}{'p50 ms':>8}{'CPU ms/request':>16}")
    for name, (p50, cpu) in results.items():
        print(f"{name:<28}{p50:>8.3f}{cpu:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
