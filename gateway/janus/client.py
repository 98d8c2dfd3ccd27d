"""An async client for the Janus API, over its WebSocket or its HTTP transport.

Why our own: the PyPI clients did not fit.  ``janus-client`` opens a new
aiohttp session for every request and ties its plugin classes to aiortc
media in the same process; ``janus-api-core`` brings reactivex, websockets
and a global settings system, and builds its sessions on the WebSocket
transport.  We need a small thing: typed errors with Janus's codes, one
event pump per Janus session, and exact control over timeouts
(a hung Janus must fail a POST well before OBS gives up after 8 s).

Transport: aiohttp, over Janus's HTTP API (``transport.HttpTransport``) or
its WebSocket API (``websocket.WebSocketTransport``, when the node has a
``ws_url``); the rest of this module does not know which.  httpx cost
about 1 ms of CPU per Janus call here against 0.17 ms for aiohttp
(bench/janus_http_clients.py), and a WHIP POST makes four calls, so the
client library decided whether the gateway kept up with raw Janus
(bench/whip_setup.py).

Shape: ``JanusClient`` (one per node) → ``JanusSession`` (owns the event
pump) → ``JanusHandle`` (one plugin handle).  Synchronous plugin requests
return their ``plugindata.data``; asynchronous ones (``ack`` first) return
the event that carries the same transaction, with its jsep.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Callable

from gateway import probes
from gateway.janus.apierror import (  # re-exported: the package's error types
    JanusError,
    JanusPluginError,
    JanusSessionLost,
    JanusUnreachable,
    Json,
    raise_for_error,
)
from gateway.janus.transport import HttpTransport, Transport
from gateway.janus.websocket import WebSocketTransport

log = logging.getLogger(__name__)

EventCallback = Callable[[Json], None]


@dataclass
class PluginEvent:
    data: Json
    jsep: Json | None


class JanusClient:
    def __init__(
        self,
        url: str,
        *,
        ws_url: str | None = None,
        api_secret: str | None = None,
        request_timeout: float = 4.0,
        poll_timeout: float = 45.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.ws_url = ws_url
        self.api_secret = api_secret
        self.request_timeout = request_timeout
        # /info (the node's version and plugins) always goes over HTTP.
        self._http = HttpTransport(self.url, api_secret=api_secret,
                                   request_timeout=request_timeout, poll_timeout=poll_timeout)
        self.transport: Transport = (
            WebSocketTransport(ws_url, request_timeout=request_timeout) if ws_url else self._http)

    async def close(self) -> None:
        if self.transport is not self._http:
            await self.transport.close()
        await self._http.close()

    async def info(self) -> Json:
        return await self._http.info()

    @probes.timed("janus.request")
    async def post(self, path: str, body: Json) -> Json:
        """One Janus API request (``path`` as in the REST API: ``""``,
        ``/<session>`` or ``/<session>/<handle>``); returns the reply or
        raises a typed error."""
        body = {**body, "transaction": body.get("transaction") or _transaction()}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        return raise_for_error(await self.transport.send(path, body))

    async def create_session(self) -> JanusSession:
        reply = await self.post("", {"janus": "create"})
        session = JanusSession(self, int(reply["data"]["id"]))
        session.start()
        return session


class JanusSession:
    def __init__(self, client: JanusClient, session_id: int) -> None:
        self.client = client
        self.id = session_id
        self.handles: dict[int, JanusHandle] = {}
        self._waiters: dict[str, asyncio.Future[Json]] = {}
        self._pump: asyncio.Task[None] | None = None
        self.lost = asyncio.Event()
        self.on_lost: Callable[[], None] | None = None

    def start(self) -> None:
        self._pump = asyncio.create_task(self.client.transport.listen(self),
                                         name=f"janus-pump-{self.id}")

    @property
    def alive(self) -> bool:
        return not self.lost.is_set()

    async def request(self, path: str, body: Json) -> Json:
        if self.lost.is_set():
            raise JanusSessionLost(f"session {self.id} is gone")
        try:
            return await self.client.post(f"/{self.id}{path}", body)
        except JanusError as exc:
            if exc.code == JanusError.NO_SUCH_SESSION:
                self._mark_lost()
                raise JanusSessionLost(f"session {self.id} is gone") from exc
            raise

    async def attach(self, plugin: str, on_event: EventCallback | None = None,
                     opaque_id: str | None = None) -> JanusHandle:
        body: Json = {"janus": "attach", "plugin": plugin}
        if opaque_id:
            body["opaque_id"] = opaque_id  # lets a restarted gateway find what it left
        reply = await self.request("", body)
        handle = JanusHandle(self, int(reply["data"]["id"]), plugin, on_event)
        self.handles[handle.id] = handle
        return handle

    async def keepalive(self, timeout: float) -> None:
        """One cheap round trip that proves Janus answers and still has the session."""
        try:
            await asyncio.wait_for(self.request("", {"janus": "keepalive"}), timeout)
        except asyncio.TimeoutError as exc:
            raise JanusUnreachable(f"no keepalive answer in {timeout} s") from exc

    def mark_lost(self) -> None:
        """Give the session up (Janus hung or vanished): waiters fail, on_lost runs."""
        self._mark_lost()

    async def destroy(self) -> None:
        try:
            if not self.lost.is_set():
                await self.request("", {"janus": "destroy"})
        except (JanusError, JanusUnreachable):
            pass
        finally:
            self._mark_lost(notify=False)
            if self._pump:
                self._pump.cancel()
                await asyncio.gather(self._pump, return_exceptions=True)

    async def stop_polling(self) -> None:
        """Stop the event pump but leave the session in Janus: another gateway
        replica takes it over (``janus.takeover``)."""
        if self._pump:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)

    def wait_for(self, transaction: str) -> asyncio.Future[Json]:
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiters[transaction] = future
        return future

    def forget(self, transaction: str) -> None:
        self._waiters.pop(transaction, None)

    def deliver(self, event: Json) -> None:
        """An event the transport received for this session: to the request
        waiting for its transaction, or to its handle's listener."""
        probes.emit("janus.event", event)
        kind = event.get("janus")
        if kind in ("keepalive", "ack"):
            return
        transaction = event.get("transaction")
        if transaction and transaction in self._waiters and kind in ("event", "success", "error"):
            future = self._waiters.pop(transaction)
            if not future.done():
                future.set_result(event)
            return
        handle = self.handles.get(event.get("sender", 0))
        if kind == "detached" and handle is not None:
            self.handles.pop(handle.id, None)
        if handle is not None and handle.on_event is not None:
            try:
                handle.on_event(event)
            except Exception:  # a buggy listener must not stop the pump
                log.exception("janus event listener failed for %s", kind)

    def _mark_lost(self, *, notify: bool = True) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        probes.emit("janus.session_lost", self.id)
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(JanusSessionLost(f"session {self.id} is gone"))
        self._waiters.clear()
        if notify and self.on_lost is not None:
            self.on_lost()


class JanusHandle:
    def __init__(
        self, session: JanusSession, handle_id: int, plugin: str, on_event: EventCallback | None
    ) -> None:
        self.session = session
        self.id = handle_id
        self.plugin = plugin
        self.on_event = on_event

    async def _post(self, body: Json) -> Json:
        return await self.session.request(f"/{self.id}", body)

    async def request(self, body: Json) -> Json:
        """A synchronous plugin request; returns ``plugindata.data``."""
        reply = await self._post({"janus": "message", "body": body})
        return self._plugin_data(reply)

    @probes.timed("janus.message")
    async def message(self, body: Json, jsep: Json | None = None, *, timeout: float = 6.0) -> PluginEvent:
        """An asynchronous plugin request: wait for the event with our transaction."""
        transaction = _transaction()
        future = self.session.wait_for(transaction)
        payload: Json = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await self._post(payload)
            if reply.get("janus") != "ack":  # some requests answer at once
                return PluginEvent(self._plugin_data(reply), reply.get("jsep"))
            event = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as exc:
            raise JanusUnreachable(f"no answer to {body.get('request')} in {timeout} s") from exc
        finally:
            self.session.forget(transaction)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved: a lost session fails it and nobody waits
            else:
                future.cancel()
        raise_for_error(event)
        return PluginEvent(self._plugin_data(event), event.get("jsep"))

    async def trickle(self, mid: str, candidates: list[str], completed: bool) -> None:
        """Trickle ICE candidates (``candidate:`` lines without the prefix).

        Janus bundles, and reads trickled candidates for the first m-line
        only, so every candidate goes under ``mid`` at index 0.
        """
        if candidates:
            await self._post({"janus": "trickle", "candidates": [
                {"sdpMid": mid, "sdpMLineIndex": 0, "candidate": f"candidate:{c}"}
                for c in candidates]})
        if completed:
            await self._post({"janus": "trickle", "candidate": {"completed": True}})

    async def hangup(self) -> None:
        await self._post({"janus": "hangup"})

    async def detach(self) -> None:
        try:
            await self._post({"janus": "detach"})
        finally:
            self.session.handles.pop(self.id, None)

    def _plugin_data(self, reply: Json) -> Json:
        data = ((reply.get("plugindata") or {}).get("data")) or {}
        if "error_code" in data or "error" in data:
            raise JanusPluginError(self.plugin, int(data.get("error_code", 0)), str(data.get("error", "")))
        return data


def with_admin_key(admin_key: str | None, body: Json) -> Json:
    """A plugin request body with the node's plugin ``admin_key``, if it has one
    (rooms, mountpoints and forwarders are created and destroyed with it)."""
    return {**body, "admin_key": admin_key} if admin_key else body


def _transaction() -> str:
    return secrets.token_hex(8)
