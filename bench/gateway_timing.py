#!/usr/bin/env python3
"""Run ``whip-gateway`` with timing probes, to see where a WHIP POST spends its time.

``whip_setup.py --gateway-timing FILE`` starts the gateway through this file
instead of the ``whip-gateway`` script.  It wraps, without changing any file
under gateway/, the few functions a POST goes through and writes one JSON
line per WHIP POST to FILE when the gateway stops:

- ``asgi``: from the ASGI call (uvicorn has parsed the request head) to the
  last body byte sent; ``asgi_to_headers``: to the response start;
- ``read_body``, ``sdp_parse``, ``check_offer``;
- each Janus request of the POST (``create``, ``attach``,
  ``joinandconfigure``: POST until its reply, ``ack`` for the last one);
- ``ack_to_event``: from the ack to the moment the long-poll pump hands over
  the event with the answer; ``event_to_resume``: from there until
  ``JanusHandle.message`` returns;
- ``cpu``: the process's CPU time during the POST (meaningful when POSTs do
  not overlap, i.e. in the sequential part).

``python bench/gateway_timing.py --summarize FILE`` prints medians.

Experiments (to size a proposed change before anyone makes it in gateway/;
off unless asked for, through the gateway's environment, e.g.
``whip_setup.py --gateway-env WHIP_BENCH_JANUS_HTTP=aiohttp``):

- ``WHIP_BENCH_JANUS_HTTP=aiohttp``: the gateway's Janus client sends its
  requests and long polls with aiohttp instead of httpx;
- ``WHIP_BENCH_POLL_YIELD=1``: the event pump lets the coroutine it just
  woke run before it sends its next long poll.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

Record = dict[str, Any]
_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar("bench_request", default=None)
_records: list[Record] = []
_event_arrival: dict[str, float] = {}  # transaction -> when the pump had its event


def _add(name: str, seconds: float) -> None:
    record = _current.get()
    if record is not None:
        record[name] = record.get(name, 0.0) + seconds * 1000


def _patch(owner: Any, name: str, factory: Any) -> None:
    """Replace ``owner.name`` with ``factory(original)``; skip (and say so) if gone.

    The gateway changes under this file; a probe whose target moved must not
    stop the benchmark, only leave its column empty.
    """
    original = getattr(owner, name, None)
    if original is None:
        print(f"gateway_timing: no {getattr(owner, '__name__', owner)}.{name}; probe skipped",
              file=sys.stderr, flush=True)
        return
    setattr(owner, name, factory(original))


def _timed_sync(stage: str) -> Any:
    def factory(original: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                _add(stage, time.perf_counter() - start)
        return wrapper
    return factory


def _timed_async(stage: str) -> Any:
    def factory(original: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                _add(stage, time.perf_counter() - start)
        return wrapper
    return factory


def _timed_app(original_create_app: Any) -> Any:
    def create_app(*args: Any, **kwargs: Any) -> Any:
        inner = original_create_app(*args, **kwargs)

        async def timed(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["method"] != "POST" \
                    or not scope["path"].startswith("/whip/"):
                await inner(scope, receive, send)
                return
            record: Record = {"stream": scope["path"].rsplit("/", 1)[-1]}
            token = _current.set(record)
            start, cpu = time.perf_counter(), time.process_time()

            async def timed_send(message: Any) -> None:
                if message["type"] == "http.response.start":
                    record["status"] = message["status"]
                    record["asgi_to_headers"] = (time.perf_counter() - start) * 1000
                await send(message)

            try:
                await inner(scope, receive, timed_send)
            finally:
                record["asgi"] = (time.perf_counter() - start) * 1000
                record["cpu"] = (time.process_time() - cpu) * 1000
                _current.reset(token)
                _records.append(record)

        timed.state = getattr(inner, "state", None)  # type: ignore[attr-defined]
        return timed
    return create_app


def _janus_post(original: Any) -> Any:
    async def post(self: Any, path: str, body: dict[str, Any]) -> Any:
        name = body.get("janus", "?")
        if name == "message":
            name = str((body.get("body") or {}).get("request", "message"))
        start = time.perf_counter()
        try:
            return await original(self, path, body)
        finally:
            end = time.perf_counter()
            _add(f"janus_{name}", end - start)
            record = _current.get()
            if record is not None and name == "joinandconfigure":
                record["_acked_at"] = end
    return post


def _dispatch(original: Any) -> Any:
    def dispatch(self: Any, event: dict[str, Any]) -> None:
        transaction = event.get("transaction")
        if transaction and transaction in getattr(self, "_waiters", {}):
            _event_arrival[transaction] = time.perf_counter()
        original(self, event)
    return dispatch


def _wait_for(original: Any) -> Any:
    def wait_for(self: Any, transaction: str) -> Any:
        record = _current.get()
        if record is not None:
            record["_transaction"] = transaction
        return original(self, transaction)
    return wait_for


def _message(original: Any) -> Any:
    async def message(self: Any, body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(self, body, *args, **kwargs)
        finally:
            end = time.perf_counter()
            record = _current.get()
            if record is not None:
                arrived = _event_arrival.pop(record.pop("_transaction", ""), None)
                acked = record.pop("_acked_at", None)
                if arrived is not None and acked is not None:
                    # Negative when the event came in before the ack's reply was read.
                    record["ack_to_event"] = (arrived - acked) * 1000
                    record["event_to_resume"] = (end - max(arrived, acked)) * 1000
    return message


def install() -> None:
    from gateway import app as app_module
    from gateway import ingest as ingest_module
    from gateway import whip as whip_module
    from gateway.janus import client as client_module

    _patch(app_module, "create_app", _timed_app)
    _patch(whip_module, "read_text", _timed_async("read_body"))
    _patch(ingest_module, "_parse", _timed_sync("sdp_parse"))
    _patch(ingest_module.Ingest, "_check_offer", _timed_sync("check_offer"))
    _patch(client_module.JanusClient, "post", _janus_post)
    _patch(client_module.JanusSession, "_dispatch", _dispatch)
    _patch(client_module.JanusSession, "wait_for", _wait_for)
    _patch(client_module.JanusHandle, "message", _message)


class _Reply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)

    def raise_for_status(self) -> None:
        import httpx

        if self.status_code >= 400:
            raise httpx.HTTPStatusError(f"status {self.status_code}", request=None,  # type: ignore[arg-type]
                                        response=None)  # type: ignore[arg-type]


class _AiohttpAdapter:
    """The slice of httpx.AsyncClient that gateway.janus.client uses, on aiohttp."""

    def __init__(self, timeout: float, poll_yield: bool) -> None:
        self.timeout = timeout
        self.poll_yield = poll_yield
        self._session: Any = None

    def _client(self) -> Any:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
        return self._session

    async def _call(self, method: str, url: str, timeout: float | None, **kwargs: Any) -> _Reply:
        import aiohttp
        import httpx

        try:
            async with self._client().request(
                method, url, timeout=aiohttp.ClientTimeout(total=timeout or self.timeout), **kwargs
            ) as response:
                return _Reply(response.status, await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise httpx.TransportError(repr(exc)) from exc

    async def post(self, url: str, json: Any = None, timeout: float | None = None) -> _Reply:
        return await self._call("POST", url, timeout, json=json)

    async def get(self, url: str, params: Any = None, timeout: float | None = None) -> _Reply:
        if self.poll_yield:
            import asyncio

            await asyncio.sleep(0)  # let the request the last poll answered go on first
        return await self._call("GET", url, timeout, params=params)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def install_experiments() -> list[str]:
    from gateway.janus import client as client_module

    transport = os.environ.get("WHIP_BENCH_JANUS_HTTP", "httpx")
    poll_yield = os.environ.get("WHIP_BENCH_POLL_YIELD") == "1"
    if transport == "httpx" and not poll_yield:
        return []
    if transport not in ("httpx", "aiohttp"):
        raise SystemExit(f"WHIP_BENCH_JANUS_HTTP={transport!r}: httpx or aiohttp")
    original_init = client_module.JanusClient.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if transport == "aiohttp":
            self.http = _AiohttpAdapter(self.request_timeout, poll_yield)
        elif poll_yield:
            original_get = self.http.get

            async def get(*a: Any, **k: Any) -> Any:
                import asyncio

                await asyncio.sleep(0)
                return await original_get(*a, **k)

            self.http.get = get

    client_module.JanusClient.__init__ = init  # type: ignore[method-assign]
    return [f"janus_http={transport}"] + (["poll_yield"] if poll_yield else [])


def _write(path: str) -> None:
    with open(path, "w") as out:
        for record in _records:
            out.write(json.dumps({k: v for k, v in record.items() if not k.startswith("_")}) + "\n")


STAGES = ("asgi", "asgi_to_headers", "read_body", "sdp_parse", "check_offer", "janus_create",
          "janus_attach", "janus_joinandconfigure", "ack_to_event", "event_to_resume", "cpu")


def summarize(path: Path, client_p50_ms: float | None = None) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    sequential = [r for r in records if r.get("status") == 201
                  and r["stream"].split("-", 1)[-1].isdigit()
                  and int(r["stream"].split("-", 1)[-1]) < 10_000]  # not the warm-up
    if not sequential:
        return "no sequential WHIP POST recorded"
    lines = [f"gateway-side timing, {len(sequential)} sequential POSTs, median ms:"]
    medians = {}
    for stage in STAGES:
        values = [r[stage] for r in sequential if stage in r]
        if values:
            medians[stage] = statistics.median(values)
            lines.append(f"  {stage:<24}{medians[stage]:8.2f}")
    janus = sum(max(medians.get(k, 0.0), 0.0) for k in (
        "janus_create", "janus_attach", "janus_joinandconfigure", "ack_to_event"))
    own = medians.get("asgi", 0.0) - janus - medians.get("event_to_resume", 0.0)
    lines.append(f"  {'(janus requests+event)':<24}{janus:8.2f}")
    lines.append(f"  {'(rest inside the app)':<24}{own:8.2f}")
    if client_p50_ms is not None:
        lines.append(f"  {'(outside the app: HTTP)':<24}{client_p50_ms - medians.get('asgi', 0):8.2f}"
                     "   client p50 minus asgi p50")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "--summarize":
        print(summarize(Path(sys.argv[2])))
        return 0
    experiments = install_experiments()
    if experiments:
        print(f"gateway_timing: experiments {experiments}", file=sys.stderr, flush=True)
    out = os.environ.get("WHIP_BENCH_TIMING")
    if out:
        install()
        atexit.register(_write, out)

        # uvicorn re-raises the SIGTERM it caught once it has shut down, and
        # that kills the process before atexit: write first, then die of it.
        def on_term(signum: int, _frame: Any) -> None:
            _write(out)
            _records.clear()
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, on_term)
    from gateway.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
