"""The WHIP HTTP resources (RFC 9725): what a POST and a PATCH mean for a publisher.

``/whip/{stream}`` is the endpoint; ``/whip/{stream}/{session}`` is the
session resource that POST creates.  The verbs WHIP shares with WHEP are in
``resources.py``; everything about Janus happens behind ``Ingest``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.core.ingest import Ingest
from gateway.http.exchange import check_if_match, read_text
from gateway.http.resources import ENDPOINT_METHODS, SESSION_METHODS, Endpoint, SessionResource
from gateway.protocol import SDP, SDPFRAG


class WhipEndpoint(Endpoint):
    protocol = "whip"
    service_name = "ingest"

    async def post(self, request: Request) -> Response:
        """RFC 9725 section 4.2: the publisher's offer in, Janus's answer out (201)."""
        stream = self.stream(request)
        await self.admit(request, stream, "publish")
        offer = await read_text(request, expected=(SDP,))
        ingest: Ingest = self.service(request)
        session = await ingest.publish(stream, offer)
        response = Response(session.answer, status_code=201, media_type=SDP)
        self.created(request, session, response, accept_patch=SDPFRAG)
        return response


class WhipSession(SessionResource):
    protocol = "whip"
    service_name = "ingest"
    accept_patch = SDPFRAG

    async def patch(self, request: Request) -> Response:
        """RFC 9725 section 4.3: trickle (204) or ICE restart (200 + sdpfrag)."""
        session = self.session(request)
        fragment = await read_text(request, expected=(SDPFRAG,))
        check_if_match(request, session.etag)
        ingest: Ingest = self.service(request)
        result = await ingest.patch(session, fragment)
        if result.fragment is None:
            return Response(status_code=204)
        return Response(result.fragment, status_code=200, media_type=SDPFRAG,
                        headers={"ETag": result.etag or session.etag})


routes = [
    Route("/whip/{stream}", WhipEndpoint, methods=ENDPOINT_METHODS),
    Route("/whip/{stream}/{session}", WhipSession, methods=SESSION_METHODS),
]
