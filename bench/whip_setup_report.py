"""whip_setup.py's figures and its printed report: pure functions of the results.

Kept apart from the run so that the ratios, the targets and the table can be
checked without Janus (tests/unit/test_whip_setup_report.py).  The gateway is
compared with each peer of the run: ``direct`` (the same Janus requests from
a raw client) and Meetecho's simple-whip-server builds.
"""

from __future__ import annotations

from typing import Any, Mapping

from harness import Json, machine_line, percentile

# Against the raw client doing the gateway's own Janus requests.
TARGET_RATIO_P50 = 1.10
TARGET_CONCURRENT_P95_MS = 90.0
# Against a real WHIP server on the same Janus: at least as fast.
TARGET_PEER_RATIO_P50 = 1.0
TARGET_PEER_CONCURRENT_RATIO_P95 = 1.0


def summary(samples: list[float]) -> Json:
    """p50/p95/mean/min/max in ms of samples in seconds."""
    ms = [s * 1000 for s in samples]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        "min_ms": min(ms) if ms else float("nan"),
        "max_ms": max(ms) if ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def targets(gateway: Json, peer: Json, kind: str) -> Json:
    """The ratios gateway/peer, and whether the targets for this kind of peer are met."""
    out = {
        "ratio_p50": ratio(gateway["sequential"]["p50_ms"], peer["sequential"]["p50_ms"]),
        "ratio_p95": ratio(gateway["sequential"]["p95_ms"], peer["sequential"]["p95_ms"]),
        "concurrent_p95_ms": gateway["concurrent"]["p95_ms"],
        "concurrent_ratio_p50": ratio(gateway["concurrent"]["p50_ms"], peer["concurrent"]["p50_ms"]),
        "concurrent_ratio_p95": ratio(gateway["concurrent"]["p95_ms"], peer["concurrent"]["p95_ms"]),
    }
    if kind == "direct":
        out["ratio_p50_ok"] = out["ratio_p50"] <= TARGET_RATIO_P50
        out["concurrent_p95_ok"] = out["concurrent_p95_ms"] <= TARGET_CONCURRENT_P95_MS
    else:
        out["ratio_p50_ok"] = out["ratio_p50"] <= TARGET_PEER_RATIO_P50
        out["concurrent_p95_ok"] = out["concurrent_ratio_p95"] <= TARGET_PEER_CONCURRENT_RATIO_P95
    return out


def incomplete(side: Json) -> str:
    """Which of a side's timed parts lack samples (failed POSTs); empty if none."""
    expected = side.get("expected") or {}
    gaps = [f"{part} {side[part]['n']}/{want} POSTs got 201" for part, want in expected.items()
            if side[part]["n"] < want]
    return ", ".join(gaps)


def target_lines(kind: str, t: Mapping[str, Any], width: int) -> list[str]:
    verdict = {True: "PASS", False: "MISS"}
    if kind == "direct":
        return [
            f"target sequential gateway/direct p50 <= {TARGET_RATIO_P50:.2f}: "
            f"{t['ratio_p50']:.2f}  {verdict[t['ratio_p50_ok']]}",
            f"target concurrent-{width} gateway p95 <= {TARGET_CONCURRENT_P95_MS:.0f} ms: "
            f"{t['concurrent_p95_ms']:.1f} ms  {verdict[t['concurrent_p95_ok']]}",
        ]
    return [
        f"target sequential gateway/{kind} p50 <= {TARGET_PEER_RATIO_P50:.2f}: "
        f"{t['ratio_p50']:.2f}  {verdict[t['ratio_p50_ok']]}",
        f"target concurrent-{width} gateway/{kind} p95 <= {TARGET_PEER_CONCURRENT_RATIO_P95:.2f}: "
        f"{t['concurrent_ratio_p95']:.2f}  {verdict[t['concurrent_p95_ok']]}",
    ]


def table(results: Json, peers: list[str]) -> list[str]:
    """POST -> answer per side: gateway, then each peer with the ratio gateway/peer."""
    width = results["params"]["concurrent"]
    g = results["gateway"]
    head = f"{'POST -> answer (ms)':<28}{'gateway':>10}"
    for name in peers:
        head += f"{name[:22]:>24}{'ratio':>7}"
    out = [head]
    rows = [("sequential p50", "sequential", "p50_ms"), ("sequential p95", "sequential", "p95_ms"),
            ("sequential mean", "sequential", "mean_ms"),
            (f"concurrent-{width} p50", "concurrent", "p50_ms"),
            (f"concurrent-{width} p95", "concurrent", "p95_ms"),
            (f"concurrent-{width} round wall", "round_wall", "p50_ms")]
    for label, key, stat in rows:
        line = f"{label:<28}{g[key][stat]:>10.2f}"
        for name in peers:
            value = results[name][key][stat]
            line += f"{value:>24.2f}{ratio(g[key][stat], value):>7.2f}"
        out.append(line)
    counts = f"{'samples (seq / conc)':<28}{g['sequential']['n']:>5} /{g['concurrent']['n']:>3}"
    for name in peers:
        counts += f"{results[name]['sequential']['n']:>18} /{results[name]['concurrent']['n']:>4}{'':>7}"
    out.append(counts)
    return out


def report(results: Json) -> str:
    """The printed report: conditions, the table, CPU, targets per peer, errors."""
    peers = list(results["peers"])
    m, p = results["machine"], results["params"]
    out = [machine_line(m),
           f"gateway: {m['gateway_commit']}  httpx {m['packages']['httpx']}, "
           f"uvicorn {m['packages']['uvicorn']}, starlette {m['packages']['starlette']}, "
           f"aiortc {m['packages']['aiortc']}"]
    for name, version in (results.get("peer_versions") or {}).items():
        room = ("one room, the server's default display name" if p.get("peer_room") == "shared"
                else "a room and a display name per endpoint")
        out.append(f"{name}: {version}; {room}, made before timing")
    out.append(f"run: {p['sequential']} sequential + {p['rounds']}x{p['concurrent']} concurrent "
               f"publishes per side, {p['offers']} distinct offers, blocks of {p['block']} (ABBA), "
               f"untimed settle {p['settle_ms']:.0f} ms before DELETE and gap {p['gap_ms']:.0f} ms "
               f"after it, {results['elapsed_s']:.1f} s")
    out.append("")
    out += table(results, peers)
    steps = results.get("direct_steps_ms") or {}
    if steps:
        out.append("direct sequential, p50 per step (ms): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in steps.items()))
    for name in ["gateway", *peers]:
        cpu = results[name].get("cpu_ms_per_publish") or {}
        out.append(f"CPU ms per sequential publish+teardown, {name}: "
                   + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    load = results.get("cpu_load")
    if load:
        out.append(f"CPU while measuring: bench+servers+Janus {load['ours_cores']:.2f} cores, "
                   f"other processes {load['others_cores']:.2f} cores (of {m['nproc']}; "
                   "figures from a busy machine are noisier)")
    out.append("")
    for name in peers:
        t = results["targets"][name]
        out += target_lines(name, t, p["concurrent"])
        short = incomplete(results[name])
        if short:
            out.append(f"  (not comparable: {name} {short})")
        out.append(f"  (sequential p95 ratio {t['ratio_p95']:.2f}; concurrent ratio p50 "
                   f"{t['concurrent_ratio_p50']:.2f}, p95 {t['concurrent_ratio_p95']:.2f})")
    for name in ["gateway", *peers]:
        errors = results[name]["errors"]
        out.append(f"errors, {name}: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:8]))
    return "\n".join(out)
