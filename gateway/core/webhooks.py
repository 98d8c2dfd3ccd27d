"""Event webhooks: telling other systems what happened.

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
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from gateway.core.webhook_signing import secret_key, signed_headers

log = logging.getLogger(__name__)


EVENT_TYPES = (
    "stream.live", "stream.ended",
    "publisher.connected", "publisher.disconnected", "publisher.replaced",
    "viewers.changed", "node.up", "node.down",
    "recording.ready", "recording.failed",
)


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

