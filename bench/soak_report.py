"""The soak's report: from the counts, samples and Janus states to figures and a verdict.

``summarize`` folds the main phase's counts into ``results``; ``report``
prints them; ``log_summary`` groups the gateway's ERROR/WARNING lines;
``heap_report`` compares the gateway's two heap snapshots (--heap-profile).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from harness import Json, percentile
from soak_scenario import FORGET_S, OPS

def log_summary(path: Path) -> Json:
    """ERROR/WARNING lines of the gateway's log, grouped by message shape."""
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    lines = tracebacks = unexpected = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        lines += 1
        if line.startswith("Traceback"):
            tracebacks += 1
        if "unexpected error" in line:
            unexpected += 1
        for level, counter in ((" ERROR ", errors), (" WARNING ", warnings)):
            if level in line:
                message = line.split(level, 1)[1]
                shape = re.sub(r"\b[0-9a-f]{6,}\b|\d+(\.\d+)?", "N", message)
                counter[re.sub(r"'[^']*'", "'…'", shape)[:160]] += 1
    return {"lines": lines, "tracebacks": tracebacks, "unexpected_errors": unexpected,
            "errors": dict(errors.most_common(15)), "warnings": dict(warnings.most_common(15))}




def heap_report(out_dir: Path, first: int, last: int, top: int = 12) -> Json:
    """What the gateway's Python heap gained between two snapshots."""
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
            tracemalloc.Filter(False, "<unknown>")]
    s0 = tracemalloc.Snapshot.load(str(out_dir / f"heap-{first}.snap")).filter_traces(keep)
    s1 = tracemalloc.Snapshot.load(str(out_dir / f"heap-{last}.snap")).filter_traces(keep)
    t0 = json.loads((out_dir / f"types-{first}.json").read_text())
    t1 = json.loads((out_dir / f"types-{last}.json").read_text())
    by_line = [st for st in s1.compare_to(s0, "lineno") if st.size_diff > 0][:top]
    by_trace = [st for st in s1.compare_to(s0, "traceback") if st.size_diff > 0][:4]
    types = Counter(t1["types"])
    types.subtract(t0["types"])
    return {
        "traced_start_bytes": t0["traced_bytes"], "traced_end_bytes": t1["traced_bytes"],
        "traced_peak_bytes": t1["traced_peak_bytes"],
        "rss_start_kb": t0["rss_kb"], "rss_end_kb": t1["rss_kb"],
        "gc_objects_start": t0["gc_objects"], "gc_objects_end": t1["gc_objects"],
        "top_lines": [{"where": str(st.traceback[0]), "size_diff": st.size_diff,
                       "count_diff": st.count_diff} for st in by_line],
        "top_tracebacks": [{"size_diff": st.size_diff, "count_diff": st.count_diff,
                            "traceback": st.traceback.format(most_recent_first=True)[:24]}
                           for st in by_trace],
        "type_count_diff": {k: v for k, v in types.most_common() if v > 0}
        if len(types) else {},
        # Per-session objects that must all be gone once the gateway is empty
        # (their classes resolved by import in the gateway: bench/probes.py).
        "sessions_alive_end": t1["sessions"],
        "sessions_alive_start": t0["sessions"],
        "referrers_end": (out_dir / f"referrers-{last}.txt").read_text()[:6000],
    }


# --------------------------------------------------------------------------
# the report


LEAK_KINDS = ("extra_sessions", "extra_handles", "rooms", "mountpoints", "forwarders")


def leak_total(janus: Json) -> int:
    total = 0
    for node in janus.values():
        if "error" in node:
            return -1
        total += sum(abs(node[k]) for k in LEAK_KINDS)
    return total


def in_outage(t: float, outages: list[Json]) -> bool:
    return any(o["start"] <= t <= (o["end"] or float("inf")) for o in outages)


def summarize(soak: Any, results: Json) -> None:
    main = soak.phases.get("main")
    if main is None:
        return
    statuses = {op: {str(k): v for k, v in main.statuses[op].most_common()} for op in OPS}
    five_xx = {op: {s: n for s, n in c.items() if isinstance(s, int) and s >= 500 and s != 503}
               for op, c in main.statuses.items()}
    in_out = Counter(in_outage(t, soak.outages) for t, *_ in main.count_503)
    shapes = Counter(f"{op} while {down} down: {re.sub(r'[0-9]+(.[0-9]+)? s', 'N s', msg)}"
                     for _, op, msg, down in main.count_503)
    results["main"] = {
        "ops": main.ops,
        "elapsed_s": main.elapsed,
        "ops_per_s": main.ops / main.elapsed if main.elapsed else None,  # None: cut short
        "statuses": statuses,
        "latency_ms": {op: {"p50": percentile(v, 50), "p95": percentile(v, 95), "max": max(v)}
                       for op, v in main.latency_ms.items() if v},
        "fivexx_not_503": {op: v for op, v in five_xx.items() if v},
        "503_during_outage": in_out[True],
        "503_outside_outage": in_out[False],
        "503_by_op": dict(Counter(op for _, op, *_ in main.count_503)),
        "503_messages": dict(shapes.most_common()),
        "timeouts": sum(c.get("timeout", 0) for c in main.statuses.values()),
        "exceptions": sum(n for c in main.statuses.values() for s, n in c.items()
                          if str(s).startswith("exception")),
        "exception_samples": main.exceptions,
        "unexpected_samples": main.unexpected,
        "unexpected": main.unexpected_n,
    }
    warm = soak.phases.get("warmup")
    if warm is not None:
        results["warmup"] = {"ops": warm.ops, "elapsed_s": warm.elapsed,
                             "statuses": {op: {str(k): v for k, v in warm.statuses[op].items()}
                                          for op in OPS}}


MISSING = "missing"


def num(value: Any, spec: str = ".1f", missing: str = MISSING) -> str:
    """``value`` formatted, or "missing": a figure the run never got is shown as such."""
    if value is None or isinstance(value, str):
        return missing if value is None else value
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def failures_of(results: Json) -> list[str]:
    """Why the run fails, if it does: unplanned Janus exits, leaks, unexpected 5xx, …"""
    failures = []
    crashes = results.get("crashes") or []
    if crashes:
        failures.append(f"{len(crashes)} unplanned Janus exit(s)")
    if results.get("kill_errors"):
        failures.append("planned kill(s) not done")
    m = results.get("main")
    if m is None:
        failures.append("no main phase figures")
    else:
        if m.get("fivexx_not_503"):
            failures.append("5xx other than 503")
        if m.get("timeouts") or m.get("exceptions"):
            failures.append("timeouts/exceptions")
        if m.get("unexpected"):
            failures.append(f"{m['unexpected']} unexpected answers (e.g. 429)")
    end = results.get("end")
    if end is None or leak_total(end.get("janus", {"?": {"error": "missing"}})) != 0:
        failures.append("Janus leftovers (or not measured)")
    if end is not None and end.get("streams_left"):
        failures.append("streams left in the gateway")
    if end is not None and any((end.get("node_load") or {}).values()):
        failures.append("node load not back to 0")
    heap = results.get("heap")
    if heap and any(heap["sessions_alive_end"].values()):
        failures.append("session objects alive in the empty gateway")
    rss = results.get("rss")
    if rss is None:
        failures.append("RSS growth not measured")
    elif (rss.get("steady_growth_pct") if rss.get("steady_growth_pct") is not None
          else rss["growth_pct"]) >= 5:
        failures.append("RSS growth >= 5 % over the second half of the run")
    if (results.get("gateway_exit") or {}).get("janus_left"):
        failures.append("Janus processes left")
    return failures


def crash_report(results: Json) -> list[str]:
    """Each unplanned Janus exit: signal, time, operation number, what was in flight."""
    crashes = results.get("crashes") or []
    out = [f"unplanned Janus exits: {len(crashes)} (target 0)"]
    for c in crashes:
        what = c.get("signal") or (f"exit code {c['exit_code']}" if c.get("exit_code") is not None
                                   else "unknown status")
        out.append(f"  {c.get('role')} Janus {c.get('pid')}: {what}"
                   f"{' (core dumped)' if c.get('core_dumped') else ''} at "
                   f"{num(c.get('t_run_s'), '.1f')} s ({c.get('wall', MISSING)}), "
                   f"{c.get('phase', MISSING)} op {num(c.get('op'), 'd')}"
                   + (f" [{c['source']}]" if c.get("source") else ""))
        flight = c.get("in_flight") or []
        if flight:
            out.append("    in flight: " + "; ".join(
                f"#{f.get('i')} {f.get('op')} {f.get('target', '')}".rstrip() for f in flight))
        for key in ("janus_log", "core", "backtrace_file"):
            if c.get(key):
                out.append(f"    {key}: {c[key]}")
        for frame in (c.get("backtrace_top") or [])[:8]:
            out.append(f"    {frame[:160]}")
    for k in results.get("kill_errors") or []:
        out.append(f"  planned kill not done: {k}")
    return out


def report(results: Json) -> str:
    """The whole report; a section that cannot be shown says so, the rest still is."""
    out: list[str] = []
    for section in (_main_report, crash_report):
        try:
            out.extend(section(results))
        except Exception as exc:  # noqa: BLE001 - a report must never hide the rest
            out.append(f"[{section.__name__}: could not be shown: {exc!r}]")
    return "\n".join(out)


def _main_report(results: Json) -> list[str]:
    out = []
    p = results["params"]
    m = results.get("main")
    if m is None:
        return ["no main phase ran"]
    out.append(f"soak: {m['ops']} ops (+{results.get('warmup_ops', p['warmup'])} warm-up ops in "
               f"{results.get('warmup_s', MISSING)} s), concurrency {p['concurrency']}, "
               f"media share {p['media_share']} (at most {p['max_media']} media publishers and "
               f"{p['max_media']} media viewers), "
               f"{p['streams']} streams, seed {p['seed']}"
               + ("  ABORTED (run-time cap)" if results.get("aborted") else ""))
    out.append(f"main phase {num(m.get('elapsed_s'))} s, {num(m.get('ops_per_s'))} ops/s; "
               f"whole run {num(results.get('elapsed_s'))} s")
    out.append("")
    out.append(f"{'op':<12}{'n':>6}  {'p50 ms':>7}{'p95 ms':>8}{'max ms':>8}  statuses")
    for op in OPS:
        counts = m["statuses"].get(op, {})
        lat = m["latency_ms"].get(op, {})
        n = sum(counts.values())
        def fmt(k: str, lat: Json = lat) -> str:
            return f"{lat[k]:>7.1f}" if lat else f"{'-':>7}"

        out.append(f"{op:<12}{n:>6}  {fmt('p50')}{fmt('p95'):>8}{fmt('max'):>8}  "
                   + " ".join(f"{k}:{v}" for k, v in counts.items()))
    med = results.get("media", {})
    out.append(f"media peers: {med.get('publishers', 0)} of {med.get('publish_attempts', 0)} publishers "
               f"({med.get('publishers_connected', 0)} connected), {med.get('viewers', 0)} of "
               f"{med.get('view_attempts', 0)} viewers "
               f"({med.get('viewers_connected', 0)} connected, {med.get('viewers_with_frames', 0)} "
               f"decoded frames); {results.get('forgotten', 0)} signalling-only resources "
               f"abandoned (forgotten after {FORGET_S:.0f} s)")
    out.append("")
    for o in results.get("restarts", []):
        e = o.get("event", {})
        out.append(f"{e.get('role')} Janus SIGKILLed at op {e.get('at_op')}: marked down after "
                   f"{e.get('marked_down_s')} s, new process after {e.get('new_process_s')} s, "
                   f"healthy after {e.get('healthy_s')} s; same admin URL/secret/key after: "
                   f"{e.get('same_admin')}")
    out.append(f"503: {m['503_during_outage']} during outages, {m['503_outside_outage']} outside "
               f"({m['503_by_op']})")
    for message, n in list(m.get("503_messages", {}).items())[:10]:
        out.append(f"  503 x{n}: {message[:150]}")
    out.append(f"5xx other than 503: {m['fivexx_not_503'] or 0}; timeouts: {m['timeouts']}; "
               f"exceptions: {m['exceptions']}; other unexpected answers: "
               f"{m.get('unexpected', MISSING)}")
    for sample in m["unexpected_samples"][:8]:
        out.append(f"  unexpected: {sample['op']} -> {sample['status']}: {sample['detail'][:160]}")
    for sample in m["exception_samples"][:5]:
        out.append(f"  exception: {sample[:200]}")
    audits = [a for a in results.get("audits", []) if "error" not in a]
    if audits:
        out.append(f"forwarder audits ({len(audits)}): max orphan {max(a['orphan'] for a in audits)}, "
                   f"max crossed {max(a['crossed'] for a in audits)} (target 0; orphan = aimed at no "
                   "mountpoint, crossed = feeding another stream's mountpoint)")
        for a in audits:
            stale = a.get("orphans_aimed_at_killed_mountpoints")
            if stale:
                out.append(f"  {a['label']}: {len(stale)} forwarder(s) still aimed at the killed "
                           f"node's mountpoints: " + ", ".join(
                               f"{o['room']} -> port {o['port']} (was {o['old_mountpoint']})"
                               for o in stale[:4]))
            for c in a.get("crossed_detail", [])[:4]:
                out.append(f"  {a['label']}: CROSSED {c['room']} -> port {c['port']} of {c['mountpoint']}")
    out.append("")
    for label in ("after_warmup", "end"):
        s = results.get(label)
        if not s:
            continue
        empty = (f"/api/streams empty after {s['streams_empty_after_s']} s"
                 if s["streams_empty_after_s"] is not None else
                 f"/api/streams NOT empty after {p['settle_timeout']:g} s: "
                 + ", ".join(f"{k} ({v['publisher']['state']})" if isinstance(v, dict) else k
                             for k, v in s["streams_left"].items()))
        out.append(f"Janus after {'warm-up' if label == 'after_warmup' else 'the run'} "
                   f"(final DELETEs {s['final_deletes']}; {empty}; node load {s['node_load']}; "
                   f"settled {s['settle_s']} s):")
        out.append(f"  {'node':<8}" + "".join(f"{k:>16}" for k in LEAK_KINDS))
        for role, st in s["janus"].items():
            if "error" in st:
                out.append(f"  {role:<8}  {st['error']}")
            else:
                out.append(f"  {role:<8}" + "".join(f"{st[k]:>16}" for k in LEAK_KINDS))
        again = s.get("janus_again")
        if again is not None:
            out.append(f"  5 s later: total {leak_total(again)} (target 0)")
    rss = results.get("rss")
    if not rss:
        out.append("")
        out.append(f"gateway RSS growth: {MISSING} (the run did not reach its end)")
    if rss:
        out.append("")
        out.append(f"gateway RSS: start {rss['start_kb'] / 1024:.1f} MiB (after "
                   f"{results.get('warmup_ops', p['warmup'])} warm-up "
                   f"ops and their clean-up, so imports, lazy set-up and caches are excluded), "
                   f"end {rss['end_kb'] / 1024:.1f} MiB, growth {rss['growth_pct']:+.2f} %; "
                   f"peak seen {rss['peak_kb'] / 1024:.1f} MiB")
        out.append(f"gateway RSS over the second half (steady state): "
                   f"{num(rss.get('half_kb') and rss['half_kb'] / 1024)} -> "
                   f"{rss['end_kb'] / 1024:.1f} MiB, {num(rss.get('steady_growth_pct'), '+.2f')} % "
                   "(target < 5 %)")
        marks = rss.get("trajectory_kb") or {}
        if marks:
            out.append("gateway RSS during the run: " + ", ".join(
                f"{k} {v / 1024:.1f}" for k, v in marks.items()) + " MiB (live sessions included)")
        out.append(f"gateway CPU: {rss['gateway_cpu_s']:.1f} s in the main phase, "
                   f"{rss['gateway_cpu_ms_per_op']:.2f} ms per op")
    heap = results.get("heap")
    if heap:
        mib = 1024 * 1024
        out.append(f"gateway Python heap (tracemalloc, after gc): start "
                   f"{heap['traced_start_bytes'] / mib:.2f} MiB, end {heap['traced_end_bytes'] / mib:.2f}"
                   f" MiB ({(heap['traced_end_bytes'] - heap['traced_start_bytes']) / 1024:+.0f} KiB), "
                   f"peak {heap['traced_peak_bytes'] / mib:.2f} MiB; gc objects "
                   f"{heap['gc_objects_start']} -> {heap['gc_objects_end']}")
        for line in heap["top_lines"][:8]:
            out.append(f"  {line['size_diff'] / 1024:+8.1f} KiB {line['count_diff']:+7d} blocks  "
                       f"{line['where']}")
        grown = list(heap["type_count_diff"].items())[:10]
        if grown:
            out.append("  object types grown: " + ", ".join(f"{k} +{v}" for k, v in grown))
        alive = {k.rsplit(".", 1)[1]: v for k, v in heap["sessions_alive_end"].items() if v}
        out.append(f"  per-session objects still alive in the empty gateway: {alive or 'none'} "
                   "(target none; who holds them: referrers-N.txt in the heap folder)")
    logs = results.get("gateway_log", {})
    out.append(f"gateway log: {results.get('gateway_log_path')} ({logs.get('lines')} lines, "
               f"{logs.get('tracebacks')} tracebacks, {logs.get('unexpected_errors')} "
               f"'unexpected error')")
    for message, n in list(logs.get("errors", {}).items())[:8]:
        out.append(f"  ERROR x{n}: {message}")
    stop = results.get("gateway_exit")
    if stop:
        out.append(f"gateway stopped (exit {stop['returncode']}) in {stop['stop_s']:.1f} s; Janus "
                   f"processes left: {stop['janus_left'] or 'none'}")
    return out


