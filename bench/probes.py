#!/usr/bin/env python3
"""The benches' one probe kit: the gateway's own named hooks, heard from inside it.

The gateway says when its steps start and end through ``gateway.probes``
(stable names: ``http.request``, ``janus.request``, ``janus.event``,
``sdp.parse``…).  This file runs ``whip-gateway`` with listeners on those
hooks, so that no bench replaces a private function of the gateway: when a
module moves, the hook moves with it; when a hook goes, ``listen`` fails at
start-up instead of a column reading empty.

``python bench/probes.py <whip-gateway arguments>`` is the gateway's CLI with,
as the environment asks:

- ``WHIP_BENCH_PROBES=FILE``: one JSON line per ``POST /whip/<s>`` or
  ``/whep/<s>``: the ASGI call, response head and end on CLOCK_MONOTONIC
  (the benches' clock too), status, session id, the process's CPU time, and
  every hooked step inside it (``{"name", "t0", "t1"}``; Janus requests also
  carry their ``request`` name, their ``transaction`` and ``t_event``, the
  moment the long-poll pump handed their event on).  Event-loop lag samples
  (a 5 ms ticker, late by more than 2 ms) go there too, as ``{"lag": …}``;
- ``WHIP_BENCH_PROFILE=FILE``: the whole run under cProfile (on CPU time with
  ``WHIP_BENCH_PROFILE_CLOCK=cpu``, else wall time);
- ``WHIP_BENCH_HEAP=DIR``: the run under tracemalloc; on SIGUSR2 the gateway
  collects garbage, writes a snapshot, the object counts by type, who holds
  the per-session objects, and ``done-N``.

``python bench/probes.py --summarize FILE`` prints the WHIP stage medians of
a probe file again.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import importlib
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from harness import Json  # (and the repository on sys.path, for gateway)

PROBES_ENV = "WHIP_BENCH_PROBES"
PROFILE_ENV = "WHIP_BENCH_PROFILE"
PROFILE_CLOCK_ENV = "WHIP_BENCH_PROFILE_CLOCK"
HEAP_ENV = "WHIP_BENCH_HEAP"

# The per-session objects that must all be gone once the gateway is empty:
# (module, class).  Resolved by import, so a move fails the run at start-up
# instead of counting 0 of a name that no longer exists.
SESSION_CLASSES = (
    ("gateway.core.streams", "PublisherSession"), ("gateway.janus.videoroom", "RoomPublisher"),
    ("gateway.core.viewers", "ViewerSession"), ("gateway.janus.streaming", "StreamingViewer"),
    ("gateway.core.viewers", "Variant"), ("gateway.core.viewers", "StreamEgress"),
    ("gateway.janus.streaming", "Mountpoint"),
)


def session_types(classes: tuple[tuple[str, str], ...] = SESSION_CLASSES) -> list[str]:
    """``module.Class`` of each class where it is defined now; ImportError/AttributeError if gone."""
    found = []
    for module, name in classes:
        cls = getattr(importlib.import_module(module), name)
        found.append(f"{cls.__module__}.{cls.__qualname__}")
    return found


def gateway_base(env: dict[str, str], *, records: Path | None = None, profile: Path | None = None,
                 heap: Path | None = None) -> list[str]:
    """The gateway's command for a bench: through this kit when a probe is asked for.

    Sets the probes' variables in ``env``; the CLI's arguments follow the command.
    """
    from harness import gateway_command

    for key, value in ((PROBES_ENV, records), (PROFILE_ENV, profile), (HEAP_ENV, heap)):
        if value is not None:
            env[key] = str(value)
    if any(env.get(k) for k in (PROBES_ENV, PROFILE_ENV, HEAP_ENV)):
        return [sys.executable, str(Path(__file__).resolve())]
    return gateway_command()


# --------------------------------------------------------------------------
# in the gateway: per-request records from the hooks


class Recorder:
    """Listens to the gateway's hooks; one record per WHIP/WHEP POST.

    A record lives in a context variable set when the request reaches the
    app, so each step lands in the request it belongs to, however many run
    at once.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.current: contextvars.ContextVar[Json | None] = contextvars.ContextVar(
            "bench_probe", default=None)
        self.arrivals: dict[str, float] = {}  # transaction -> when the pump had its event
        self.lag: list[tuple[float, float]] = []
        self.ticker: asyncio.Task[None] | None = None

    def install(self) -> None:
        from gateway import probes

        probes.listen("http.request", self.on_request)
        probes.listen("http.response", self.on_response)
        probes.listen("http.done", self.on_done)
        probes.listen("janus.event", self.on_event)
        for name in ("http.read_body", "sdp.parse", "sdp.choose_codecs", "sdp.bridge",
                     "ingest.check_offer", "egress.view", "egress.variant", "janus.request",
                     "janus.message"):
            probes.listen(name, self.on_span)

    def on_request(self, scope: Json) -> None:
        if self.ticker is None:
            self.ticker = asyncio.get_running_loop().create_task(self.lag_ticker())
        path = scope.get("path", "")
        if scope.get("method") != "POST" or not path.startswith(("/whip/", "/whep/")) \
                or path.count("/") != 2:
            return
        self.current.set({"path": path, "stream": path.rsplit("/", 1)[-1], "t_asgi": time.monotonic(),
                          "cpu0": time.process_time(), "steps": []})

    def on_response(self, _scope: Json, message: Json) -> None:
        rec = self.current.get()
        if rec is None:
            return
        rec["t_response"] = time.monotonic()
        rec["status"] = message["status"]
        for key, value in message.get("headers", []):
            if key.lower() == b"location":
                rec["session"] = value.decode().rsplit("/", 1)[-1]

    def on_done(self, _scope: Json) -> None:
        rec = self.current.get()
        if rec is None:
            return
        self.current.set(None)
        rec["t_end"] = time.monotonic()
        rec["cpu_ms"] = (time.process_time() - rec.pop("cpu0")) * 1000
        rec["closed"] = True
        for step in rec["steps"]:
            if step.get("transaction") in self.arrivals:
                step["t_event"] = self.arrivals.pop(step["transaction"])
        self.out.write(json.dumps({k: v for k, v in rec.items() if k != "closed"}) + "\n")

    def on_event(self, event: Json) -> None:
        transaction = event.get("transaction")
        if transaction and event.get("janus") in ("event", "success", "error"):
            self.arrivals[transaction] = time.monotonic()
            if len(self.arrivals) > 4096:  # events of requests no record asked for
                del self.arrivals[next(iter(self.arrivals))]

    def on_span(self, span: Any) -> None:
        rec = self.current.get()
        if rec is None or rec.get("closed"):
            return
        step: Json = {"name": span.name, "t0": span.start, "t1": span.end}
        if span.name == "janus.request":
            body = span.args[2] if len(span.args) > 2 else span.kwargs.get("body", {})
            request = body.get("janus", "?")
            if request == "message":
                request = str((body.get("body") or {}).get("request", "message"))
                if body.get("transaction"):
                    step["transaction"] = body["transaction"]
            step["request"] = request
        elif span.name == "janus.message":
            body = span.args[1] if len(span.args) > 1 else span.kwargs.get("body", {})
            step["request"] = str(body.get("request", "?"))
        if span.error is not None:
            step["error"] = type(span.error).__name__
        rec["steps"].append(step)

    async def lag_ticker(self) -> None:
        last_flush = time.monotonic()
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            late = time.monotonic() - t - 0.005
            if late > 0.002:
                self.lag.append((t, late))
            if time.monotonic() - last_flush > 1.0 and self.lag:
                self.flush_lag()
                last_flush = time.monotonic()

    def flush_lag(self) -> None:
        if self.lag:
            self.out.write(json.dumps({"lag": self.lag}) + "\n")
            self.lag = []


# --------------------------------------------------------------------------
# in the gateway: the heap probe


def install_heap_probe(out_dir: Path) -> None:
    """tracemalloc from now on; on SIGUSR2, a snapshot and the counts (see the docstring)."""
    import tracemalloc

    tracemalloc.start(int(os.environ.get("WHIP_SOAK_TRACE_FRAMES", "12")))
    wanted = session_types()  # fails here, loudly, if a class moved
    holders = os.environ.get("WHIP_SOAK_REFERRERS", "").split(",") if os.environ.get(
        "WHIP_SOAK_REFERRERS") else wanted[:1]
    dumps = 0

    def dump(_signum: int, _frame: Any) -> None:
        nonlocal dumps
        from harness import rss_kb

        gc.collect()
        tracemalloc.take_snapshot().dump(str(out_dir / f"heap-{dumps}.snap"))
        types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        current, peak = tracemalloc.get_traced_memory()
        (out_dir / f"types-{dumps}.json").write_text(json.dumps({
            "traced_bytes": current, "traced_peak_bytes": peak, "rss_kb": rss_kb(os.getpid()),
            "gc_objects": sum(types.values()), "session_types": wanted,
            "sessions": {k: types.get(k, 0) for k in wanted},
            "types": dict(types.most_common(400))}))
        (out_dir / f"referrers-{dumps}.txt").write_text(referrer_chains(set(holders)))
        (out_dir / f"done-{dumps}").touch()
        dumps += 1

    signal.signal(signal.SIGUSR2, dump)


def referrer_chains(type_names: set[str], per_type: int = 3, depth: int = 5) -> str:
    """Who keeps objects of these types alive: referrers, depth first, a few each."""
    import types as pytypes

    def name(o: Any) -> str:
        return f"{type(o).__module__}.{type(o).__qualname__}"

    def describe(o: Any) -> str:
        if isinstance(o, dict):
            return f"dict keys={list(o)[:6]}"
        if isinstance(o, pytypes.FrameType):
            return f"frame {o.f_code.co_filename}:{o.f_lineno} {o.f_code.co_name}"
        if isinstance(o, pytypes.FunctionType):
            return f"function {o.__qualname__}"
        if isinstance(o, pytypes.CellType):
            return "cell"
        return name(o)

    gc.collect()
    objects = [o for o in gc.get_objects() if name(o) in type_names]
    out = [f"{len(objects)} objects of {sorted(type_names)}"]
    ignore = {id(objects)}

    def walk(o: Any, level: int, seen: set[int]) -> None:
        if level >= depth:
            return
        refs = gc.get_referrers(o)
        ignore.add(id(refs))
        shown = 0
        for r in refs:
            if id(r) in ignore or id(r) in seen or isinstance(r, pytypes.FrameType):
                continue
            out.append("  " * (level + 1) + "<- " + describe(r))
            shown += 1
            walk(r, level + 1, seen | {id(r)})
            if shown >= 3:
                break

    for obj in objects[:per_type]:
        out.append(f"{describe(obj)} {getattr(obj, 'stream', '')} state="
                   f"{getattr(getattr(obj, 'state', None), 'value', '')} "
                   f"end_reason={getattr(obj, 'end_reason', '')}")
        walk(obj, 0, {id(obj)})
    return "\n".join(out) + "\n"


def serve(argv: list[str]) -> int:
    """The gateway's CLI with the probes the environment asks for."""
    recorder: Recorder | None = None
    out: TextIO | None = None
    if os.environ.get(PROBES_ENV):
        out = open(os.environ[PROBES_ENV], "a")  # noqa: SIM115
        recorder = Recorder(out)
        recorder.install()
    if os.environ.get(HEAP_ENV):
        install_heap_probe(Path(os.environ[HEAP_ENV]))

    def on_term(_signum: int, _frame: Any) -> None:
        # uvicorn re-raises the SIGTERM it caught once it has shut down;
        # leave through Python so that the records and the profile get written.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    profiler = None
    if os.environ.get(PROFILE_ENV):
        import cProfile

        # WHIP_BENCH_PROFILE_CLOCK=cpu: the event loop thread's CPU time, not
        # wall time (on a shared machine a preempted syscall reads as costly).
        profiler = (cProfile.Profile(time.thread_time_ns, 1e-9)
                    if os.environ.get(PROFILE_CLOCK_ENV) == "cpu" else cProfile.Profile())
        profiler.enable()
    from gateway.cli import main as cli_main

    try:
        return cli_main(argv)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(os.environ[PROFILE_ENV])
        if recorder is not None and out is not None:
            recorder.flush_lag()
            out.close()


# --------------------------------------------------------------------------
# in the bench: reading the records


def read_records(path: Path) -> tuple[list[Json], list[tuple[float, float]]]:
    """The per-POST records and the lag samples of a probe file."""
    posts: list[Json] = []
    lag: list[tuple[float, float]] = []
    if not path.exists():
        return posts, lag
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "lag" in item:
            lag += [(float(t), float(late)) for t, late in item["lag"]]
        else:
            posts.append(item)
    return posts, lag


def steps_by_key(record: Json) -> dict[str, Json]:
    """The first step of each kind in a record: ``egress.variant``, ``janus.message:watch``…"""
    found: dict[str, Json] = {}
    for step in record.get("steps", []):
        key = f"{step['name']}:{step['request']}" if "request" in step else step["name"]
        found.setdefault(key, step)
    return found


def step_sums_ms(record: Json) -> dict[str, float]:
    """Milliseconds per kind of step, summed (a POST may parse SDP several times)."""
    sums: dict[str, float] = {}
    for step in record.get("steps", []):
        key = f"{step['name']}:{step['request']}" if "request" in step else step["name"]
        sums[key] = sums.get(key, 0.0) + (step["t1"] - step["t0"]) * 1000
    return sums


def whip_stages(record: Json) -> Json:
    """One WHIP POST in the stages ``whip_setup.py --gateway-timing`` reports (ms)."""
    sums = step_sums_ms(record)
    stages: Json = {"asgi": (record["t_end"] - record["t_asgi"]) * 1000, "cpu": record["cpu_ms"]}
    if "t_response" in record:
        stages["asgi_to_headers"] = (record["t_response"] - record["t_asgi"]) * 1000
    for stage, key in (("read_body", "http.read_body"), ("sdp_parse", "sdp.parse"),
                       ("check_offer", "ingest.check_offer")):
        if key in sums:
            stages[stage] = sums[key]
    for key, value in sums.items():
        if key.startswith("janus.request:"):
            stages["janus_" + key.split(":", 1)[1]] = value
    steps = steps_by_key(record)
    join = steps.get("janus.request:joinandconfigure")
    message = steps.get("janus.message:joinandconfigure")
    if join and message and "t_event" in join:
        # Negative when the event came in before the ack's reply was read.
        stages["ack_to_event"] = (join["t_event"] - join["t1"]) * 1000
        stages["event_to_resume"] = (message["t1"] - max(join["t_event"], join["t1"])) * 1000
    return stages


WHIP_STAGES = ("asgi", "asgi_to_headers", "read_body", "sdp_parse", "check_offer", "janus_create",
               "janus_attach", "janus_joinandconfigure", "ack_to_event", "event_to_resume", "cpu")


def summarize(path: Path, client_p50_ms: float | None = None) -> str:
    """Medians of the stages of the sequential WHIP POSTs (``bench-N``, N < 10,000)."""
    records, _ = read_records(path)
    sequential = [whip_stages(r) for r in records if r.get("status") == 201
                  and r["path"].startswith("/whip/") and r["stream"].split("-", 1)[-1].isdigit()
                  and int(r["stream"].split("-", 1)[-1]) < 10_000]  # not the warm-up
    if not sequential:
        return "no sequential WHIP POST recorded"
    lines = [f"gateway-side timing, {len(sequential)} sequential POSTs, median ms:"]
    medians = {}
    for stage in WHIP_STAGES:
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


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--summarize":
        print(summarize(Path(sys.argv[2])))
        sys.exit(0)
    sys.exit(serve(sys.argv[1:]))
