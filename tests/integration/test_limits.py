"""Limits and security: body size and time, rate limits, CORS, tokens in logs."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from gateway.http.logredact import RedactTokens
from tests.conftest import GatewayFactory
from tests.integration.test_whip import assert_problem
from tests.publishers import aiortc_publisher

SDP = "application/sdp"


async def test_oversized_body_is_413(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(max_body_bytes=4096)
    body = "v=0\r\n" + "a=x-padding:" + "x" * 8000 + "\r\n"
    assert_problem(await http.post(gw.whip("big"), content=body, headers={"Content-Type": SDP}), 413)
    assert_problem(await http.post(gw.whep("big"), content=body, headers={"Content-Type": SDP}), 413)


async def test_oversized_request_head_is_refused(gateway, http: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    """uvicorn's h11 parser caps a request head at 16 KiB (httptools has no cap)."""
    r = await http.post(gateway.whip("h"), content="x", headers={
        "Content-Type": SDP, "Authorization": "Bearer " + "x" * 65536})
    assert r.status_code in (400, 431)


async def test_stalled_body_is_cut_off_with_408(start_gateway: GatewayFactory) -> None:
    """A client that announces a body and stops sending it is not waited for."""
    gw = await start_gateway(body_timeout=0.5)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /whip/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                     b"Content-Length: 1000\r\n\r\nv=0\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"application/problem+json" in head
    finally:
        writer.close()


async def test_rate_limits_per_client_and_per_stream(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(rate_limit_per_client="", rate_limit_per_stream="3/minute")
    # Malformed offers are cheap to send and still count: the budget guards
    # the gateway and Janus, whatever the outcome.
    for _ in range(3):
        assert_problem(await http.post(gw.whip("hot"), content="x", headers={"Content-Type": SDP}), 400)
    r = await http.post(gw.whip("hot"), content="x", headers={"Content-Type": SDP})
    assert_problem(r, 429)
    assert 0 < int(r.headers["retry-after"]) <= 60
    assert_problem(await http.post(gw.whip("cold"), content="x", headers={"Content-Type": SDP}), 400)

    gw2 = await start_gateway(rate_limit_per_client="2/minute", rate_limit_per_stream="")
    for stream in ("a", "b"):
        assert_problem(await http.post(gw2.whep(stream), content="x", headers={"Content-Type": SDP}), 400)
    assert_problem(await http.post(gw2.whep("c"), content="x", headers={"Content-Type": SDP}), 429)
    # Reads are not limited.
    assert (await http.get(f"{gw2.url}/api/streams")).status_code == 200


async def test_cors_origins_are_configurable(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(cors_origins=["https://player.example"])
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"}
    ok = await http.options(gw.whep("s"), headers={"Origin": "https://player.example", **preflight})
    assert ok.headers["access-control-allow-origin"] == "https://player.example"
    bad = await http.options(gw.whep("s"), headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in bad.headers


async def test_tokens_never_reach_the_logs(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-stream-key-0123456789"
    gw = await start_gateway(access_log=True, stream_keys={"priv": secret},
                             viewer_keys={"priv": secret + "v"})
    caplog.set_level(logging.DEBUG)
    access_logger = logging.getLogger("uvicorn.access")  # uvicorn does not propagate it
    access_logger.addHandler(caplog.handler)
    pc = await aiortc_publisher()
    try:
        r = await http.post(gw.whip("priv") + f"?token={secret}", content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201
        await http.post(gw.whip("priv"), content="x",
                        headers={"Content-Type": SDP, "Authorization": f"Bearer {secret}x"})
        await http.post(gw.whep("priv") + f"?token={secret}v", content="x", headers={"Content-Type": SDP})
        assert (await http.delete(r.headers["location"], headers={"Authorization": secret})).status_code == 200
    finally:
        await pc.close()
        access_logger.removeHandler(caplog.handler)
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("gateway", "uvicorn")]
    access = [r.getMessage() for r in ours if r.name == "uvicorn.access"]
    assert any("/whip/priv?token=[redacted]" in line for line in access), access
    assert not any(secret in r.getMessage() for r in ours)


def test_access_log_lines_are_redacted() -> None:
    """uvicorn's access log record carries the full path with its query."""
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", "/whip/x?token=abc&b=1", "1.1", 201), None)
    RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "POST /whip/x?token=[redacted]&b=1 HTTP/1.1" 201'
