"""Rate limits, as one ASGI middleware in front of the WHIP and WHEP resources.

Sized so that a webinar gets in and abuse does not (README, "Rate limits"):

- per client address, every request that costs work (POST, PATCH, DELETE
  under ``/whip`` and ``/whep``): a ceiling against a script gone wild;
- per client address, new sessions: WHEP POSTs (viewers, many behind one
  NAT or proxy) and WHIP POSTs (publishers, few: a tighter budget);
- per stream, new sessions, from all clients together;
- per session, its PATCHes, DELETE and extension requests (trickle, layer
  changes, events): one looping player cannot eat its office's budget;
- per client address, failed authentication (401/403 answers), strictly and
  apart from the rest: once over it, that address's requests that carry a
  token get 429 until the window frees a slot, so a token-guessing loop
  stops while viewers who authenticate (they never fail) are not counted.

Over a budget the answer is 429 (RFC 6585 section 4) with Retry-After, in
the gateway's problem+json form.  The middleware runs before any handler,
so the resources themselves never count anything.

Budgets are sliding-window counters: two counters per key, O(1) per
request in memory (``MemoryWindows``) and one round trip in Redis (the
``limits`` library's storage), where a moving window would keep one entry
per request (1000s for a webinar).  With ``rate_limit_storage =
"redis://..."`` every replica counts in the same Redis, so the budgets hold
for the deployment.  When
that storage fails, requests are let through (logged): the limits protect
the service and must not become the outage.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import STREAM_NAME_PATTERN, Settings
from gateway.errors import AuthenticationFailuresExceeded, GatewayError, TooManyRequests
from gateway.http.problems import error_response

log = logging.getLogger(__name__)

# /whip/{stream}, /whep/{stream}/{session}, /whep/{stream}/{session}/sse/...
_PATH = re.compile(r"^/(whip|whep)/([^/]+)(?:/([^/]+)(/.*)?)?$")
_STREAM = re.compile(STREAM_NAME_PATTERN)
_SESSION = re.compile(r"^[A-Za-z0-9_.~-]{1,128}$")
_COUNTED = frozenset({"POST", "PATCH", "DELETE"})
_STORAGE_WARNING_EVERY = 30.0  # seconds between two "storage failed" log lines
REDIS_OPTIONS = {"implementation": "redispy", "socket_timeout": 0.5,
                 "socket_connect_timeout": 0.5, "key_prefix": "whip-gateway"}


def _item(value: str | None) -> RateLimitItem | None:
    return parse(value) if value else None


@dataclass(frozen=True)
class Budgets:
    """The settings' rates, parsed; None is a budget that is off."""

    per_client: RateLimitItem | None
    publish_per_client: RateLimitItem | None
    view_per_client: RateLimitItem | None
    per_stream: RateLimitItem | None
    per_session: RateLimitItem | None
    auth_failures: RateLimitItem | None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Budgets":
        return cls(
            per_client=_item(settings.rate_limit_per_client),
            publish_per_client=_item(settings.rate_limit_publish_per_client),
            view_per_client=_item(settings.rate_limit_view_per_client),
            per_stream=_item(settings.rate_limit_per_stream),
            per_session=_item(settings.rate_limit_per_session),
            auth_failures=_item(settings.rate_limit_auth_failures_per_client),
        )


Window = tuple[int, float, int, float]  # previous count, its TTL, current count, its TTL + window


class MemoryWindows:
    """Sliding-window counters in this process, O(1) per request.

    The same arithmetic as the ``limits`` library's sliding-window counter,
    kept here because its in-memory storage sweeps every key on every hit
    (a cost that grows with the audience: thousands of per-session keys
    during a webinar).  Here a sweep runs at most every ``SWEEP_EVERY``
    seconds.  No awaits inside: each call is atomic on the event loop.
    """

    SWEEP_EVERY = 10.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # key -> [window index, previous count, current count, window seconds]
        self._windows: dict[str, list[int]] = {}
        self._clock = clock
        self._next_sweep = clock() + self.SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._windows)

    def _state(self, item: RateLimitItem, key: tuple[str, ...], now: float) -> list[int]:
        expiry = item.get_expiry()
        index = int(now // expiry)
        name = item.key_for(*key)
        state = self._windows.get(name)
        if state is None:
            state = self._windows[name] = [index, 0, 0, expiry]
        elif state[0] != index:
            state[1] = state[2] if state[0] == index - 1 else 0
            state[2], state[0] = 0, index
        if now >= self._next_sweep:
            self._sweep(now)
        return state

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_EVERY
        stale = [k for k, (index, _, _, expiry) in self._windows.items() if index < now // expiry - 1]
        for k in stale:
            del self._windows[k]

    @staticmethod
    def _weighted(state: list[int], now: float) -> float:
        index, previous, current, expiry = state
        return previous * ((index + 1) * expiry - now) / expiry + current

    async def hit(self, item: RateLimitItem, *key: str) -> bool:
        now = self._clock()
        state = self._state(item, key, now)
        if math.floor(self._weighted(state, now)) + 1 > item.amount:
            return False
        state[2] += 1
        return True

    async def test(self, item: RateLimitItem, *key: str) -> bool:
        now = self._clock()
        return math.floor(self._weighted(self._state(item, key, now), now)) + 1 <= item.amount

    async def window(self, item: RateLimitItem, *key: str) -> Window:
        now = self._clock()
        index, previous, current, expiry = self._state(item, key, now)
        left = (index + 1) * expiry - now
        return previous, left if previous else 0.0, current, left + expiry

    async def close(self) -> None:
        self._windows.clear()


class SharedWindows:
    """The same counters in Redis (``limits``' async storage, redis-py): one per deployment."""

    def __init__(self, url: str) -> None:
        if url.startswith(("redis://", "rediss://", "redis+unix://")):
            url = "async+" + url
        self.storage = storage_from_string(url, **REDIS_OPTIONS)
        self._limiter = SlidingWindowCounterRateLimiter(self.storage)

    async def hit(self, item: RateLimitItem, *key: str) -> bool:
        return await self._limiter.hit(item, *key)

    async def test(self, item: RateLimitItem, *key: str) -> bool:
        return await self._limiter.test(item, *key)

    async def window(self, item: RateLimitItem, *key: str) -> Window:
        return await self.storage.get_sliding_window(  # type: ignore[attr-defined, no-any-return]
            item.key_for(*key), item.get_expiry())

    async def close(self) -> None:
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        close: Callable[[], Awaitable[Any]] | None = getattr(client, "aclose", None)
        if close is not None:
            await close()


@dataclass(frozen=True)
class LimitedRequest:
    """What the limits need to know about a request, read from the ASGI scope."""

    method: str
    client: str
    kind: str  # "whip" or "whep"
    stream: str  # "-" when the path holds no valid stream name
    session: str | None  # None for the endpoint itself
    has_token: bool

    @property
    def creates_session(self) -> bool:
        return self.method == "POST" and self.session is None

    @property
    def counted(self) -> bool:
        return self.method in _COUNTED


def read_request(scope: Scope) -> LimitedRequest | None:
    """The request, if it goes to a WHIP or WHEP resource (None otherwise)."""
    match = _PATH.match(scope.get("path", ""))
    if match is None:
        return None
    kind, stream, session, _ = match.groups()
    headers = scope.get("headers", [])
    query = scope.get("query_string", b"")
    has_token = any(k == b"authorization" for k, _ in headers) or (
        bool(query) and b"token" in parse_qs(query))
    client = scope.get("client")
    return LimitedRequest(
        method=scope["method"],
        client=client[0] if client else "unknown",
        kind=kind,
        stream=stream if _STREAM.match(stream) else "-",
        session=(session if _SESSION.match(session) else "-") if session is not None else None,
        has_token=has_token,
    )


def retry_after(item: RateLimitItem, previous: int, previous_ttl: float, current: int,
                current_ttl: float) -> int:
    """Seconds until a sliding-window counter admits one more request.

    The counter admits while ``previous * previous_ttl / E + current < amount``
    (E: the window).  Within the current window only ``previous_ttl`` shrinks;
    when the window rolls over, ``current`` becomes ``previous`` at full
    weight and decays from there.  ``current_ttl`` runs one window past the
    current one (that is how ``limits`` reports it).
    """
    window = float(item.get_expiry())
    amount = item.amount
    left_in_window = max(0.0, current_ttl - window)
    if current < amount:
        wait = left_in_window
        if previous:
            wait = min(wait, previous_ttl - (amount - current) * window / previous)
    else:
        wait = left_in_window + window * (current - amount) / current
    return max(1, math.ceil(wait + 0.001))


class RateLimits:
    """The budgets and where they are counted."""

    def __init__(self, budgets: Budgets, storage_url: str = "memory://") -> None:
        self.budgets = budgets
        self.counters: MemoryWindows | SharedWindows = (
            MemoryWindows() if storage_url.startswith("memory://") else SharedWindows(storage_url))
        self._storage_warned_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> "RateLimits":
        return cls(Budgets.from_settings(settings), settings.rate_limit_storage)

    def _checks(self, req: LimitedRequest) -> list[tuple[RateLimitItem, tuple[str, ...], str]]:
        """(budget, key, what it counts) for one counted request, cheapest refusal first."""
        b = self.budgets
        checks: list[tuple[RateLimitItem | None, tuple[str, ...], str]] = [
            (b.per_client, ("client", req.client), f"requests from {req.client}"),
        ]
        if req.creates_session:
            if req.kind == "whip":
                checks.append((b.publish_per_client, ("publish", req.client),
                               f"WHIP sessions (publishers) from {req.client}"))
            else:
                checks.append((b.view_per_client, ("view", req.client),
                               f"WHEP sessions (viewers) from {req.client}"))
            checks.append((b.per_stream, ("stream", req.stream),
                           f"new sessions on stream {req.stream}"))
        else:
            checks.append((b.per_session, ("session", req.kind, req.stream, req.session or "-"),
                           "requests on this session"))
        return [(item, key, what) for item, key, what in checks if item is not None]

    async def admit(self, req: LimitedRequest) -> GatewayError | None:
        """None to let the request in; else the 429 to answer with."""
        failures = self.budgets.auth_failures
        if failures is not None and req.has_token:
            if not await self.counters.test(failures, "authfail", req.client):
                wait = await self._retry_after(failures, ("authfail", req.client))
                return AuthenticationFailuresExceeded(
                    f"too many failed authentications from {req.client} ({failures}); "
                    f"retry in {wait} s", retry_after=wait)
        if not req.counted:
            return None
        for item, key, what in self._checks(req):
            if not await self.counters.hit(item, *key):
                wait = await self._retry_after(item, key)
                return TooManyRequests(f"too many {what} ({item}); retry in {wait} s",
                                       retry_after=wait)
        return None

    async def failed_authentication(self, req: LimitedRequest) -> None:
        if self.budgets.auth_failures is not None:
            await self.counters.hit(self.budgets.auth_failures, "authfail", req.client)

    async def _retry_after(self, item: RateLimitItem, key: tuple[str, ...]) -> int:
        return retry_after(item, *await self.counters.window(item, *key))

    def storage_failed(self, exc: BaseException) -> None:
        """Log a failing storage now and then, not on every request."""
        now = time.monotonic()
        if now - self._storage_warned_at >= _STORAGE_WARNING_EVERY:
            self._storage_warned_at = now
            log.warning("rate-limit storage failed, requests are let through: %s: %s",
                        type(exc).__name__, exc)

    async def close(self) -> None:
        await self.counters.close()


class RateLimitMiddleware:
    """Counts before the handler runs, and counts 401/403 answers after."""

    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        req = read_request(scope)
        if req is None:
            await self.app(scope, receive, send)
            return
        try:
            refusal = await self.limits.admit(req)
        except Exception as exc:  # noqa: BLE001 - any storage failure: let it through
            self.limits.storage_failed(exc)
            refusal = None
        if refusal is not None:
            log.info("%s %s from %s -> %s %s", req.method, scope["path"], req.client,
                     refusal.status, refusal.detail)
            await error_response(refusal)(scope, receive, send)
            return
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if status in (401, 403):
                try:
                    await self.limits.failed_authentication(req)
                except Exception as exc:  # noqa: BLE001
                    self.limits.storage_failed(exc)
