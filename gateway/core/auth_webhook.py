"""The auth webhook: before each publish and each view the gateway asks a
receiver, caches the answer for a few seconds and refuses (503 +
Retry-After) when the receiver cannot answer."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass

import httpx

from gateway.core.webhook_signing import USER_AGENT, secret_key, signed_headers
from gateway.errors import AuthHookForbidden, AuthHookRefused, AuthHookUnavailable

log = logging.getLogger(__name__)


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
