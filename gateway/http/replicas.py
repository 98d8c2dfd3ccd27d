"""Any replica answers for any session: requests go to the replica that owns the stream.

With ``redis_url`` set, every stream is owned by one replica (``core.cluster``
says which and why).  This middleware looks at ``/whip/{stream}/...`` and
``/whep/{stream}/...``: when another live replica owns the stream, the
request is forwarded to it over HTTP as it came (method, path, headers,
body; the Host header too, so Location and Link URLs still name the replica
the client used) and the answer streamed back, which also carries
server-sent events.  A forwarded request carries the deployment's shared
secret in ``X-Whip-Gateway-Replica``, so the owner handles it itself and no
request goes round in circles.

It runs inside the rate limits and CORS of the replica the client reached.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Callable

import aiohttp
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import STREAM_NAME_PATTERN
from gateway.core.cluster import Cluster
from gateway.errors import GatewayError, ReplicaUnavailable
from gateway.http.problems import error_response

log = logging.getLogger(__name__)

REPLICA_HEADER = "x-whip-gateway-replica"
_STREAM = re.compile(STREAM_NAME_PATTERN)
# Not passed on: hop-by-hop headers (RFC 9110 section 7.6.1), the length
# (recomputed), and Origin (CORS was this replica's business).
_DROP_REQUEST = {"connection", "keep-alive", "proxy-authorization", "te", "trailer",
                 "transfer-encoding", "upgrade", "content-length", "origin", REPLICA_HEADER}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "upgrade", "trailer"}


def routed(scope: Scope) -> tuple[str, bool] | None:
    """(stream, claim) when the request belongs to a stream's owner; else None.

    ``claim``: a WHIP POST makes an unowned stream this replica's.  Endpoint
    requests other than POST (OPTIONS, GET, HEAD) hold no state: any replica
    answers them itself.
    """
    parts = str(scope.get("path", "")).split("/")
    method = scope.get("method", "")
    if len(parts) < 3 or parts[1] not in ("whip", "whep") or method == "OPTIONS":
        return None
    stream = parts[2]
    if not _STREAM.match(stream):
        return None
    if len(parts) == 3:
        return (stream, parts[1] == "whip") if method == "POST" else None
    return stream, False


class ReplicaRouter:
    def __init__(self, app: ASGIApp, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster
        self._http: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:
                if self._http is not None:
                    await self._http.close()
            return
        route = routed(scope) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        stream, claim = route
        forwarded = _header(scope, REPLICA_HEADER)
        url = None
        if not (forwarded and self.cluster.secret and forwarded == self.cluster.secret):
            try:
                url = await self.cluster.owner_url(stream, claim=claim)
            except GatewayError as exc:
                await error_response(exc)(scope, receive, send)
                return
            except Exception as exc:  # Redis unreachable
                log.warning("shared state unreachable: %r", exc)
                await error_response(ReplicaUnavailable(
                    "the gateway's shared state is unreachable"))(scope, receive, send)
                return
        if url is None:
            self.cluster.in_flight[stream] += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self.cluster.in_flight[stream] -= 1
                if not self.cluster.in_flight[stream]:
                    del self.cluster.in_flight[stream]
                self.cluster.touch(stream)
            return
        await self._forward(url, scope, receive, send)

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(auto_decompress=False)
        return self._http

    async def _forward(self, base: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: list[tuple[str, str]] = [
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in _DROP_REQUEST]
        headers.append((REPLICA_HEADER, self.cluster.secret))
        target = base + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        # Event streams last as long as the player reads; other requests are short.
        long_lived = scope["method"] == "GET" and "/sse/" in scope["path"]
        timeout = aiohttp.ClientTimeout(total=None if long_lived else 30, sock_connect=2)
        relay = asyncio.ensure_future(self._relay(target, scope["method"], headers, body,
                                                  timeout, send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (relay, gone):
                task.cancel()
            await asyncio.gather(relay, gone, return_exceptions=True)
        if relay.done() and not relay.cancelled() and relay.exception() is not None:
            exc = relay.exception()
            if isinstance(exc, _NotStarted):
                log.warning("replica at %s unreachable: %s", base, exc)
                await error_response(ReplicaUnavailable(
                    "the replica that holds this session does not answer; it is taken over "
                    "once its lease lapses"))(scope, receive, send)

    async def _relay(self, url: str, method: str, headers: list[tuple[str, str]], body: bytes,
                     timeout: aiohttp.ClientTimeout, send: Send) -> None:
        try:
            response_cm = self.http.request(method, url, headers=headers, data=body,
                                            allow_redirects=False, timeout=timeout)
            response = await response_cm.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _NotStarted(str(exc) or type(exc).__name__) from exc
        try:
            await send({"type": "http.response.start", "status": response.status,
                        "headers": [(k, v) for k, v in response.raw_headers
                                    if k.decode("latin-1").lower() not in _DROP_RESPONSE]})
            try:
                async for chunk in response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.info("forwarded response from %s cut short: %r", url, exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response_cm.__aexit__(None, None, None)


class UnlessForwarded:
    """Runs ``middleware`` except on requests another replica forwarded.

    For the rate limits: the replica the client reached counted the request
    already; counted again here, every client behind one replica would share
    that replica's address, and one client's budget.
    """

    def __init__(self, app: ASGIApp, *, cluster: Cluster,
                 middleware: Callable[[ASGIApp], ASGIApp]) -> None:
        self.app = app
        self.cluster = cluster
        self.wrapped = middleware(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.cluster.secret and \
                _header(scope, REPLICA_HEADER) == self.cluster.secret:
            await self.app(scope, receive, send)
        else:
            await self.wrapped(scope, receive, send)


class _NotStarted(Exception):
    """The owner could not be reached: nothing was sent to the client yet."""


async def _disconnected(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode("latin-1")
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None


__all__ = ["ReplicaRouter", "REPLICA_HEADER", "UnlessForwarded", "routed"]
