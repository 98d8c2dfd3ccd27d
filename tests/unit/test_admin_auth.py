"""Who may call the operator API: ``require_admin`` on a bare Starlette app.

Without ``admin_token`` the routes do not exist (404), so nothing is exposed
by default; with it, no token is 401 with a Bearer challenge (RFC 6750
section 3) and a wrong one 403, each a problem+json body."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.config import SettingsError, load_settings
from gateway.errors import GatewayError
from gateway.http.admin_auth import require_admin
from gateway.http.problems import gateway_error_handler

TOKEN = "op-" + "x" * 29


def _app(admin_token: str | None) -> Starlette:
    async def probe(request: Request) -> JSONResponse:
        require_admin(request)
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/api/probe", probe)],
                    exception_handlers={GatewayError: gateway_error_handler})
    app.state.settings = load_settings(admin_token=admin_token)
    return app


async def _get(app: Starlette, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        return await c.get("/api/probe", headers=headers)


async def test_off_without_an_admin_token() -> None:
    r = await _get(_app(None), authorization=f"Bearer {TOKEN}")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert "admin_token" in r.json()["detail"]


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"authorization": "Bearer not-the-token"}, 403),
    ({"authorization": f"Bearer {TOKEN}"}, 200),
])
async def test_token_checked(headers: dict[str, str], status: int) -> None:
    r = await _get(_app(TOKEN), **headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    if status != 200:
        assert r.headers["content-type"] == "application/problem+json"


def test_a_short_admin_token_is_refused() -> None:
    with pytest.raises(SettingsError, match="admin_token"):
        load_settings(admin_token="short")
