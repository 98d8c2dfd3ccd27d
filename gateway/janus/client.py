"""An async client for the Janus API over its HTTP transport.

Why our own: the PyPI clients did not fit.  ``janus-client`` opens a new
aiohttp session for every request and ties its plugin classes to aiortc
media in the same process; ``janus-api-core`` brings reactivex, websockets
and a global settings system, and builds its sessions on the WebSocket
transport.  We need a small thing: typed errors with Janus's codes, one
long-poll event pump per Janus session, and exact control over timeouts
(a hung Janus must fail a POST well before OBS gives up after 8 s).

Transport: aiohttp.  httpx cost about 1 ms of CPU per Janus call here
against 0.17 ms for aiohttp (bench/janus_http_clients.py), and a WHIP POST
makes four calls, so the client library decided whether the gateway kept
up with raw Janus (bench/whip_setup.py).

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
from typing import Any, Callable

import aiohttp

from gateway import probes

log = logging.getLogger(__name__)

Json = dict[str, Any]
EventCallback = Callable[[Json], None]


class JanusError(Exception):
    """A Janus core error (``{"janus":"error"}``), codes from src/apierror.h."""

    NO_SUCH_SESSION = 458
    NO_SUCH_HANDLE = 459
    INVALID_SDP = 465

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


class JanusPluginError(JanusError):
    """An error a plugin reported in ``plugindata.data.error_code``."""

    def __init__(self, plugin: str, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.plugin = plugin
        self.args = (f"{plugin} error {code}: {reason}",)


class JanusUnreachable(Exception):
    """The node did not answer (refused, timed out, or answered garbage)."""


class JanusSessionLost(JanusUnreachable):
    """The Janus session is gone (node restarted, or the session timed out)."""


@dataclass
class PluginEvent:
    data: Json
    jsep: Json | None


class JanusClient:
    def __init__(
        self,
        url: str,
        *,
        api_secret: str | None = None,
        request_timeout: float = 4.0,
        poll_timeout: float = 45.0,
    ) -> None:
        self.url = url.rstrip("/")
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

    @probes.timed("janus.request")
    async def post(self, path: str, body: Json) -> Json:
        """One Janus API request; returns the reply or raises a typed error."""
        body = {**body, "transaction": body.get("transaction") or _transaction()}
        if self.api_secret:
            body["apisecret"] = self.api_secret
        try:
            async with self.http.post(self.url + path, json=body) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise JanusUnreachable(f"POST {path}: {exc!r}") from exc
        if not isinstance(reply, dict):
            raise JanusUnreachable(f"POST {path}: not a Janus reply: {reply!r:.80}")
        if reply.get("janus") == "error":
            err = reply.get("error") or {}
            raise JanusError(int(err.get("code", 0)), str(err.get("reason", "")))
        return reply

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
        self._pump = asyncio.create_task(self._run_pump(), name=f"janus-pump-{self.id}")

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

    async def _run_pump(self) -> None:
        """Long-poll events until the session is gone; a poll is also the keepalive."""
        client = self.client
        params: dict[str, Any] = {"maxev": 20}
        if client.api_secret:
            params["apisecret"] = client.api_secret
        poll_timeout = aiohttp.ClientTimeout(total=client.poll_timeout)
        failures = 0
        while not self.lost.is_set():
            try:
                async with client.http.get(f"{client.url}/{self.id}", params=params,
                                           timeout=poll_timeout) as response:
                    if response.status == 404:
                        # Janus 1.1.2 answers a poll for a session it no longer
                        # knows (it restarted) with 404 and no body.
                        self._mark_lost()
                        return
                    reply = await response.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                failures += 1
                log.warning("janus session %s: event poll failed (%r)", self.id, exc)
                if failures >= 3:
                    self._mark_lost()
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
                        self._mark_lost()
                        return
                self._dispatch(event)

    def _dispatch(self, event: Json) -> None:
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
        if event.get("janus") == "error":
            err = event.get("error") or {}
            raise JanusError(int(err.get("code", 0)), str(err.get("reason", "")))
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
