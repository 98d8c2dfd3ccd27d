"""``/api/streams/...``: the operator's view of streams (behind the admin token).

Translation only: ``gateway.core.operations`` decides.  ``GET /api/streams``
itself stays the public listing (``public_listing``); with the admin token
it answers the operator's full view instead.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.core.operations import Operations
from gateway.errors import MalformedBody
from gateway.http.admin_auth import require_admin
from gateway.http.exchange import read_text, valid_stream


def operations(request: Request) -> Operations:
    return request.app.state.operations  # type: ignore[no-any-return]


async def read_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """A JSON object body (bounded like every body); ``{}`` for an empty optional one."""
    if optional and not request.headers.get("content-length", "0").strip("0") \
            and "transfer-encoding" not in request.headers:
        return {}
    text = await read_text(request, expected=("application/json",))
    try:
        body = json.loads(text or "{}")
    except ValueError:
        raise MalformedBody("the body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedBody("the body must be a JSON object")
    return body


def known_fields(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise MalformedBody(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


async def list_streams(request: Request) -> JSONResponse:
    require_admin(request)
    return JSONResponse({"streams": await operations(request).list_streams()})


async def create_stream(request: Request) -> JSONResponse:
    require_admin(request)
    body = await read_json(request)
    known_fields(body, {"name", "publish_key", "viewer_policy", "viewer_token", "jwt_secret"})
    if "name" not in body:
        raise MalformedBody("a stream needs a name")
    created = operations(request).create_stream(
        body["name"], publish_key=body.get("publish_key"),
        viewer_policy=body.get("viewer_policy", "open"), viewer_token=body.get("viewer_token"),
        jwt_secret=body.get("jwt_secret"))
    return JSONResponse(created, status_code=201,
                        headers={"Location": f"/api/streams/{created['name']}"})


async def get_stream(request: Request) -> JSONResponse:
    require_admin(request)
    name = valid_stream(request.path_params["stream"])
    return JSONResponse(await operations(request).describe_stream(name))


async def delete_stream(request: Request) -> Response:
    require_admin(request)
    name = valid_stream(request.path_params["stream"])
    await operations(request).delete_stream(name)
    return Response(status_code=204)


async def rotate_key(request: Request) -> JSONResponse:
    require_admin(request)
    name = valid_stream(request.path_params["stream"])
    body = await read_json(request, optional=True)
    known_fields(body, {"publish_key"})
    return JSONResponse(operations(request).rotate_key(name, body.get("publish_key")))


routes = [
    Route("/api/streams", create_stream, methods=["POST"]),
    Route("/api/streams/{stream}", get_stream, methods=["GET"]),
    Route("/api/streams/{stream}", delete_stream, methods=["DELETE"]),
    Route("/api/streams/{stream}/rotate-key", rotate_key, methods=["POST"]),
]
