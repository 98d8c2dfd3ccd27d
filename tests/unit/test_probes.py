"""gateway.probes: the named hooks the benches listen to.

What matters: a listener hears what it registered for, with the arguments
and times it needs; an unheard hook changes nothing (result, errors) and
costs next to nothing; unknown names fail at once instead of staying silent.
"""

from __future__ import annotations

import asyncio
import timeit
from typing import Any

import pytest

from gateway import probes


@pytest.fixture(autouse=True)
def no_listeners() -> Any:
    saved = dict(probes._listeners)
    probes._listeners.clear()
    yield
    probes._listeners.clear()
    probes._listeners.update(saved)


def test_emit_reaches_listeners_until_removed() -> None:
    heard: list[tuple[Any, ...]] = []
    remove = probes.listen("janus.event", lambda *args: heard.append(args))
    assert probes.listening("janus.event")
    probes.emit("janus.event", {"janus": "event"})
    remove()
    probes.emit("janus.event", {"janus": "late"})
    assert heard == [({"janus": "event"},)]
    assert not probes.listening("janus.event")


def test_unknown_names_fail_loudly() -> None:
    with pytest.raises(KeyError):
        probes.listen("janus.no_such_hook", print)
    with pytest.raises(KeyError):
        probes.timed("no.such.span")


def test_sync_span_carries_arguments_result_and_times() -> None:
    spans: list[probes.Span] = []

    @probes.timed("sdp.parse")
    def double(x: int, *, extra: int = 0) -> int:
        return 2 * x + extra

    assert double(2) == 4  # unheard: plain call
    probes.listen("sdp.parse", spans.append)
    assert double(3, extra=1) == 7
    (span,) = spans
    assert span.name == "sdp.parse" and span.args == (3,) and span.kwargs == {"extra": 1}
    assert span.result == 7 and span.error is None and span.start <= span.end


def test_async_span_reports_errors_and_reraises() -> None:
    spans: list[probes.Span] = []

    @probes.timed("janus.request")
    async def fail(path: str) -> None:
        await asyncio.sleep(0)
        raise ValueError(path)

    probes.listen("janus.request", spans.append)
    with pytest.raises(ValueError):
        asyncio.run(fail("/1"))
    assert isinstance(spans[0].error, ValueError) and spans[0].args == ("/1",)
    assert fail.__name__ == "fail" and asyncio.iscoroutinefunction(fail)


def test_asgi_hooks_see_request_response_and_end() -> None:
    seen: list[str] = []
    probes.listen("http.request", lambda scope: seen.append(f"request {scope['path']}"))
    probes.listen("http.response", lambda scope, m: seen.append(f"response {m['status']}"))
    probes.listen("http.done", lambda scope: seen.append("done"))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    hooked = probes.AsgiHooks(app)
    asyncio.run(hooked({"type": "http", "path": "/whip/a"}, None, send))
    assert seen == ["request /whip/a", "response 201", "done"] and len(sent) == 2
    seen.clear()
    asyncio.run(hooked({"type": "lifespan"}, None, send))  # not an HTTP request: no hooks
    assert seen == []


def _best_ns(stmt: str, names: dict[str, Any], number: int = 200_000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5, globals=names)) / number * 1e9


def test_unheard_hooks_cost_next_to_nothing() -> None:
    """An unheard point or span costs well under a microsecond (printed with -s)."""

    def empty(*_args: Any) -> None:
        return None

    async def empty_async(*_args: Any) -> None:
        return None

    names = {"empty": empty, "emit": probes.emit, "event": {"janus": "event"},
             "spanned": probes.timed("sdp.parse")(empty),
             "empty_async": empty_async, "spanned_async": probes.timed("janus.request")(empty_async)}
    base = _best_ns("empty('janus.event', event)", names)
    point = _best_ns("emit('janus.event', event)", names)
    span = _best_ns("spanned('sdp.parse', event)", names)
    # A coroutine run to its end without a loop, as an await would.
    drive = "c = {}('/1', event)\ntry:\n    c.send(None)\nexcept StopIteration:\n    pass"
    base_async = _best_ns(drive.format("empty_async"), names, 100_000)
    span_async = _best_ns(drive.format("spanned_async"), names, 100_000)
    print(f"\nper call: empty function {base:.0f} ns; unheard emit {point:.0f} ns "
          f"(+{point - base:.0f}, {point / base:.2f}x); unheard sync span {span:.0f} ns "
          f"(+{span - base:.0f}, {span / base:.2f}x); empty coroutine {base_async:.0f} ns, "
          f"unheard async span {span_async:.0f} ns (+{span_async - base_async:.0f}, "
          f"{span_async / base_async:.2f}x)")
    # No timing asserts (the machine is shared): what makes an unheard hook
    # cheap is that it reads no clock and calls nothing, and that is checked.
    reads: list[float] = []
    real_now = probes.now
    probes.now = lambda: reads.append(0.0) or real_now()  # type: ignore[assignment]
    try:
        exec(drive.format("spanned_async"), names)
        names["spanned"]("sdp.parse", {})
        names["emit"]("janus.event", {})
    finally:
        probes.now = real_now  # type: ignore[assignment]
    assert reads == [], "an unheard hook read the clock"
