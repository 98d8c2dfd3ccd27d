"""``/api/nodes``: the operator's view of the Janus node pool, and its changes.

- ``GET /api/nodes``: every node with health, version, load (viewers,
  outbound bitrate, fill, handles; plus what Janus's admin API counts) and
  capacity;
- ``POST /api/nodes`` with a node's settings (as in the config file's
  ``[[janus]]``) adds it: 201;
- ``POST /api/nodes/{name}/drain`` and ``/undrain``: no new sessions there
  (those present stay), or new sessions again;
- ``DELETE /api/nodes/{name}``: removes it; its viewers get a ``reconnect``
  event and land elsewhere.

Every route needs the admin token (``require_admin``).  The pool decides
(``gateway.core.placement``); this module only translates.
"""

from __future__ import annotations

import asyncio
import json

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.backend import Backend
from gateway.config import JanusNodeSettings
from gateway.errors import MalformedBody
from gateway.http.admin_auth import require_admin


def _backend(request: Request) -> Backend:
    return request.app.state.backend  # type: ignore[no-any-return]


async def list_nodes(request: Request) -> JSONResponse:
    require_admin(request)
    backend = _backend(request)
    nodes = await asyncio.gather(*(backend.pool.report(n) for n in list(backend.pool.nodes)))
    return JSONResponse({"nodes": list(nodes)})


async def add_node(request: Request) -> JSONResponse:
    require_admin(request)
    try:
        spec = JanusNodeSettings.model_validate(json.loads(await request.body() or b"null"))
    except (ValueError, ValidationError) as exc:
        raise MalformedBody(f"a node's settings, as JSON: {exc}") from None
    backend = _backend(request)
    node = await backend.add_node(spec)
    return JSONResponse(await backend.pool.report(node), status_code=201,
                        headers={"Location": str(request.url_for("node", name=node.name))})


async def node(request: Request) -> Response:
    require_admin(request)
    backend = _backend(request)
    name = request.path_params["name"]
    if request.method == "DELETE":
        await backend.remove_node(name)
        return Response(status_code=204)
    return JSONResponse(await backend.pool.report(backend.pool.get(name)))


async def drain(request: Request) -> JSONResponse:
    require_admin(request)
    backend = _backend(request)
    return JSONResponse(await backend.pool.report(backend.pool.drain(request.path_params["name"])))


async def undrain(request: Request) -> JSONResponse:
    require_admin(request)
    backend = _backend(request)
    return JSONResponse(await backend.pool.report(backend.pool.undrain(request.path_params["name"])))


routes = [
    Route("/api/nodes", list_nodes, methods=["GET"]),
    Route("/api/nodes", add_node, methods=["POST"]),
    Route("/api/nodes/{name}", node, methods=["GET", "DELETE"], name="node"),
    Route("/api/nodes/{name}/drain", drain, methods=["POST"]),
    Route("/api/nodes/{name}/undrain", undrain, methods=["POST"]),
]
