"""Named timing hooks: where the benches (and any other observer) listen in.

Why: the benches used to time the gateway by replacing its private
functions at start-up (``Egress._variant``, ``JanusSession._dispatch``…).
Every move of a module silently emptied a column.  The gateway now says,
under stable names, when something it does starts and ends; a listener
registered with ``listen`` hears it, and a move breaks nothing.

Two kinds of hook:

- a *span*: ``@timed(name)`` on a function (sync or async).  When it
  returns or raises, each listener gets one ``Span`` (start and end on
  ``now()``, the call's arguments, its result or error);
- a *point*: ``emit(name, *args)`` at a line of code; the listener gets the
  args and reads the clock itself.

With no listener for its name, a hook only looks the name up in a dict and
returns: measured here, tens of nanoseconds more than an empty call for a
point, one to four hundred for a span (``pytest -s tests/unit/test_probes.py``
prints it), against milliseconds of CPU per WHIP or WHEP POST.
The gateway never depends on a listener; a listener that raises is the
listener's bug and is not caught (probes run in benches, not production).

The names are the contract.  Add a name here when adding a hook; do not
rename one without changing bench/probes.py in the same commit.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any, Callable, NamedTuple, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# name -> what the listener gets.  Spans get a ``Span``; points the args listed.
HOOKS: dict[str, str] = {
    "http.request": "point (scope): an HTTP request reached the app (ASGI call)",
    "http.response": "point (scope, message): its response head is being sent",
    "http.done": "point (scope): the app has finished with it (also on error)",
    "http.read_body": "span: reading a request body (gateway.http.exchange.read_text)",
    "sdp.parse": "span: parsing one SDP (gateway.sdp.model.parse)",
    "sdp.choose_codecs": "span: picking a viewer's codecs (gateway.sdp.bridge.choose_codecs)",
    "sdp.bridge": "span: writing both answers on the 1.1.2 path (gateway.sdp.bridge.bridge)",
    "ingest.check_offer": "span: a publisher offer's checks (Ingest._check_offer)",
    "egress.view": "span: a WHEP POST in the egress (Egress.view)",
    "egress.variant": "span: getting a viewer's mountpoint variant, lock wait included",
    "janus.request": "span: one Janus API POST until its reply (JanusClient.post): (client, path, body)",
    "janus.message": "span: an asynchronous plugin request until its event (JanusHandle.message)",
    "janus.event": "point (event): the transport hands an event on (JanusSession.deliver)",
    "janus.session_lost": "point (session_id): a Janus session was given up",
}


class Span(NamedTuple):
    """One timed call: what a ``@timed`` hook hands its listeners."""

    name: str
    start: float
    end: float
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    result: Any
    error: BaseException | None


Listener = Callable[..., None]
_listeners: dict[str, tuple[Listener, ...]] = {}

now = time.monotonic  # CLOCK_MONOTONIC: one clock for the gateway and a bench's other processes


def listen(name: str, listener: Listener) -> Callable[[], None]:
    """Call ``listener`` on every ``name`` hook from now on; returns the undo."""
    if name not in HOOKS:
        raise KeyError(f"no hook {name!r}; known: {', '.join(sorted(HOOKS))}")
    _listeners[name] = (*_listeners.get(name, ()), listener)

    def remove() -> None:
        left = tuple(fn for fn in _listeners.get(name, ()) if fn is not listener)
        if left:
            _listeners[name] = left
        else:
            _listeners.pop(name, None)

    return remove


def listening(name: str) -> bool:
    """Whether anyone listens to ``name`` (to skip building costly hook args)."""
    return name in _listeners


def emit(name: str, *args: Any) -> None:
    """A point hook: each listener of ``name`` gets ``args``."""
    listeners = _listeners.get(name)
    if listeners is not None:
        for listener in listeners:
            listener(*args)


def timed(name: str) -> Callable[[F], F]:
    """A span hook around a function or coroutine function."""
    if name not in HOOKS:
        raise KeyError(f"no hook {name!r}")

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_span(*args: Any, **kwargs: Any) -> Any:
                if name not in _listeners:
                    return await func(*args, **kwargs)
                start = now()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    _tell(Span(name, start, now(), args, kwargs, None, exc))
                    raise
                _tell(Span(name, start, now(), args, kwargs, result, None))
                return result

            return async_span  # type: ignore[return-value]

        @functools.wraps(func)
        def span(*args: Any, **kwargs: Any) -> Any:
            if name not in _listeners:
                return func(*args, **kwargs)
            start = now()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _tell(Span(name, start, now(), args, kwargs, None, exc))
                raise
            _tell(Span(name, start, now(), args, kwargs, result, None))
            return result

        return span  # type: ignore[return-value]

    return decorate


def _tell(span: Span) -> None:
    for listener in _listeners.get(span.name, ()):
        listener(span)


class AsgiHooks:
    """ASGI middleware for the ``http.*`` hooks; passes straight through when unheard.

    It sits in the app's middleware list, so it sees each request as the
    app does, and a listener's context variables hold for the whole request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or "http.request" not in _listeners:
            await self.app(scope, receive, send)
            return

        async def send_hooked(message: Any) -> None:
            if message["type"] == "http.response.start":
                emit("http.response", scope, message)
            await send(message)

        emit("http.request", scope)
        try:
            await self.app(scope, receive, send_hooked)
        finally:
            emit("http.done", scope)
