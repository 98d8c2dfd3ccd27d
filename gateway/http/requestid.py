"""A request id on every response, every log line of the request, and every problem body.

Why: an operator holding a failed client's ``X-Request-Id`` (or the
``request_id`` of its problem+json body) finds every log line the gateway
wrote while serving that request.  An incoming ``X-Request-Id`` (set by a
proxy or the client) is kept when it is sane (1-128 characters of
``A-Z a-z 0-9 - _ . : / + =``) so ids line up across hops; anything else is
replaced, so a client cannot inject text into the logs.  The id lives in a
context variable: uvicorn serves each request in a task of its own, so the
value is the request's for its whole life, exception handlers included.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9\-_.:/+=]{1,128}$")

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def current() -> str | None:
    """The id of the request being served, if any."""
    return request_id.get()


def choose(incoming: str | None) -> str:
    """The client's id when sane, else a new one."""
    if incoming and _SANE.match(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request's id and echoes it in ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers") or ():
            if name == HEADER.encode():
                incoming = value.decode("latin-1")
                break
        rid = choose(incoming)
        request_id.set(rid)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers") or () if k != HEADER.encode()]
                message = {**message, "headers": [*headers, (HEADER.encode(), rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if not started:  # answer the 500 here, so it carries the id too
                from gateway.http.problems import problem_response

                response = problem_response(500, "Internal error",
                                            "the gateway failed; the error is logged")
                await response(scope, receive, send_with_id)
            raise


class RequestIdFilter(logging.Filter):
    """Gives every record a ``request_id`` (``-`` outside a request) for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True
