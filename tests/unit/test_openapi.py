"""The operator API's OpenAPI document: valid OpenAPI 3.1, and it names every ``/api`` route."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway.app import create_app
from gateway.config import load_settings
from gateway.http.openapi import DOCUMENT


def test_the_document_is_valid_openapi() -> None:
    validate(DOCUMENT)


def test_every_api_route_is_described() -> None:
    app = create_app(load_settings(admin_token="t" * 32))
    routes = {(r.path, m.lower()) for r in app.routes if isinstance(r, Route)
              and r.path.startswith("/api/") or getattr(r, "path", "") == "/api/streams"
              for m in (r.methods or ()) if m not in ("HEAD",)}
    described = {(path, verb) for path, item in DOCUMENT["paths"].items()
                 for verb in item if verb != "parameters"}
    assert routes - described == set(), "routes missing from gateway/http/openapi.py"
    assert described - routes == set(), "described routes the app does not have"


async def test_served_at_openapi_json() -> None:
    app = create_app(load_settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        r = await c.get("/openapi.json")
    assert r.status_code == 200
    assert r.json()["openapi"] == "3.1.0"
