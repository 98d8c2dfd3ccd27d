"""Janus without the gateway: its admin API, and the raw clients of the baselines.

The benches look at Janus directly for two reasons: to see what a node
still holds after a run (the admin API: sessions, handles, rooms,
mountpoints, forwarders), and to do the gateway's work without the gateway,
as the baseline a figure is compared with (``DirectJanus`` for WHIP set-up,
``NativeJanus`` for the server-offer viewers of whep_ttff).  These clients
are plain HTTP, on purpose not ``gateway.janus.client``: a bug or a cost of
the gateway's own client must not show on both sides of a ratio.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any

import httpx
from harness import KEEPALIVE_S, STREAMING, VIDEOROOM, BenchError, Json

# What the gateway asks of a room by default (config.Settings / ingest.IngestPolicy).
VIDEO_CODECS = "h264,vp8,vp9,av1,h265"
AUDIO_CODECS = "opus"


def room_request(request: str, room: int, admin_key: str, publishers: int = 1) -> Json:
    """VideoRoom ``create``/``destroy`` of a room as the gateway makes them (one publisher).

    The direct baseline makes one per publish; whip_setup makes them for the
    simple-whip-server peers before timing (that server joins existing rooms).
    """
    body: Json = {"request": request, "room": room, "permanent": False, "admin_key": admin_key}
    if request == "create":
        body.update({"publishers": publishers, "is_private": True, "videocodec": VIDEO_CODECS,
                     "audiocodec": AUDIO_CODECS, "bitrate": 0, "fir_freq": 0,
                     "notify_joining": False})
    return body


# --------------------------------------------------------------------------
# Janus's admin API: what a node still holds


class _AdminRequests:
    """Request bodies and reply checks, shared by the sync and the async client."""

    def __init__(self, url: str, secret: str, admin_key: str) -> None:
        self.url, self.secret, self.admin_key = url, secret, admin_key

    def _body(self, body: Json) -> Json:
        return {**body, "transaction": secrets.token_hex(8), "admin_secret": self.secret}

    @staticmethod
    def _checked(body: Json, reply: Any) -> Json:
        if reply.get("janus") == "error":
            raise BenchError(f"admin {body['janus']}: {reply.get('error')}")
        return dict(reply)

    def _plugin_body(self, plugin: str, request: Json) -> Json:
        return {"janus": "message_plugin", "plugin": plugin,
                "request": {**request, "admin_key": self.admin_key}}

    @staticmethod
    def _plugin_data(plugin: str, request: Json, reply: Json) -> Json:
        data = dict(reply.get("response") or {})
        if "error_code" in data:
            raise BenchError(f"{plugin} {request.get('request')}: {data}")
        return data


class JanusAdmin(_AdminRequests):
    """Janus's admin API, synchronous: set-up, teardown and the leak check."""

    def call(self, path: str, body: Json) -> Json:
        body = self._body(body)
        return self._checked(body, httpx.post(self.url + path, json=body, timeout=5).json())

    def plugin(self, plugin: str, request: Json) -> Json:
        return self._plugin_data(plugin, request, self.call("", self._plugin_body(plugin, request)))

    def leftovers(self) -> Json:
        """Sessions, the handles in them, VideoRoom rooms, Streaming mountpoints."""
        sessions = list(self.call("", {"janus": "list_sessions"}).get("sessions", []))
        handles = {sid: list(self.call(f"/{sid}", {"janus": "list_handles"}).get("handles", []))
                   for sid in sessions}
        rooms = [r.get("room") for r in self.plugin(VIDEOROOM, {"request": "list"}).get("list", [])]
        mounts = [m.get("id") for m in self.plugin(STREAMING, {"request": "list"}).get("list", [])]
        return {"sessions": len(sessions), "handles": sum(len(h) for h in handles.values()),
                "rooms": len(rooms), "mountpoints": len(mounts),
                "detail": {"handles": {str(k): v for k, v in handles.items()},
                           "rooms": rooms, "mountpoints": mounts}}


def admin_of(cfg: Any) -> JanusAdmin:
    """The admin API of a bench-managed Janus (a ``JanusProcessConfig``)."""
    return JanusAdmin(cfg.admin_url, cfg.admin_secret, cfg.plugin_admin_key)


def leftovers_of(name: str, cfg: Any) -> Json | None:
    """What a bench-managed Janus still holds; None (and a message) if it cannot say."""
    try:
        return admin_of(cfg).leftovers()
    except Exception as exc:  # noqa: BLE001 - the caller fails the run
        print(f"{name}: leak check failed: {exc!r}", file=sys.stderr)
        return None


class AsyncJanusAdmin(_AdminRequests):
    """Janus's admin API on a shared AsyncClient: for looking while a run goes on."""

    def __init__(self, http: httpx.AsyncClient, url: str, secret: str, admin_key: str) -> None:
        super().__init__(url, secret, admin_key)
        self.http = http

    async def call(self, path: str, body: Json) -> Json:
        body = self._body(body)
        return self._checked(body, (await self.http.post(self.url + path, json=body)).json())

    async def plugin(self, plugin: str, request: Json) -> Json:
        reply = await self.call("", self._plugin_body(plugin, request))
        return self._plugin_data(plugin, request, reply)

    async def rooms(self) -> list[Json]:
        return list((await self.plugin(VIDEOROOM, {"request": "list"})).get("list", []))

    async def mountpoints(self) -> list[Json]:
        return list((await self.plugin(STREAMING, {"request": "list"})).get("list", []))


# --------------------------------------------------------------------------
# a minimal Janus HTTP client for the baselines (on purpose not gateway.janus.client)


class RawJanus:
    """One Janus session, one long-poll task dispatching events by transaction.

    The benches' "same work without the gateway" side: raw HTTP, nothing of
    the gateway's own client, so a gateway bug or cost does not show on both.
    """

    def __init__(self, url: str, timeout: float, keepalive: int, keepalive_expiry: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=keepalive,
                                keepalive_expiry=keepalive_expiry))
        self.session = 0
        self.waiters: dict[str, asyncio.Future[Json]] = {}
        self.poller: asyncio.Task[None] | None = None
        self.poll_error: BaseException | None = None

    async def post(self, path: str, body: Json) -> Json:
        body.setdefault("transaction", secrets.token_hex(8))
        reply = (await self.http.post(self.url + path, json=body)).json()
        if reply.get("janus") == "error":
            raise BenchError(f"{body.get('janus')}: {reply.get('error')}")
        return dict(reply)

    async def start(self) -> None:
        self.session = int((await self.post("", {"janus": "create"}))["data"]["id"])
        self.poller = asyncio.create_task(self._poll())

    async def attach(self, plugin: str) -> int:
        reply = await self.post(f"/{self.session}", {"janus": "attach", "plugin": plugin})
        return int(reply["data"]["id"])

    async def _poll(self) -> None:
        try:
            while True:
                response = await self.http.get(f"{self.url}/{self.session}",
                                               params={"maxev": 20}, timeout=45)
                events = response.json()
                for event in events if isinstance(events, list) else [events]:
                    if event.get("janus") not in ("event", "success", "error"):
                        continue
                    waiter = self.waiters.pop(event.get("transaction") or "", None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # surface it in the next request
            self.poll_error = exc
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_exception(BenchError(f"long poll failed: {exc!r}"))

    async def close(self) -> None:
        if self.poller is not None:
            self.poller.cancel()
            await asyncio.gather(self.poller, return_exceptions=True)
        try:
            if self.session:
                await self.post(f"/{self.session}", {"janus": "destroy"})
        finally:
            await self.http.aclose()


# --------------------------------------------------------------------------
# the direct baseline: a minimal Janus HTTP client, on purpose not gateway.janus.client


class DirectJanus(RawJanus):
    """The VideoRoom requests the gateway makes per WHIP POST, on a raw Janus session."""

    def __init__(self, url: str, admin_key: str, timeout: float) -> None:
        super().__init__(url, timeout, keepalive=64, keepalive_expiry=KEEPALIVE_S)
        self.admin_key = admin_key
        self.control = 0
        # Per publish: (create room, attach, joinandconfigure POST -> ack, ack -> event).
        self.steps: list[tuple[float, float, float, float]] = []

    async def start(self) -> None:
        await super().start()
        self.control = await self.attach(VIDEOROOM)

    async def plugin_request(self, handle: int, body: Json) -> Json:
        reply = await self.post(f"/{self.session}/{handle}", {"janus": "message", "body": body})
        data = (reply.get("plugindata") or {}).get("data") or {}
        if "error_code" in data:
            raise BenchError(f"{body.get('request')}: {data}")
        return data

    async def publish(self, offer: str, display: str) -> tuple[int, int, str]:
        """Create room, attach, joinandconfigure: returns (handle, room, answer sdp)."""
        if self.poll_error is not None:
            raise BenchError(f"long poll failed: {self.poll_error!r}")
        room = secrets.randbits(52) or 1
        t0 = time.perf_counter()
        await self.plugin_request(self.control, room_request("create", room, self.admin_key))
        handle = 0
        try:
            t1 = time.perf_counter()
            handle = await self.attach(VIDEOROOM)
            t2 = time.perf_counter()
            transaction = secrets.token_hex(8)
            future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
            self.waiters[transaction] = future
            try:
                ack = await self.post(f"/{self.session}/{handle}", {
                    "janus": "message", "transaction": transaction,
                    "body": {"request": "joinandconfigure", "ptype": "publisher", "room": room,
                             "display": display, "audio": True, "video": True},
                    "jsep": {"type": "offer", "sdp": offer, "trickle": True},
                })
                if ack.get("janus") != "ack":
                    raise BenchError(f"joinandconfigure: expected ack, got {ack}")
                t3 = time.perf_counter()
                event = await asyncio.wait_for(future, self.timeout)
                t4 = time.perf_counter()
                self.steps.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
            finally:
                self.waiters.pop(transaction, None)
            data = (event.get("plugindata") or {}).get("data") or {}
            jsep = event.get("jsep") or {}
            if data.get("videoroom") != "joined" or jsep.get("type") != "answer":
                raise BenchError(f"joinandconfigure: unexpected event {event}")
            return handle, room, str(jsep["sdp"])
        except BaseException:
            await self.unpublish(handle, room)
            raise

    async def unpublish(self, handle: int, room: int) -> None:
        if handle:
            await self.post(f"/{self.session}/{handle}", {"janus": "detach"})
        await self.plugin_request(self.control, room_request("destroy", room, self.admin_key))


# --------------------------------------------------------------------------
# the native side of whep_ttff: Janus's Streaming server-offer flow


class NativeJanus(RawJanus):
    """Janus's Streaming server-offer flow for one worker's viewers, no gateway."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout, keepalive=128, keepalive_expiry=60)

    async def message(self, handle: int, body: Json, jsep: Json | None = None) -> Json:
        """An asynchronous plugin request: the event with our transaction."""
        transaction = secrets.token_hex(8)
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self.waiters[transaction] = future
        payload: Json = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await self.post(f"/{self.session}/{handle}", payload)
            if reply.get("janus") != "ack":
                event = reply
            else:
                event = await asyncio.wait_for(future, self.timeout)
        finally:
            self.waiters.pop(transaction, None)
        data = (event.get("plugindata") or {}).get("data") or {}
        if event.get("janus") == "error" or "error_code" in data:
            raise BenchError(f"{body.get('request')}: {event.get('error') or data}")
        return event

    async def watch(self, handle: int, mountpoint: int) -> str:
        """``watch``: the SDP of Janus's offer for the mountpoint."""
        event = await self.message(handle, {"request": "watch", "id": mountpoint})
        jsep = event.get("jsep") or {}
        if jsep.get("type") != "offer":
            raise BenchError(f"watch: no offer in {event}")
        return str(jsep["sdp"])

    async def answer(self, handle: int, answer_sdp: str) -> None:
        """``start`` with the viewer's answer to that offer."""
        await self.message(handle, {"request": "start"}, {"type": "answer", "sdp": answer_sdp})

    async def detach(self, handle: int) -> None:
        await self.post(f"/{self.session}/{handle}", {"janus": "detach"})


