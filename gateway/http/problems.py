"""RFC 9457 problem details: how every GatewayError reaches the client."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.errors import GatewayError
from gateway.http import requestid
from gateway.protocol import PROBLEM_JSON

log = logging.getLogger(__name__)


def problem_response(
    status: int, title: str, detail: str, *, type_slug: str = "about:blank",
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"type": type_slug, "title": title, "status": status, "detail": detail}
    if requestid.current():
        body["request_id"] = requestid.current()  # what the operator greps the logs for
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def error_response(exc: GatewayError) -> Response:
    """The problem+json response for ``exc``; also used by middleware, outside the handlers."""
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return problem_response(
        exc.status, exc.title, exc.detail, type_slug=f"urn:whip-gateway:problem:{exc.type_slug}",
        headers=headers,
    )


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    log.info("%s %s -> %s %s", request.method, request.url.path, exc.status, exc.detail)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 in the same problem format."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    return problem_response(exc.status_code, str(exc.detail), f"{request.method} {request.url.path}",
                            headers=headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem_response(500, "Internal error", "the gateway failed; the error is logged")
