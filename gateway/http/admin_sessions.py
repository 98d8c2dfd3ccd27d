"""``/api/sessions``: publisher and viewer sessions, their RTC statistics, kicking one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http.admin_auth import require_admin
from gateway.http.admin_streams import operations


async def list_sessions(request: Request) -> JSONResponse:
    require_admin(request)
    return JSONResponse({"sessions": operations(request).list_sessions()})


async def get_session(request: Request) -> JSONResponse:
    require_admin(request)
    return JSONResponse(await operations(request).describe_session(request.path_params["id"]))


async def kick_session(request: Request) -> Response:
    require_admin(request)
    await operations(request).kick_session(request.path_params["id"])
    return Response(status_code=204)


routes = [
    Route("/api/sessions", list_sessions, methods=["GET"]),
    Route("/api/sessions/{id}", get_session, methods=["GET"]),
    Route("/api/sessions/{id}", kick_session, methods=["DELETE"]),
]
