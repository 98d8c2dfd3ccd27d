"""The WHEP HTTP resources (draft-ietf-wish-whep-03) and its two extensions.

``/whep/{stream}`` is the endpoint; POST creates ``/whep/{stream}/{session}``,
which also carries ``/sse`` (server-sent events) and ``/layer`` (layer
selection).  Everything about mountpoints happens behind ``Egress``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.auth import token_from
from gateway.config import Settings
from gateway.core.egress import Egress, ViewerSession
from gateway.errors import MalformedBody, UnsupportedContentType
from gateway.core.events import EVENTS
from gateway.http.exchange import (
    absolute_url,
    check_if_match,
    ice_server_links,
    media_type,
    rate_limit,
    read_text,
    valid_stream,
)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
LAYER_REL = "urn:ietf:params:whep:ext:core:layer"


def _egress(request: Request) -> Egress:
    return request.app.state.egress  # type: ignore[no-any-return]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def _authorize(request: Request, stream: str) -> None:
    token = token_from(request.headers.get("authorization"), request.query_params.get("token"))
    _egress(request).authorize(stream, token)


def _session(request: Request) -> ViewerSession:
    stream = valid_stream(request.path_params["stream"])
    if request.method in ("POST", "PATCH", "DELETE"):
        rate_limit(request, stream)
    _authorize(request, stream)
    return _egress(request).session(stream, request.path_params["session"])


def _resource_headers(request: Request, session: ViewerSession, response: Response) -> None:
    location = absolute_url(request, _settings(request).public_url, "whep", session.stream, session.id)
    response.headers["Location"] = location
    response.headers["ETag"] = session.etag
    response.headers["Accept-Patch"] = f"{SDPFRAG}, {SDP}"
    for link in ice_server_links(_settings(request).ice_servers):
        response.headers.append("Link", link)
    response.headers.append("Link", f'<{location}/sse>; rel="{SSE_REL}"; events="{",".join(EVENTS)}"')
    response.headers.append("Link", f'<{location}/layer>; rel="{LAYER_REL}"')


async def endpoint(request: Request) -> Response:
    """POST an offer (201), or an empty body for a counter-offer (406)."""
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={"Accept-Post": SDP,
                                                   "Allow": "OPTIONS, POST, GET, HEAD"})
    stream = valid_stream(request.path_params["stream"])
    if request.method == "HEAD":  # section 4.2: lets players recognise a WHEP URL
        return Response(status_code=200, headers={"Content-Type": SDP})
    if request.method == "GET":
        return Response(status_code=204)
    rate_limit(request, stream)
    _authorize(request, stream)
    egress = _egress(request)
    # An empty POST (no Content-Type needed) is the older server-offer convention.
    offer = await read_text(request, expected=(SDP, ""))
    if offer.strip() and media_type(request) != SDP:
        raise UnsupportedContentType("an offer must be sent as application/sdp")
    if not offer.strip() or _settings(request).whep_counter_offer:
        session = await egress.counter_offer(stream)
        valid_until = datetime.now(timezone.utc) + timedelta(seconds=session.answer_valid_for)
        response = Response(session.answer, status_code=406, headers={
            "Content-Type": f'{SDP}; valid-until="{format_datetime(valid_until, usegmt=True)}"'})
    else:
        session = await egress.view(stream, offer)
        response = Response(session.answer, status_code=201, media_type=SDP)
    _resource_headers(request, session, response)
    return response


async def session_resource(request: Request) -> Response:
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={
            "Accept-Patch": f"{SDPFRAG}, {SDP}", "Allow": "OPTIONS, PATCH, DELETE, GET, HEAD"})
    session = _session(request)
    egress = _egress(request)
    if request.method in ("GET", "HEAD"):
        return Response(status_code=204)
    if request.method == "DELETE":
        await egress.end(session)
        return Response(status_code=200)
    kind = media_type(request)
    body = await read_text(request, expected=(SDPFRAG, SDP))
    if kind == SDP:  # counter-offer mode: the player's answer
        await egress.answer(session, body)
        return Response(status_code=204)
    check_if_match(request, session.etag)
    fragment = await egress.trickle(session, body)
    if fragment is None:
        return Response(status_code=204)
    return Response(fragment, status_code=200, media_type=SDPFRAG, headers={"ETag": session.etag})


async def events_resource(request: Request) -> Response:
    """POST the wanted event names → 201 + Location of the event stream."""
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={"Accept-Post": "application/json"})
    session = _session(request)
    names = await _json(request)
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise MalformedBody("the body must be a JSON array of event names")
    subscription = _egress(request).open_events(session, names)
    location = absolute_url(request, _settings(request).public_url, "whep", session.stream,
                            session.id, "sse", subscription.id)
    return Response(status_code=201, headers={"Location": location})


async def event_stream(request: Request) -> Response:
    session = _session(request)
    egress = _egress(request)
    subscription = egress.event_stream(session, request.path_params["events"])
    if request.method == "DELETE":
        egress.close_events(subscription)
        return Response(status_code=200)

    async def generate() -> AsyncIterator[dict[str, str]]:
        while True:
            event = await subscription.queue.get()
            if event is None:
                return
            name, data = event
            yield {"event": name, "data": json.dumps(data, separators=(",", ":"))}

    return EventSourceResponse(generate(), ping=15)


async def layer_resource(request: Request) -> Response:
    """Layer selection extension: POST JSON → 200."""
    if request.method == "OPTIONS":
        return Response(status_code=200, headers={"Accept-Post": "application/json"})
    session = _session(request)
    await _egress(request).select_layer(session, await _json(request))
    return Response(status_code=200)


async def _json(request: Request) -> Any:
    text = await read_text(request, expected=("application/json", ""))
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise MalformedBody(f"the body is not JSON: {exc}") from None


routes = [
    Route("/whep/{stream}", endpoint, methods=["POST", "OPTIONS", "GET", "HEAD"]),
    Route("/whep/{stream}/{session}", session_resource,
          methods=["PATCH", "DELETE", "OPTIONS", "GET", "HEAD"]),
    Route("/whep/{stream}/{session}/sse", events_resource, methods=["POST", "OPTIONS"]),
    Route("/whep/{stream}/{session}/sse/{events}", event_stream, methods=["GET", "DELETE"]),
    Route("/whep/{stream}/{session}/layer", layer_resource, methods=["POST", "OPTIONS"]),
]
