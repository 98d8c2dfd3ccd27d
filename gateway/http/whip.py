"""The WHIP HTTP resources (RFC 9725): HTTP in, domain calls, HTTP out.

``/whip/{stream}`` is the endpoint; ``/whip/{stream}/{session}`` is the
session resource that POST creates.  Everything about Janus happens behind
``Ingest``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.auth import token_from
from gateway.config import Settings
from gateway.http.exchange import (
    absolute_url,
    check_if_match,
    ice_server_links,
    read_text,
    valid_stream,
)
from gateway.core.ingest import Ingest

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


def _ingest(request: Request) -> Ingest:
    return request.app.state.ingest  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _stream(request: Request) -> str:
    return valid_stream(request.path_params["stream"])


def _authorize(request: Request, stream: str) -> None:
    token = token_from(request.headers.get("authorization"), request.query_params.get("token"))
    _ingest(request).authorize(stream, token)


async def endpoint(request: Request) -> Response:
    """RFC 9725 section 4.2 (POST), 4.1 (GET/HEAD), OPTIONS for CORS."""
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={
            "Accept-Post": SDP, "Allow": "OPTIONS, POST, GET, HEAD"})
    stream = _stream(request)
    if request.method in ("GET", "HEAD"):
        return Response(status_code=204)
    _authorize(request, stream)
    offer = await read_text(request, expected=(SDP,))
    session = await _ingest(request).publish(stream, offer)
    response = Response(session.answer, status_code=201, media_type=SDP, headers={
        "Location": absolute_url(request, _settings(request).public_url, "whip", stream, session.id),
        "ETag": session.etag,
        "Accept-Patch": SDPFRAG,
    })
    for link in ice_server_links(_settings(request).ice_servers):
        response.headers.append("Link", link)
    return response


async def session_resource(request: Request) -> Response:
    """RFC 9725 section 4.3 (PATCH), 4.2 (DELETE), 4.1 (GET/HEAD)."""
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={
            "Accept-Patch": SDPFRAG, "Allow": "OPTIONS, PATCH, DELETE, GET, HEAD"})
    stream = _stream(request)
    _authorize(request, stream)
    ingest = _ingest(request)
    session = ingest.session(stream, request.path_params["session"])
    if request.method in ("GET", "HEAD"):
        return Response(status_code=204)
    if request.method == "DELETE":
        await ingest.end(session)
        return Response(status_code=200)
    fragment = await read_text(request, expected=(SDPFRAG,))
    check_if_match(request, session.etag)
    result = await ingest.patch(session, fragment)
    if result.fragment is None:
        return Response(status_code=204)
    return Response(result.fragment, status_code=200, media_type=SDPFRAG,
                    headers={"ETag": result.etag or session.etag})


routes = [
    Route("/whip/{stream}", endpoint, methods=["POST", "OPTIONS", "GET", "HEAD"]),
    Route("/whip/{stream}/{session}", session_resource,
          methods=["PATCH", "DELETE", "OPTIONS", "GET", "HEAD"]),
]
