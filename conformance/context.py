"""What every check shares: the target, one HTTP client, and cleanup.

``Context`` knows how to reach the server (URL templates, tokens), makes
every request through one ``httpx.AsyncClient`` so that each check's HTTP
exchanges and every redirect are recorded, and owns everything the suite
creates.  Each check runs in its own ``Scope``: the sessions it POSTs, the
peer connections and frame counters it starts, the event streams it opens
are all registered there, and closed/DELETEd when the check ends, whether
it passed, failed, crashed or timed out.

Expensive things several checks share (a publisher with live media, the
PATCH probe) are built once through ``memo()``, each in a scope of its own
that lives until the suite ends.

Stream names: with a ``{stream}`` placeholder the suite makes up a fresh
name for every publish, so checks never collide with each other or with
real streams.  Without one, every request goes to the URL as given; then
only one publisher can exist at a time, and ``post_whip()`` ends every other
WHIP session before it publishes (see ``_free_fixed_whip``).
"""

from __future__ import annotations

import asyncio
import contextvars
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin

import httpx
from aiortc import RTCPeerConnection

from gateway.clients.whep import FrameCounter, links_by_rel, parse_links
from gateway.protocol import SDP, SDPFRAG

from .offers import Offers
from .runner import Fail, RateLimited, Skip

PLACEHOLDER = "{stream}"
USER_AGENT = "whip-whep-conformance/0.1"
Kind = Literal["whip", "whep"]
T = TypeVar("T")

# How long a few things may take before the suite calls it a failure.
MEDIA_TIMEOUT = 10.0  # ICE connected, or the first decoded frame
LIVE_TIMEOUT = 10.0  # a viewer POST answered 409 while our publisher is connected
REQUEST_TIMEOUT = 10.0
CLEANUP_PATIENCE = 12.0  # a DELETE that frees server resources is worth waiting for


@dataclass
class Config:
    """What the suite is pointed at.

    ``whip``/``whep`` are endpoint URLs, optionally holding ``{stream}``;
    ``stream`` names an existing stream to use instead of a made-up one
    (needed when only one of the two URLs has the placeholder, or when
    there is no WHIP URL and the suite must watch a stream someone else
    publishes).
    """

    whip: str | None = None
    whep: str | None = None
    token: str | None = None
    viewer_token: str | None = None
    stream: str | None = None
    check_timeout: float = 30.0
    verify_tls: bool = True

    def endpoint(self, kind: Kind) -> str | None:
        """The WHIP or WHEP URL as given (``{stream}`` still in it)."""
        return self.whip if kind == "whip" else self.whep

    def describe(self) -> dict[str, object]:
        """The target, for reports: never the tokens themselves."""
        return {"whip": self.whip, "whep": self.whep, "token": bool(self.token),
                "viewer_token": bool(self.viewer_token), "stream": self.stream}


@dataclass
class Session:
    """A WHIP or WHEP session the suite created (a 201, or a WHEP 406)."""

    kind: Kind
    stream: str
    endpoint: str
    response: httpx.Response
    location: str
    local_sdp: str | None = None  # our offer (or our answer to a counter-offer)
    pc: RTCPeerConnection | None = None
    counter: FrameCounter | None = None
    deleted: bool = False

    @property
    def status(self) -> int:
        return self.response.status_code

    @property
    def etag(self) -> str | None:
        return self.response.headers.get("etag")

    @property
    def remote_sdp(self) -> str:
        """The server's answer (201) or counter-offer (406)."""
        return self.response.text

    @property
    def links(self) -> list[dict[str, str]]:
        """Link headers, relative targets resolved against the request URL (RFC 8288)."""
        return parse_links(self.response.headers.get_list("link"), str(self.response.url))

    @property
    def links_by_rel(self) -> dict[str, dict[str, str]]:
        return links_by_rel(self.links)


@dataclass
class Scope:
    """Everything one check (or one memo) created, to be closed at its end."""

    name: str
    sessions: list[Session] = field(default_factory=list)
    pcs: list[RTCPeerConnection] = field(default_factory=list)
    counters: list[FrameCounter] = field(default_factory=list)
    urls: list[tuple[Kind, str]] = field(default_factory=list)  # other resources to DELETE
    exchanges: list[str] = field(default_factory=list)


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("conformance_scope", default=None)


class Context:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.run_id = secrets.token_hex(3)
        self._counter = 0
        self.redirects: list[tuple[str, str, int]] = []  # (method, url, status) of every 3xx
        self.posts: dict[Kind, int] = {"whip": 0, "whep": 0}
        self.http = httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT, follow_redirects=True, verify=config.verify_tls,
            headers={"User-Agent": USER_AGENT},
            event_hooks={"response": [self._record]},
        )
        self._scopes: list[Scope] = []
        self._memos: dict[str, tuple[Scope, asyncio.Task[Any]]] = {}
        self._suite = Scope("suite")
        self.offers = Offers()

    # -- configuration ---------------------------------------------------------

    def missing(self, needs: tuple[str, ...]) -> str | None:
        """Why a check with these needs cannot run, or None."""
        reasons = {
            "whip": (self.config.whip, "no --whip URL given"),
            "whep": (self.config.whep, "no --whep URL given"),
            "token": (self.config.token, "no --token given (the server's publish key)"),
            "viewer_token": (self.config.viewer_token, "no --viewer-token given"),
        }
        for need in needs:
            value, reason = reasons[need]
            if not value:
                return reason
        return None

    @property
    def whip_templated(self) -> bool:
        return bool(self.config.whip and PLACEHOLDER in self.config.whip)

    @property
    def whep_templated(self) -> bool:
        return bool(self.config.whep and PLACEHOLDER in self.config.whep)

    def new_stream(self, tag: str) -> str:
        """A stream name no one else uses: ``conf-<run>-<n>-<tag>``."""
        self._counter += 1
        return f"conf-{self.run_id}-{self._counter}-{tag}"

    def whip_url(self, stream: str) -> str:
        assert self.config.whip, "no WHIP URL"
        return self.config.whip.replace(PLACEHOLDER, stream)

    def whep_url(self, stream: str) -> str:
        assert self.config.whep, "no WHEP URL"
        return self.config.whep.replace(PLACEHOLDER, stream)

    def endpoint_url(self, kind: Kind, stream: str) -> str:
        """The endpoint a ``kind`` POST for ``stream`` goes to."""
        return self.whip_url(stream) if kind == "whip" else self.whep_url(stream)

    def token_for(self, kind: Kind) -> str | None:
        return self.config.token if kind == "whip" else self.config.viewer_token

    def headers(self, kind: Kind, content_type: str | None = None, *,
                auth: str | None | Literal["default"] = "default",
                extra: dict[str, str] | None = None) -> dict[str, str]:
        """Request headers: ``auth="default"`` sends ``Bearer <the configured
        token>`` (none if none is configured, as RFC 9725 section 4.7.1 asks),
        ``auth=None`` sends no Authorization, any other string is sent as is."""
        headers: dict[str, str] = {}
        if auth == "default":
            token = self.token_for(kind)
            if token:
                headers["Authorization"] = f"Bearer {token}"
        elif auth is not None:
            headers["Authorization"] = auth
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers.update(extra or {})
        return headers

    # -- HTTP ------------------------------------------------------------------

    async def _record(self, response: httpx.Response) -> None:
        request = response.request
        if 300 <= response.status_code < 400:
            self.redirects.append((request.method, str(request.url), response.status_code))
        scope = _current.get()
        if scope is not None:
            scope.exchanges.append(f"{request.method} {request.url} -> {response.status_code}")

    async def request(self, method: str, url: str, *, kind: Kind,
                      content: str | bytes | None = None, content_type: str | None = None,
                      auth: str | None | Literal["default"] = "default",
                      headers: dict[str, str] | None = None, patience: float = 5.0) -> httpx.Response:
        """One request, with the suite's auth rules.

        Rate limits are a server's right: a 429 whose Retry-After is at most
        ``patience`` seconds is waited out (twice at most); a 429 that stays
        raises RateLimited, so the check reports that it could not conclude
        instead of blaming the server for the status."""
        all_headers = self.headers(kind, content_type, auth=auth, extra=headers)
        for attempt in range(3):
            response = await self.http.request(method, url, content=content, headers=all_headers)
            if response.status_code != 429:
                return response
            wait = _retry_after(response)
            if attempt == 2 or wait is None or wait > patience:
                break
            await asyncio.sleep(max(wait, 0.5))
        raise RateLimited(f"rate-limited: {method} {url} got 429 (Retry-After "
                          f"{response.headers.get('retry-after', 'none')}); raise the server's limit "
                          "for this client or rerun these checks with --only")

    async def post(self, kind: Kind, stream: str, body: str | bytes, *,
                   content_type: str | None = SDP, auth: str | None | Literal["default"] = "default",
                   headers: dict[str, str] | None = None, local_sdp: str | None = None,
                   pc: RTCPeerConnection | None = None) -> tuple[httpx.Response, Session | None]:
        """POST to the WHIP or WHEP endpoint of ``stream``.  A 201 (or a WHEP
        406 with a Location) is a session: it is registered in the current
        scope and DELETEd when the scope closes unless the check deleted it."""
        if kind == "whip" and not self.whip_templated:
            await self._free_fixed_whip()
        url = self.endpoint_url(kind, stream)
        response = await self.request("POST", url, kind=kind, content=body,
                                      content_type=content_type, auth=auth, headers=headers)
        self.posts[kind] += 1
        session = None
        location = response.headers.get("location")
        if location and (response.status_code == 201 or (kind == "whep" and response.status_code == 406)):
            session = Session(kind, stream, url, response, urljoin(str(response.url), location),
                              local_sdp=local_sdp, pc=pc)
            self.scope.sessions.append(session)
        return response, session

    async def delete(self, session: Session, *, headers: dict[str, str] | None = None,
                     auth: str | None | Literal["default"] = "default",
                     patience: float = 5.0) -> httpx.Response:
        response = await self.request("DELETE", session.location, kind=session.kind,
                                      headers=headers, auth=auth, patience=patience)
        if response.is_success:
            session.deleted = True
        return response

    # -- scopes, memos, cleanup --------------------------------------------------

    @property
    def scope(self) -> Scope:
        return _current.get() or self._suite

    def open_scope(self, name: str) -> Scope:
        scope = Scope(name)
        self._scopes.append(scope)
        _current.set(scope)
        return scope

    async def close_scope(self, scope: Scope) -> None:
        """Close and DELETE what the scope holds; never raises, bounded in time."""
        try:
            async with asyncio.timeout(40):
                await self._close(scope)
        except Exception:
            pass
        finally:
            if scope in self._scopes:
                self._scopes.remove(scope)
            if _current.get() is scope:
                _current.set(None)

    async def _close(self, scope: Scope) -> None:
        for counter in scope.counters:
            try:
                await counter.stop()
            except Exception:
                pass
        for pc in scope.pcs:
            try:
                await pc.close()
            except Exception:
                pass
        for kind, url in reversed(scope.urls):
            try:
                await self.request("DELETE", url, kind=kind, patience=CLEANUP_PATIENCE)
            except (httpx.HTTPError, RateLimited):
                pass
        for session in reversed(scope.sessions):
            if session.pc is not None:
                try:
                    await session.pc.close()
                except Exception:
                    pass
            if not session.deleted:
                try:
                    await self.delete(session, patience=CLEANUP_PATIENCE)
                except (httpx.HTTPError, RateLimited):
                    pass
                session.deleted = True

    async def memo(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        """Build something once for the whole run (in a scope of its own that
        lives until the suite ends) and hand the same value to every check.

        The build runs as a task of its own, so a check that times out while
        waiting does not cancel it for the next one; a build that failed
        fails the same way for every check that needs it.
        """
        if key not in self._memos:
            scope = Scope(f"memo:{key}")

            async def build() -> T:
                _current.set(scope)
                return await factory()

            self._memos[key] = (scope, asyncio.ensure_future(build()))
        scope, task = self._memos[key]
        value = await asyncio.shield(task)
        # What the memo's requests exchanged belongs to the checks that use it too.
        if scope.exchanges and self.scope is not scope:
            self.scope.exchanges.extend(f"(shared {key}) {e}" for e in scope.exchanges
                                        if f"(shared {key}) {e}" not in self.scope.exchanges)
        return value

    async def forget(self, key: str) -> None:
        """Tear a memo down now (its sessions are DELETEd); the next use rebuilds it."""
        entry = self._memos.pop(key, None)
        if entry is None:
            return
        scope, task = entry
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._close(scope)

    async def _free_fixed_whip(self) -> None:
        """With one fixed WHIP URL only one publisher can exist: end every
        other WHIP session (and the memos holding one) before a new POST."""
        for key, (scope, _task) in list(self._memos.items()):
            if any(s.kind == "whip" and not s.deleted for s in scope.sessions):
                await self.forget(key)
        for scope in [*self._scopes, self._suite]:
            for session in scope.sessions:
                if session.kind == "whip" and not session.deleted:
                    if session.pc is not None:
                        await session.pc.close()
                    try:
                        await self.delete(session, patience=CLEANUP_PATIENCE)
                    except (httpx.HTTPError, RateLimited):
                        pass
                    session.deleted = True

    async def aclose(self) -> None:
        """End of the run: every memo, every scope, then the HTTP client."""
        for key in list(self._memos):
            try:
                async with asyncio.timeout(15):
                    await self.forget(key)
            except Exception:
                pass
        for scope in list(self._scopes):
            await self.close_scope(scope)
        await self.close_scope(self._suite)
        await self.http.aclose()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    return None


def http_date(value: str) -> datetime | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as an aware datetime, or None."""
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else None


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = http_date(value)
    if when is None:
        return None
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def expect(condition: object, reason: str) -> None:
    """Fail the check with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise Fail(reason)


def describe(response: httpx.Response) -> str:
    """``415 Unsupported Media Type: <first words of the body>`` for reasons."""
    text = " ".join(response.text.split())[:160] if response.content else ""
    line = f"{response.status_code} {response.reason_phrase}".strip()
    return f"{line}: {text}" if text else line


__all__ = [
    "SDP",
    "SDPFRAG",
    "Config",
    "Context",
    "Fail",
    "Kind",
    "Scope",
    "Session",
    "Skip",
    "describe",
    "expect",
    "http_date",
    "retry_after_seconds",
]
