"""The WHEP HTTP resources (draft-ietf-wish-whep-03) and its two extensions.

``/whep/{stream}`` is the endpoint; POST creates ``/whep/{stream}/{session}``,
which also carries ``/sse`` (server-sent events) and ``/layer`` (layer
selection).  The verbs WHEP shares with WHIP are in ``resources.py``;
everything about mountpoints and events happens behind ``Egress``.
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

from gateway.core.egress import Egress, ViewerSession
from gateway.core.events import EVENTS, EventStream
from gateway.errors import MalformedBody, UnsupportedContentType
from gateway.http.exchange import check_if_match, media_type, read_text, valid_stream
from gateway.http.resources import (
    ENDPOINT_METHODS,
    SESSION_METHODS,
    Endpoint,
    Resource,
    SessionResource,
)
from gateway.protocol import JSON, LAYER_REL, SDP, SDPFRAG, SSE_REL


class WhepResource(Resource):
    protocol = "whep"
    service_name = "egress"

    def egress(self, request: Request) -> Egress:
        return self.service(request)  # type: ignore[no-any-return]


class WhepEndpoint(WhepResource, Endpoint):
    async def head(self, request: Request) -> Response:
        """Section 4.2: lets players recognise a WHEP URL."""
        valid_stream(request.path_params["stream"])
        return Response(status_code=200, headers={"Content-Type": SDP})

    async def post(self, request: Request) -> Response:
        """POST an offer (201), or an empty body for a counter-offer (406)."""
        stream = self.stream(request)
        await self.admit(request, stream, "view")
        egress = self.egress(request)
        # An empty POST (no Content-Type needed) is the older server-offer convention.
        offer = await read_text(request, expected=(SDP, ""))
        if offer.strip() and media_type(request) != SDP:
            raise UnsupportedContentType(f"an offer must be sent as {SDP}")
        region = egress.viewer_region(request.client.host if request.client else None,
                                      request.query_params.get("region"))
        if not offer.strip() or self.settings(request).whep_counter_offer:
            session = await egress.counter_offer(stream, region)
            valid_until = datetime.now(timezone.utc) + timedelta(seconds=session.answer_valid_for)
            response = Response(session.answer, status_code=406, headers={
                "Content-Type": f'{SDP}; valid-until="{format_datetime(valid_until, usegmt=True)}"'})
        else:
            session = await egress.view(stream, offer, region)
            response = Response(session.answer, status_code=201, media_type=SDP)
        location = self.created(request, session, response, accept_patch=WhepSession.accept_patch)
        response.headers.append("Link", f'<{location}/sse>; rel="{SSE_REL}"; events="{",".join(EVENTS)}"')
        response.headers.append("Link", f'<{location}/layer>; rel="{LAYER_REL}"')
        return response


class WhepSession(WhepResource, SessionResource):
    accept_patch = f"{SDPFRAG}, {SDP}"

    async def patch(self, request: Request) -> Response:
        """Trickle or ICE restart (sdpfrag, RFC 9725 section 4.3), or the
        player's answer in counter-offer mode (SDP)."""
        session = self.session(request)
        egress = self.egress(request)
        kind = media_type(request)
        body = await read_text(request, expected=(SDPFRAG, SDP))
        if kind == SDP:
            await egress.answer(session, body)
            return Response(status_code=204)
        check_if_match(request, session.etag)
        fragment = await egress.trickle(session, body)
        if fragment is None:
            return Response(status_code=204)
        return Response(fragment, status_code=200, media_type=SDPFRAG, headers={"ETag": session.etag})


class EventsResource(WhepResource):
    """``/sse``: POST the wanted event names → 201 + Location of the event stream."""

    async def options(self, request: Request) -> Response:
        return Response(status_code=200, headers={"Accept-Post": JSON})

    async def post(self, request: Request) -> Response:
        session: ViewerSession = self.session(request)
        names = await _json(request)
        if names is not None and (not isinstance(names, list)
                                  or not all(isinstance(n, str) for n in names)):
            raise MalformedBody("the body must be a JSON array of event names")
        subscription = self.egress(request).open_events(session, names)
        return Response(status_code=201, headers={
            "Location": self.location(request, session, "sse", subscription.id)})


class EventStreamResource(WhepResource):
    """``/sse/{events}``: GET reads the event stream, DELETE ends it.

    No token here: a browser's EventSource cannot send Authorization, so the
    URL is the capability (see ``Egress.event_stream``); the POST that made
    it checked the token."""

    def subscription(self, request: Request) -> EventStream:
        stream = valid_stream(request.path_params["stream"])
        return self.egress(request).event_stream(stream, request.path_params["session"],
                                                 request.path_params["events"])

    async def get(self, request: Request) -> Response:
        subscription = self.subscription(request)

        async def generate() -> AsyncIterator[dict[str, str]]:
            while True:
                event = await subscription.queue.get()
                if event is None:
                    return
                name, data = event
                yield {"event": name, "data": json.dumps(data, separators=(",", ":"))}

        return EventSourceResponse(generate(), ping=15)

    async def delete(self, request: Request) -> Response:
        self.egress(request).close_events(self.subscription(request))
        return Response(status_code=200)


class LayerResource(WhepResource):
    """``/layer``: layer selection extension, POST JSON → 200."""

    async def options(self, request: Request) -> Response:
        return Response(status_code=200, headers={"Accept-Post": JSON})

    async def post(self, request: Request) -> Response:
        session = self.session(request)
        await self.egress(request).select_layer(session, await _json(request))
        return Response(status_code=200)


async def _json(request: Request) -> Any:
    text = await read_text(request, expected=(JSON, ""))
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise MalformedBody(f"the body is not JSON: {exc}") from None


routes = [
    Route("/whep/{stream}", WhepEndpoint, methods=ENDPOINT_METHODS),
    Route("/whep/{stream}/{session}", WhepSession, methods=SESSION_METHODS),
    Route("/whep/{stream}/{session}/sse", EventsResource, methods=["POST", "OPTIONS"]),
    Route("/whep/{stream}/{session}/sse/{events}", EventStreamResource, methods=["GET", "DELETE"]),
    Route("/whep/{stream}/{session}/layer", LayerResource, methods=["POST", "OPTIONS"]),
]
