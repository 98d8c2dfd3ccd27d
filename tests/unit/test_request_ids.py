"""Request ids: echoed in X-Request-Id and problem bodies, on every log line of
the request, in text and JSON logs, with tokens still redacted."""

from __future__ import annotations

import io
import json
import logging

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from gateway.app import create_app
from gateway.config import load_settings
from gateway.logs import log_handler


def app_with_log_route():
    app = create_app(load_settings(public_listing="off"))

    async def boom(request: Request) -> PlainTextResponse:
        logging.getLogger("gateway.test").info("watching /whep/x?token=s3cret now")
        raise RuntimeError("boom")

    app.add_route("/boom", boom)
    return app


async def request(app, method: str, path: str, **headers: str | bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        return await c.request(method, path, headers=headers)


async def test_every_response_has_an_id_and_problems_carry_it() -> None:
    app = create_app(load_settings(public_listing="off"))
    r = await request(app, "GET", "/api/streams")
    assert r.status_code == 404
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and r.json()["request_id"] == rid
    other = await request(app, "GET", "/api/streams")
    assert other.headers["x-request-id"] != rid
    ok = await request(app, "GET", "/openapi.json")
    assert ok.status_code == 200 and ok.headers["x-request-id"]


@pytest.mark.parametrize("incoming, kept", [
    ("abc-123.def:ghi", True),
    ("x" * 128, True),
    ("x" * 129, False),
    ("two words", False),
    ("evil\u00e9", False),
    ("a\u2028b", False),
])
async def test_a_sane_incoming_id_is_kept(incoming: str, kept: bool) -> None:
    app = create_app(load_settings(public_listing="off"))
    r = await request(app, "GET", "/api/streams", **{"X-Request-Id": incoming.encode()})
    assert (r.headers["x-request-id"] == incoming) is kept
    assert r.json()["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_log_lines_carry_the_id_and_redact_tokens(log_format: str) -> None:
    out = io.StringIO()
    handler = log_handler(log_format, out)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        r = await request(app_with_log_route(), "GET", "/boom", **{"X-Request-Id": "req-42"})
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "req-42" and r.json()["request_id"] == "req-42"
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        mine = [rec for rec in records if rec.get("logger") == "gateway.test"]
        assert mine and mine[0]["request_id"] == "req-42" and mine[0]["level"] == "INFO"
        assert "[redacted]" in mine[0]["message"]
        failures = [rec for rec in records if rec.get("logger") == "gateway.http.problems"]
        assert failures and failures[0]["request_id"] == "req-42" and "exc_info" in failures[0]
    else:
        mine = [line for line in lines if "gateway.test" in line]
        assert mine and "[req-42]" in mine[0] and "token=[redacted]" in mine[0]
        assert any("gateway.http.problems [req-42]" in line for line in lines)
    assert "s3cret" not in out.getvalue()
