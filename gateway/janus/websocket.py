"""The Janus API over Janus's WebSocket transport: one socket per node.

Why: over HTTP every Janus event waits for a long poll to be (re)issued,
and each request is an HTTP exchange of its own; over one socket a request
is a frame, its reply comes back on the same socket, and events are pushed
as Janus emits them (bench/janus_http_clients.py measures both).

Matching: every request carries a transaction; the first frame back with
that transaction is the reply (``success``, ``error``, or ``ack`` for an
asynchronous plugin request).  Anything else goes to the session named by
its ``session_id``: the plugin ``event`` that follows an ``ack`` (the
session matches it to the waiting ``JanusHandle.message``), ``webrtcup``,
``media``, ``hangup``, ``detached``...  exactly what the HTTP long poll
hands on.

A socket's sessions live and die with it: Janus destroys the sessions made
over a WebSocket when it closes (``janus_transport_gone`` in janus.c, unless
``reclaim_session_timeout`` is set, which Janus leaves at 0), and sends
their events to that socket only.  So when the socket drops, every session
on it is marked lost (the node goes down, its publishers and viewers end,
as when the HTTP long poll finds Janus gone) and the next request opens a
new socket.  Sessions another gateway replica must take over therefore stay
on HTTP (``gateway.backend``).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from gateway.janus.apierror import JanusUnreachable, Json
from gateway.janus.transport import EventSink

log = logging.getLogger(__name__)

SUBPROTOCOL = "janus-protocol"
# A ping this often; no pong within half of it closes the socket (a node
# that vanished without a FIN), which ends its sessions as above.
HEARTBEAT = 10.0


class WebSocketTransport:
    def __init__(self, url: str, *, request_timeout: float) -> None:
        self.url = url
        self.request_timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()
        self._replies: dict[str, asyncio.Future[Json]] = {}
        self._sessions: dict[int, EventSink] = {}

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def _socket(self) -> aiohttp.ClientWebSocketResponse:
        async with self._connecting:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            if self._http is None or self._http.closed:
                self._http = aiohttp.ClientSession()
            try:
                ws = await self._http.ws_connect(
                    self.url, protocols=(SUBPROTOCOL,), heartbeat=HEARTBEAT, max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=self.request_timeout))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                raise JanusUnreachable(f"WebSocket {self.url}: {exc!r}") from exc
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws), name=f"janus-ws-{self.url}")
            return ws

    async def send(self, path: str, body: Json) -> Json:
        payload = {**body, **_ids(path)}
        transaction = str(payload["transaction"])
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._replies[transaction] = future
        try:
            async with asyncio.timeout(self.request_timeout):  # connecting included, as over HTTP
                ws = await self._socket()
                await ws.send_str(json.dumps(payload))
                return await future
        except TimeoutError as exc:
            raise JanusUnreachable(f"{body.get('janus')} over WebSocket: no reply in "
                                   f"{self.request_timeout} s") from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise JanusUnreachable(f"{body.get('janus')} over WebSocket: {exc!r}") from exc
        finally:
            self._replies.pop(transaction, None)

    async def listen(self, session: EventSink) -> None:
        """Route ``session``'s events to it until it is lost or this is
        cancelled (the reader does the work; this task holds the route open)."""
        self._sessions[session.id] = session
        try:
            if not self.connected:  # the socket it was made on is already gone
                session.mark_lost()
                return
            await session.lost.wait()
        finally:
            if self._sessions.get(session.id) is session:
                del self._sessions[session.id]

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for frame in ws:
                if frame.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    log.warning("janus %s sent a frame that is not JSON: %.80r", self.url, frame.data)
                    continue
                if isinstance(message, dict):
                    self._route(message)
        except Exception:  # whatever broke, the socket is done
            log.exception("janus WebSocket %s: reader failed", self.url)
        finally:
            self._gone(ws)

    def _route(self, message: Json) -> None:
        transaction = message.get("transaction")
        future = self._replies.pop(str(transaction), None)
        if future is not None:
            if not future.done():
                future.set_result(message)
            return
        if transaction is not None and message.get("janus") in ("ack", "success", "error"):
            return  # the reply to a request that gave up waiting: the HTTP path never sees it
        session = self._sessions.get(message.get("session_id", 0))
        if session is None:
            return
        if message.get("janus") == "timeout":  # Janus ended the session for inactivity
            session.mark_lost()
        else:
            session.deliver(message)

    def _gone(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """The socket closed: its sessions are gone in Janus too."""
        if self._ws is not ws:
            return
        self._ws = None
        log.warning("janus WebSocket %s closed (%s)", self.url, ws.close_code)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(JanusUnreachable(f"WebSocket {self.url} closed"))
        self._replies.clear()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.mark_lost()

    async def close(self) -> None:
        self._sessions.clear()  # closing is not losing them: nobody is told
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


def _ids(path: str) -> Json:
    """The session and handle a REST path names, as WebSocket requests carry them."""
    parts = [int(p) for p in path.split("/") if p]
    return dict(zip(("session_id", "handle_id"), parts))
