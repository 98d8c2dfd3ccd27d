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

Budgets are sliding-window counters (the rule of the ``limits`` library,
whose rate syntax the settings use): two counters per key, O(1) per request
in memory (``MemoryWindows``), where a moving window would keep one entry
per request (1000s for a webinar).  With ``rate_limit_storage =
"redis://..."`` every replica counts in the same Redis (``RedisWindows``), so
the budgets hold for the deployment: one script call per request for all
its budgets, since a call per budget through ``limits``' Redis storage cost
the gateway about 0.15 ms of CPU each (bench/limiter_cost.py).  When
that storage fails, requests are let through (logged): the limits protect
the service and must not become the outage.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal
from urllib.parse import parse_qs

from limits import RateLimitItem, parse
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
REDIS_OPTIONS = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}


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
Mode = Literal["test", "hit"]  # test: refuse when spent; hit: that, else count this request


@dataclass(frozen=True)
class Check:
    item: RateLimitItem
    key: str
    mode: Mode


@dataclass(frozen=True)
class Refused:
    """The first check that refused, and its window (for Retry-After)."""

    index: int
    window: Window


def _admits(item: RateLimitItem, previous: int, left: float, current: int) -> bool:
    """The sliding-window counter's rule (as in ``limits``): the previous window's count
    weighs by how much of it still overlaps the last ``expiry`` seconds."""
    expiry = item.get_expiry()
    return math.floor(previous * left / expiry + current) + 1 <= item.amount


class MemoryWindows:
    """Sliding-window counters in this process, O(1) per request.

    The ``limits`` library's in-memory storage sweeps every key on every hit
    (a cost that grows with the audience: thousands of per-session keys in a
    webinar); here a sweep runs at most every ``SWEEP_EVERY`` seconds.  No
    awaits inside: each call is atomic on the event loop.
    """

    SWEEP_EVERY = 10.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # key -> [window index, previous count, current count, window seconds]
        self._windows: dict[str, list[int]] = {}
        self._clock = clock
        self._next_sweep = clock() + self.SWEEP_EVERY

    def __len__(self) -> int:
        return len(self._windows)

    def _state(self, item: RateLimitItem, key: str, now: float) -> list[int]:
        expiry = item.get_expiry()
        index = int(now // expiry)
        name = f"{key}/{item.amount}/{expiry}"
        state = self._windows.get(name)
        if state is None:
            state = self._windows[name] = [index, 0, 0, expiry]
        elif state[0] != index:
            state[1] = state[2] if state[0] == index - 1 else 0
            state[2], state[0] = 0, index
        return state

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self.SWEEP_EVERY
        stale = [k for k, (index, _, _, expiry) in self._windows.items() if index < now // expiry - 1]
        for k in stale:
            del self._windows[k]

    async def apply(self, checks: list[Check]) -> Refused | None:
        """All or nothing: a refused request is counted by none of its budgets."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        states = []
        for i, check in enumerate(checks):
            state = self._state(check.item, check.key, now)
            left = (state[0] + 1) * state[3] - now
            if not _admits(check.item, state[1], left, state[2]):
                return Refused(i, (state[1], left if state[1] else 0.0, state[2], left + state[3]))
            states.append(state)
        for check, state in zip(checks, states):
            if check.mode == "hit":
                state[2] += 1
        return None

    async def count(self, check: Check) -> None:
        self._state(check.item, check.key, self._clock())[2] += 1

    async def close(self) -> None:
        self._windows.clear()


# The same counters in Redis, all of one request's budgets in one round trip
# (one script: atomic, and all or nothing like MemoryWindows).  The clock is
# Redis's, so replicas agree on the windows whatever their own clocks say.
# Keys: "<prefix>:<budget key>/<amount>/<expiry>:<window index>", expiring
# after two windows.  ARGV: mode ("apply"|"count"), then per key: amount,
# expiry, "test"|"hit".  Returns {0} or {i, previous, left, current}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local current_keys = {}
for i = 1, #KEYS do
  local amount = tonumber(ARGV[3 * i - 1])
  local expiry = tonumber(ARGV[3 * i])
  local index = math.floor(now / expiry)
  local current_key = KEYS[i] .. ':' .. index
  current_keys[i] = current_key
  if ARGV[1] == 'apply' then
    local previous = tonumber(redis.call('GET', KEYS[i] .. ':' .. (index - 1)) or '0')
    local current = tonumber(redis.call('GET', current_key) or '0')
    local left = (index + 1) * expiry - now
    if math.floor(previous * left / expiry + current) + 1 > amount then
      return {i, previous, tostring(left), current}
    end
  end
end
for i = 1, #KEYS do
  if ARGV[1] == 'count' or ARGV[3 * i + 1] == 'hit' then
    redis.call('INCR', current_keys[i])
    redis.call('EXPIRE', current_keys[i], 2 * tonumber(ARGV[3 * i]))
  end
end
return {0}
"""


class RedisWindows:
    """Counters every replica shares: one Redis (not a cluster), redis-py's asyncio client."""

    def __init__(self, url: str, prefix: str = "whip-gateway:rl") -> None:
        import redis.asyncio

        self.client = redis.asyncio.Redis.from_url(url, **REDIS_OPTIONS)
        self.script = self.client.register_script(_SCRIPT)
        self.prefix = prefix

    async def _run(self, mode: str, checks: list[Check]) -> list[Any]:
        keys = [f"{self.prefix}:{c.key}/{c.item.amount}/{c.item.get_expiry()}" for c in checks]
        args: list[Any] = [mode]
        for c in checks:
            args += [c.item.amount, c.item.get_expiry(), c.mode]
        return list(await self.script(keys=keys, args=args))

    async def apply(self, checks: list[Check]) -> Refused | None:
        reply = await self._run("apply", checks)
        if not reply[0]:
            return None
        i, previous, left, current = int(reply[0]) - 1, int(reply[1]), float(reply[2]), int(reply[3])
        expiry = checks[i].item.get_expiry()
        return Refused(i, (previous, left if previous else 0.0, current, left + expiry))

    async def count(self, check: Check) -> None:
        await self._run("count", [check])

    async def close(self) -> None:
        await self.client.aclose()


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
    # Latin-1 maps every byte: a query string that is not ASCII (a fuzzer's,
    # or a client's raw UTF-8) must not turn into a 500 here.
    has_token = any(k == b"authorization" for k, _ in headers) or (
        bool(query) and "token" in parse_qs(query.decode("latin-1")))
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
        self.counters: MemoryWindows | RedisWindows = (
            MemoryWindows() if storage_url.startswith("memory://") else RedisWindows(storage_url))
        self._storage_warned_at = -math.inf

    @classmethod
    def from_settings(cls, settings: Settings) -> "RateLimits":
        return cls(Budgets.from_settings(settings), settings.rate_limit_storage)

    def _checks(self, req: LimitedRequest) -> list[tuple[Check, str]]:
        """(check, what it counts) for one request: the failure budget first, if it applies."""
        b = self.budgets
        wanted: list[tuple[RateLimitItem | None, str, Mode, str]] = []
        if req.has_token:
            wanted.append((b.auth_failures, f"authfail/{req.client}", "test",
                           f"failed authentications from {req.client}"))
        if req.counted:
            wanted.append((b.per_client, f"client/{req.client}", "hit", f"requests from {req.client}"))
            if req.creates_session and req.kind == "whip":
                wanted.append((b.publish_per_client, f"publish/{req.client}", "hit",
                               f"WHIP sessions (publishers) from {req.client}"))
            elif req.creates_session:
                wanted.append((b.view_per_client, f"view/{req.client}", "hit",
                               f"WHEP sessions (viewers) from {req.client}"))
            if req.creates_session:
                wanted.append((b.per_stream, f"stream/{req.stream}", "hit",
                               f"new sessions on stream {req.stream}"))
            else:
                wanted.append((b.per_session, f"session/{req.kind}/{req.stream}/{req.session}",
                               "hit", "requests on this session"))
        return [(Check(item, key, mode), what) for item, key, mode, what in wanted if item is not None]

    async def admit(self, req: LimitedRequest) -> GatewayError | None:
        """None to let the request in (and count it); else the 429 to answer with."""
        checks = self._checks(req)
        if not checks:
            return None
        refused = await self.counters.apply([check for check, _ in checks])
        if refused is None:
            return None
        check, what = checks[refused.index]
        wait = retry_after(check.item, *refused.window)
        error = AuthenticationFailuresExceeded if check.key.startswith("authfail/") else TooManyRequests
        return error(f"too many {what} ({check.item}); retry in {wait} s", retry_after=wait)

    async def failed_authentication(self, req: LimitedRequest) -> None:
        if self.budgets.auth_failures is not None:
            await self.counters.count(Check(self.budgets.auth_failures, f"authfail/{req.client}", "hit"))

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
