"""Webhooks: telling other systems what happened, and asking one who may come in.

Event webhooks are fed by domain events only (the ``StreamRegistry``'s
publisher changes, the viewer book, the nodes' up/down), never by HTTP code,
and they never slow a request: an event is signed and put on a bounded
queue per receiver, and one task per receiver delivers them in order, with
bounded retries and exponential backoff.  A dead receiver fills its own
queue; what no longer fits is dropped, counted and logged.

Every delivery is signed the Standard Webhooks way (webhook-id,
webhook-timestamp, webhook-signature: ``v1,`` + base64 of HMAC-SHA256 over
``id.timestamp.body``), so a receiver verifies it with any Standard
Webhooks library; the id stays the same across retries (receivers dedupe on
it), the timestamp and signature are made afresh for each attempt (receivers
refuse old timestamps).

The auth webhook (``AuthWebhook``) is the other direction: before each
publish and each view the gateway asks a receiver, caches the answer for a
few seconds and refuses (503 + Retry-After) when the receiver cannot answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx

from gateway.core.streams import PublisherChange, PublisherSession, StreamRegistry
from gateway.errors import AuthHookForbidden, AuthHookRefused, AuthHookUnavailable

if TYPE_CHECKING:
    from gateway.core.viewers import ViewerSession
    from gateway.janus.node import JanusNode
    from gateway.core.placement import NodePool

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "stream.live", "stream.ended",
    "publisher.connected", "publisher.disconnected", "publisher.replaced",
    "viewers.changed", "node.up", "node.down",
    "recording.ready", "recording.failed",
)
SECRET_PREFIX = "whsec_"
USER_AGENT = "whip-gateway-webhooks"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` + base64 of the key bytes."""
    text = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    return base64.b64decode(text, validate=True)


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(key: bytes, message_id: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }


@dataclass(frozen=True)
class HookPolicy:
    timeout: float = 5.0  # per attempt
    retries: int = 5  # attempts after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time
    backoff_max: float = 30.0
    queue_size: int = 1000  # events waiting per receiver; more are dropped
    viewers_interval: float = 1.0  # viewers.changed: at most once per interval per stream
    drain_timeout: float = 2.0  # at shutdown, how long queued events may still go out


@dataclass(frozen=True)
class Message:
    id: str
    type: str
    body: bytes


@dataclass(eq=False)
class Receiver:
    """One webhook URL: its queue, its delivery task and what happened so far.

    The counters are what an operator (and the metrics) read: ``delivered``,
    ``failed`` (gave up after the retries, or refused with a 4xx), ``dropped``
    (the queue was full), ``retried`` (attempts after a first failure).
    """

    url: str
    key: bytes
    events: frozenset[str]  # empty: all
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    retried: int = 0

    def wants(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class Webhooks:
    """Signs events and delivers them to every receiver that wants them."""

    def __init__(self, receivers: list[tuple[str, str, list[str]]], policy: HookPolicy,
                 client: httpx.AsyncClient | None = None) -> None:
        self.policy = policy
        self.receivers = [
            Receiver(url=url, key=secret_key(secret), events=frozenset(events),
                     queue=asyncio.Queue(policy.queue_size))
            for url, secret, events in receivers
        ]
        self._client = client
        self._own_client = client is None

    def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.policy.timeout,
                                             follow_redirects=False)
        for receiver in self.receivers:
            receiver.task = asyncio.create_task(self._deliver_all(receiver),
                                                name=f"webhook {receiver.url}")

    async def close(self) -> None:
        """Let what is queued go out for a moment, then stop."""
        waiting = [r.queue.join() for r in self.receivers if r.task is not None]
        if waiting:
            try:
                async with asyncio.timeout(self.policy.drain_timeout):
                    await asyncio.gather(*waiting)
            except TimeoutError:
                log.warning("webhooks: %d event(s) undelivered at shutdown",
                            sum(r.queue.qsize() for r in self.receivers))
        for receiver in self.receivers:
            if receiver.task is not None:
                receiver.task.cancel()
        await asyncio.gather(*(r.task for r in self.receivers if r.task), return_exceptions=True)
        if self._own_client and self._client is not None:
            await self._client.aclose()

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        """Queue ``event_type`` for every receiver that wants it; never waits."""
        wanting = [r for r in self.receivers if r.wants(event_type)]
        if not wanting:
            return
        message = Message(
            id="msg_" + secrets.token_urlsafe(18),
            type=event_type,
            body=json.dumps({
                "type": event_type,
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "data": data,
            }, separators=(",", ":")).encode(),
        )
        for receiver in wanting:
            try:
                receiver.queue.put_nowait(message)
            except asyncio.QueueFull:
                receiver.dropped += 1
                log.warning("webhook %s: queue full (%d), dropped %s %s (%d dropped so far)",
                            receiver.url, self.policy.queue_size, event_type, message.id,
                            receiver.dropped)

    async def _deliver_all(self, receiver: Receiver) -> None:
        while True:
            message = await receiver.queue.get()
            try:
                await self._deliver(receiver, message)
            except Exception:
                log.exception("webhook %s: delivery of %s failed", receiver.url, message.id)
            finally:
                receiver.queue.task_done()

    async def _deliver(self, receiver: Receiver, message: Message) -> None:
        """One event, tried 1 + ``retries`` times: a 2xx is done, a 4xx other than
        408/429 will not get better, anything else (5xx, timeouts, refused
        connections) is tried again after a doubling pause."""
        assert self._client is not None
        pause = self.policy.backoff
        for attempt in range(self.policy.retries + 1):
            if attempt:
                receiver.retried += 1
                await asyncio.sleep(pause)
                pause = min(pause * 2, self.policy.backoff_max)
            try:
                response = await self._client.post(
                    receiver.url, content=message.body,
                    headers=signed_headers(receiver.key, message.id, message.body))
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.is_success:
                    receiver.delivered += 1
                    return
                why = f"HTTP {response.status_code}"
                if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                    receiver.failed += 1
                    log.warning("webhook %s: %s %s refused (%s); not retried",
                                receiver.url, message.type, message.id, why)
                    return
            log.info("webhook %s: %s %s attempt %d failed: %s", receiver.url, message.type,
                     message.id, attempt + 1, why)
        receiver.failed += 1
        log.warning("webhook %s: gave up on %s %s after %d attempts", receiver.url,
                    message.type, message.id, self.policy.retries + 1)


class HookEvents:
    """Turns domain events into webhook events.

    A ``PublisherObserver`` (publisher and stream events), a viewer-book
    observer (``viewers.changed``, coalesced per stream so a crowd joining
    makes one event a second, not one per viewer) and a node observer.
    """

    def __init__(self, hooks: Webhooks, registry: StreamRegistry, viewer_count: Any,
                 policy: HookPolicy) -> None:
        self.hooks = hooks
        self.registry = registry
        self.viewer_count = viewer_count  # stream -> current number of viewers
        self.policy = policy
        self._joined: dict[str, int] = defaultdict(int)
        self._left: dict[str, int] = defaultdict(int)
        self._pending: dict[str, asyncio.TimerHandle] = {}
        registry.subscribe(self)

    # -- publishers and streams (PublisherObserver) ---------------------------

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        data = {"stream": publisher.stream, "publisher": publisher.id[:8],
                "node": publisher.node_name}
        if change is PublisherChange.PUBLISHED:
            self.hooks.emit("publisher.connected", data)
        elif change is PublisherChange.LIVE:
            self.hooks.emit("stream.live", {"stream": publisher.stream,
                                            "publisher": publisher.id[:8]})
        elif change is PublisherChange.ENDED:
            successor = self.registry.publisher_of(publisher.stream)
            self.hooks.emit("publisher.disconnected", {**data, "reason": publisher.end_reason})
            if successor is not None and successor is not publisher:
                self.hooks.emit("publisher.replaced", {**data, "by": successor.id[:8]})
            else:
                self.hooks.emit("stream.ended", {"stream": publisher.stream,
                                                 "reason": publisher.end_reason})

    # -- viewers (ViewerBook observer) ---------------------------------------

    def viewer_added(self, session: ViewerSession) -> None:
        self._joined[session.stream] += 1
        self._schedule(session.stream)

    def viewer_removed(self, session: ViewerSession) -> None:
        self._left[session.stream] += 1
        self._schedule(session.stream)

    def _schedule(self, stream: str) -> None:
        if stream in self._pending:
            return
        self._pending[stream] = asyncio.get_running_loop().call_later(
            self.policy.viewers_interval, self._flush, stream)

    def _flush(self, stream: str) -> None:
        self._pending.pop(stream, None)
        joined, left = self._joined.pop(stream, 0), self._left.pop(stream, 0)
        self.hooks.emit("viewers.changed", {"stream": stream, "joined": joined, "left": left,
                                            "viewers": self.viewer_count(stream)})

    def flush_all(self) -> None:
        """At shutdown: what was counted goes out now rather than never."""
        for stream, timer in list(self._pending.items()):
            timer.cancel()
            self._flush(stream)

    # -- nodes (NodeObserver) -------------------------------------------------

    def node_up(self, node: JanusNode) -> None:
        self.hooks.emit("node.up", {"node": node.name, "role": node.role,
                                    "version": node.version_string})

    def node_down(self, node: JanusNode) -> None:
        self.hooks.emit("node.down", {"node": node.name, "role": node.role})


# -- the auth webhook -----------------------------------------------------------


@dataclass(frozen=True)
class AuthPolicy:
    url: str
    secret: str | None = None
    timeout: float = 2.0
    cache_ttl: float = 5.0
    retry_after: int = 5


class AuthWebhook:
    """Asks a receiver whether a publish or a view may go ahead.

    POST ``{action, stream, token, client}``; 2xx allows, 401 and 403 refuse
    with the same status.  Answers are cached for ``cache_ttl`` seconds per
    (action, stream, token, client), so a page of players reconnecting does
    not become a storm of calls.  Anything else (unreachable, timeout, 5xx,
    another status) fails closed: 503 with Retry-After, and is not cached.
    """

    def __init__(self, policy: AuthPolicy, client: httpx.AsyncClient | None = None) -> None:
        self.policy = policy
        self._key = secret_key(policy.secret) if policy.secret else None
        self._client = client or httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False)
        self._own_client = client is None
        self._cache: dict[tuple[str, str, str | None, str | None], tuple[float, int]] = {}
        # For an operator (and metrics): requests sent, answers reused from the cache.
        self.calls = 0
        self.cache_hits = 0

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def check(self, action: str, stream: str, token: str | None, client: str | None) -> None:
        """Raise unless the receiver allows ``action`` ("publish" or "view")."""
        key = (action, stream, token, client)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            status = cached[1]
            self.cache_hits += 1
        else:
            status = await self._ask(action, stream, token, client)
            self._prune(now)
            self._cache[key] = (now + self.policy.cache_ttl, status)
        if status == 401:
            raise AuthHookRefused(f"the auth webhook refused to let you {action} {stream!r}")
        if status == 403:
            raise AuthHookForbidden(f"the auth webhook forbids you to {action} {stream!r}")

    async def _ask(self, action: str, stream: str, token: str | None, client: str | None) -> int:
        body = json.dumps({"action": action, "stream": stream, "token": token,
                           "client": client}).encode()
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if self._key is not None:
            headers = signed_headers(self._key, "msg_" + secrets.token_urlsafe(18), body)
        self.calls += 1
        try:
            response = await self._client.post(self.policy.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("auth webhook %s unreachable: %s", self.policy.url, type(exc).__name__)
            raise AuthHookUnavailable("the auth webhook cannot be reached",
                                      retry_after=self.policy.retry_after) from None
        if response.is_success:
            return 200
        if response.status_code in (401, 403):
            return response.status_code
        log.warning("auth webhook %s answered %d", self.policy.url, response.status_code)
        raise AuthHookUnavailable(f"the auth webhook answered {response.status_code}",
                                  retry_after=self.policy.retry_after)

    def _prune(self, now: float) -> None:
        if len(self._cache) > 10_000:
            for key, (expiry, _) in list(self._cache.items()):
                if expiry <= now:
                    del self._cache[key]


class Hooks:
    """The webhooks a gateway runs, built from settings: what ``create_app`` holds."""

    def __init__(self, webhooks: Webhooks | None, events: HookEvents | None,
                 auth: AuthWebhook | None) -> None:
        self.webhooks, self.events, self.auth = webhooks, events, auth

    def recording_ready(self, record: dict[str, Any]) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("recording.ready", record)

    def recording_failed(self, record: dict[str, Any]) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("recording.failed", record)

    @classmethod
    def from_settings(cls, settings: Any, registry: StreamRegistry, viewers: Any,
                      pool: NodePool) -> Hooks:
        """``viewers`` is the egress ``ViewerBook``; the pool's nodes, now and
        added at run time, are observed for up/down."""
        webhooks = events = None
        if settings.webhooks:
            policy = HookPolicy(timeout=settings.webhook_timeout, retries=settings.webhook_retries,
                                backoff=settings.webhook_backoff,
                                queue_size=settings.webhook_queue_size,
                                viewers_interval=settings.webhook_viewers_interval)
            webhooks = Webhooks([(w.url, w.secret, w.events) for w in settings.webhooks], policy)
            events = HookEvents(webhooks, registry, viewers.count, policy)
            viewers.subscribe(events)
            pool.observe(events)
        auth = None
        if settings.auth_webhook_url:
            auth = AuthWebhook(AuthPolicy(url=settings.auth_webhook_url,
                                          secret=settings.auth_webhook_secret,
                                          timeout=settings.auth_webhook_timeout,
                                          cache_ttl=settings.auth_webhook_cache_ttl))
        return cls(webhooks, events, auth)

    def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()

    async def close(self) -> None:
        if self.events is not None:
            self.events.flush_all()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.auth is not None:
            await self.auth.close()
