"""gateway.http.server: httptools with h11's cap on request heads.

A tiny ASGI app behind uvicorn with the gateway's ``SERVER_OPTIONS``: heads
under 16 KiB reach the app, larger ones are refused as h11 refused them
(400, connection closed), also when they arrive in many small pieces.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from gateway.app import SERVER_OPTIONS
from gateway.http.server import MAX_HEAD_BYTES, CappedHttpToolsProtocol
from gateway.janus.process import free_port


async def _app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=port, log_level="error",
                                           lifespan="off", **SERVER_OPTIONS))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield port
    server.should_exit = True
    await task


async def _exchange(port: int, head: bytes, pieces: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        step = -(-len(head) // pieces)
        for i in range(0, len(head), step):
            writer.write(head[i:i + step])
            await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # until the server closes
    finally:
        writer.close()


def _request(header_bytes: int) -> bytes:
    return (b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
            + b"p" * header_bytes + b"\r\n\r\n")


def test_the_gateway_serves_with_the_capped_protocol() -> None:
    assert SERVER_OPTIONS["http"] is CappedHttpToolsProtocol


async def test_a_head_under_the_cap_reaches_the_app(port: int) -> None:
    reply = await _exchange(port, _request(MAX_HEAD_BYTES - 200))
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok")


@pytest.mark.parametrize("pieces", [1, 64])
async def test_a_head_over_the_cap_is_refused_and_closed(port: int, pieces: int) -> None:
    reply = await _exchange(port, _request(MAX_HEAD_BYTES + 100), pieces)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"ok" not in reply


async def test_the_cap_is_per_request_on_a_kept_alive_connection(port: int) -> None:
    one = b"GET /x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * (MAX_HEAD_BYTES // 2) + b"\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(3):  # together over the cap, each under it
            writer.write(one)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            assert await reader.readexactly(2) == b"ok"
    finally:
        writer.close()
