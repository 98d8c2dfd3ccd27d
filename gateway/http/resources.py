"""What WHIP and WHEP resources share: one handler per HTTP verb.

RFC 9725 and the WHEP draft describe the same two resources: an endpoint
that a POST creates a session on (``/whip/{stream}``, ``/whep/{stream}``),
and the session resource that PATCH and DELETE act on.  The verbs they
share are written here once; ``whip.py`` and ``whep.py`` add what differs
(what a POST and a PATCH mean).  These classes translate HTTP only: the
domain (``Ingest``, ``Egress``) decides, through the ``Service`` interface.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from starlette.endpoints import HTTPEndpoint
from starlette.requests import Request
from starlette.responses import Response

from gateway.config import Settings
from gateway.core.auth import token_from
from gateway.core.turn import turn_credentials
from gateway.http.exchange import absolute_url, ice_server_links, valid_stream
from gateway.protocol import SDP

ENDPOINT_METHODS = ["POST", "OPTIONS", "GET", "HEAD"]
SESSION_METHODS = ["PATCH", "DELETE", "OPTIONS", "GET", "HEAD"]


class Session(Protocol):
    """What the HTTP layer reads of a WHIP or WHEP session."""

    id: str
    stream: str
    etag: str


class Service(Protocol):
    """The domain behind one protocol's resources (``Ingest`` or ``Egress``)."""

    def authorize(self, stream: str, token: str | None) -> None: ...

    def session(self, stream: str, session_id: str) -> Any: ...

    async def end(self, session: Any) -> None: ...


class Resource(HTTPEndpoint):
    """Reading a request the same way for every WHIP/WHEP resource."""

    protocol: ClassVar[str]  # "whip" or "whep": the URL's first segment
    service_name: ClassVar[str]  # the app.state attribute of the protocol's domain

    def service(self, request: Request) -> Any:
        return getattr(request.app.state, self.service_name)

    @staticmethod
    def settings(request: Request) -> Settings:
        return request.app.state.settings  # type: ignore[no-any-return]

    def stream(self, request: Request) -> str:
        """The stream named by the URL, after the token check (the rate limits
        ran before, in ``RateLimitMiddleware``)."""
        stream = valid_stream(request.path_params["stream"])
        token = token_from(request.headers.get("authorization"), request.query_params.get("token"))
        self.service(request).authorize(stream, token)
        return stream

    async def admit(self, request: Request, stream: str, action: str) -> None:
        """Ask the auth webhook, if one is set, whether this publish or view
        may go ahead (401/403 refuse; 503 when it cannot answer)."""
        hooks = getattr(request.app.state, "hooks", None)
        if hooks is None or hooks.auth is None:
            return
        token = token_from(request.headers.get("authorization"), request.query_params.get("token"))
        client = request.client.host if request.client else None
        await hooks.auth.check(action, stream, token, client)

    def session(self, request: Request) -> Any:
        stream = self.stream(request)
        return self.service(request).session(stream, request.path_params["session"])

    def location(self, request: Request, session: Session, *extra: str) -> str:
        return absolute_url(request, self.settings(request).public_url, self.protocol,
                            session.stream, session.id, *extra)

    def created(self, request: Request, session: Session, response: Response,
                accept_patch: str) -> str:
        """Headers of a new session (RFC 9725 section 4.2): Location, ETag,
        Accept-Patch and the ICE servers (section 4.6); returns the Location."""
        location = self.location(request, session)
        response.headers["Location"] = location
        response.headers["ETag"] = session.etag
        response.headers["Accept-Patch"] = accept_patch
        settings = self.settings(request)
        servers = list(settings.ice_servers)
        if settings.turn_secret and settings.turn_urls:  # fresh TURN REST credentials each time
            servers += turn_credentials(settings.turn_secret, settings.turn_ttl,
                                        settings.turn_urls, session.stream)
        for link in ice_server_links(servers):
            response.headers.append("Link", link)
        return location


class Endpoint(Resource):
    """``/{protocol}/{stream}``: POST creates a session (in the subclass)."""

    async def options(self, request: Request) -> Response:
        """CORS preflight, and what the endpoint takes (RFC 9725 section 4.1)."""
        return Response(status_code=200, headers={"Accept-Post": SDP,
                                                   "Allow": ", ".join(ENDPOINT_METHODS)})

    async def get(self, request: Request) -> Response:
        valid_stream(request.path_params["stream"])
        return Response(status_code=204)


class SessionResource(Resource):
    """``/{protocol}/{stream}/{session}``: PATCH (in the subclass), DELETE, GET."""

    accept_patch: ClassVar[str]

    async def options(self, request: Request) -> Response:
        return Response(status_code=200, headers={"Accept-Patch": self.accept_patch,
                                                   "Allow": ", ".join(SESSION_METHODS)})

    async def get(self, request: Request) -> Response:
        self.session(request)
        return Response(status_code=204)

    async def delete(self, request: Request) -> Response:
        """RFC 9725 section 4.2: the client ends the session."""
        session = self.session(request)
        await self.service(request).end(session)
        return Response(status_code=200)
