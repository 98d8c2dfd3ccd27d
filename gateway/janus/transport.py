"""How Janus API requests reach a node and its events come back.

Two transports, one interface (``Transport``), so that ``JanusClient`` and
everything above it cannot tell them apart:

- ``HttpTransport`` (this module): a POST per request, and per Janus
  session one long poll (``GET /janus/<session>``) that brings its events;
- ``WebSocketTransport`` (``gateway.janus.websocket``): one socket per node
  carries requests, replies and the events of every session made over it.

A transport hands events to an ``EventSink`` (a ``JanusSession``): its
``deliver`` routes them by transaction and handle, its ``mark_lost`` ends
it.  Janus core errors in replies are the client's to raise; a transport
raises ``JanusUnreachable`` only when no reply came.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import aiohttp

from gateway.janus.apierror import JanusError, JanusUnreachable, Json

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """A Janus session as a transport sees it."""

    id: int
    lost: asyncio.Event  # set once the session is given up

    @property
    def alive(self) -> bool: ...

    def deliver(self, event: Json) -> None: ...

    def mark_lost(self) -> None: ...


class Transport(Protocol):
    async def send(self, path: str, body: Json) -> Json:
        """Send one request (``path``: ``""``, ``/<session>`` or
        ``/<session>/<handle>``, as in Janus's REST API; ``body`` carries its
        transaction) and return Janus's reply to it."""
        ...

    async def listen(self, session: EventSink) -> None:
        """Deliver ``session``'s events until it is lost or this is cancelled."""
        ...

    async def close(self) -> None: ...


class HttpTransport:
    def __init__(self, url: str, *, api_secret: str | None, request_timeout: float,
                 poll_timeout: float) -> None:
        self.url = url
        self.api_secret = api_secret
        self.request_timeout = request_timeout
        self.poll_timeout = poll_timeout
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop; long polls hold a
        # connection each, so the pool has no cap.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def info(self) -> Json:
        try:
            async with self.http.get(f"{self.url}/info") as response:
                response.raise_for_status()
                return dict(await response.json(content_type=None))
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise JanusUnreachable(f"{self.url}/info: {exc!r}") from exc

    async def send(self, path: str, body: Json) -> Json:
        try:
            async with self.http.post(self.url + path, json=body) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise JanusUnreachable(f"POST {path}: {exc!r}") from exc
        if not isinstance(reply, dict):
            raise JanusUnreachable(f"POST {path}: not a Janus reply: {reply!r:.80}")
        return reply

    async def listen(self, session: EventSink) -> None:
        """Long-poll events until the session is gone; a poll is also the keepalive."""
        params: dict[str, Any] = {"maxev": 20}
        if self.api_secret:
            params["apisecret"] = self.api_secret
        poll_timeout = aiohttp.ClientTimeout(total=self.poll_timeout)
        failures = 0
        while session.alive:
            try:
                async with self.http.get(f"{self.url}/{session.id}", params=params,
                                         timeout=poll_timeout) as response:
                    if response.status == 404:
                        # Janus 1.1.2 answers a poll for a session it no longer
                        # knows (it restarted) with 404 and no body.
                        session.mark_lost()
                        return
                    reply = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                failures += 1
                log.warning("janus session %s: event poll failed (%r)", session.id, exc)
                if failures >= 3:
                    session.mark_lost()
                    return
                await asyncio.sleep(0.2 * failures)
                continue
            failures = 0
            events = reply if isinstance(reply, list) else [reply]
            for event in events:
                if not isinstance(event, dict):
                    continue
                if event.get("janus") == "error":
                    code = (event.get("error") or {}).get("code")
                    if code == JanusError.NO_SUCH_SESSION:
                        session.mark_lost()
                        return
                session.deliver(event)
