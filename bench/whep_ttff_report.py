"""whep_ttff's report: the viewers' records and the gateway's probes, in figures.

``analyse`` turns the batches (one record per viewer, times on the common
clock) into TTFF and signalling percentiles per side, the split of a TTFF
into its steps, and, joined by session id, the gateway's own steps from its
probe records; ``report`` prints them with the target.
"""

from __future__ import annotations

import math

from harness import Json, machine_line, percentile
from probes import step_sums_ms, steps_by_key
from whep_ttff_scenario import NATIVE, zero_field

TARGET_GATEWAY_TTFF_P95_MS = 150.0
# Issue 13, item 3: against a WHEP peer at equal set-up, each of these gateway/peer ratios <= 1.
TARGET_PEER_RATIO = 1.0
RATIO_KEYS = ("signalling_p50", "signalling_p95", "ttff_p50", "ttff_p95")
# The gateway's hooked steps in a WHEP POST (bench/probes.py keys), as the report names them.
STEP_LABELS = {
    "egress.view": "view", "sdp.choose_codecs": "choose_codecs", "egress.variant": "variant",
    "janus.request:create": "mountpoint_create", "janus.request:rtp_forward": "rtp_forward",
    "janus.request:attach": "attach", "janus.message:watch": "watch", "sdp.bridge": "bridge",
    "janus.message:start": "start", "janus.request:watch": "post:watch",
    "janus.request:start": "post:start",
}


# --------------------------------------------------------------------------
# statistics


def summary(ms: list[float]) -> Json:
    return {"n": len(ms), "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
            "max_ms": max(ms) if ms else float("nan"), "min_ms": min(ms) if ms else float("nan")}


def fmt(value: float) -> str:
    return "-" if value != value else f"{value:.0f}"  # NaN -> "-"


# --------------------------------------------------------------------------
# analysis and the report


def ms(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else (b - a) * 1000


def other_side(results: Json) -> str:
    """The side the gateway is compared with (``--against``; native before it existed)."""
    return str(results["params"].get("against") or NATIVE)


def ratios(ours: Json, theirs: Json) -> Json:
    """gateway / other for signalling and TTFF, p50 and p95 (NaN where the other has none)."""
    out = {}
    for key in ("signalling", "ttff"):
        for p in ("p50", "p95"):
            out[f"{key}_{p}"] = (ours[key][f"{p}_ms"] / theirs[key][f"{p}_ms"]
                                 if theirs[key]["n"] and theirs[key][f"{p}_ms"] else float("nan"))
    return out


def peer_verdict(ratio: Json) -> list[str]:
    """One line per figure against a WHEP peer: ratio <= 1.0 PASS, else MISS (NaN: no data)."""
    lines = []
    for key in RATIO_KEYS:
        value = ratio[key]
        mark = "-" if math.isnan(value) else ("PASS" if value <= TARGET_PEER_RATIO else "MISS")
        lines.append(f"  {key.replace('_', ' '):<16}{value:>6.2f}  {mark}")
    return lines


def analyse(results: Json, probes: list[Json], lag: list[tuple[float, float]],
            peer_probes: dict[str, Json] | None = None) -> Json:
    """Figures per side; ``probes`` are the gateway's POST records, ``peer_probes`` the
    peer's (``peer_janus_whep.read_probes``: by resource id)."""
    by_session: dict[str, Json] = {str(p["session"]): p for p in probes if p.get("session")}
    out: Json = {}
    against = other_side(results)
    for side in ("gateway", against):
        batches = [b for b in results.get("batches", []) if b["side"] == side]
        recs = [v for b in batches for v in b["viewers"]]
        zero = zero_field(side)
        done = "t_offer" if side == NATIVE else "t_201"

        def col(a: str, b: str, rows: list[Json] = recs) -> list[float]:
            return [x for x in (ms(r.get(a), r.get(b)) for r in rows) if x is not None]

        ok = [r for r in recs if r["t_frame"] is not None]
        entry: Json = {
            "viewers": len(recs),
            "decoded": len(ok),
            "errors": sorted({r["error"] for r in recs if r["error"]})[:10],
            "signalling": summary(col(zero, done)),
            "ttff": summary(col(zero, "t_frame", ok)),
            "per_round_ttff_p95_ms": [percentile(col(zero, "t_frame", [v for v in b["viewers"]
                                                                       if v["t_frame"]]), 95)
                                      for b in batches],
            "go_lateness": summary(col("t_go", zero)),
            "hold_fps": summary([r["hold_frames"] / max(results["params"]["hold"], 1e-9)
                                 for r in recs]),
            "steps_p50_ms": {},
            "cpu_cores_join": {k: sum(b["cpu_cores_join"][k] for b in batches) / max(len(batches), 1)
                               for k in (batches[0]["cpu_cores_join"] if batches else {})},
            "other_cores_join": [b["other_cores_join"] for b in batches],
            "cpu_ms_per_viewer_join": {
                k: sum(b["cpu_s_join"][k] for b in batches) * 1000 / max(len(recs), 1)
                for k in (batches[0]["cpu_s_join"] if batches else {})},
            "publisher_plis_per_batch": [len(b["publisher_plis"]) for b in batches],
            "first_publisher_pli_ms": [b["publisher_plis"][0] * 1000 if b["publisher_plis"] else None
                                       for b in batches],
            "teardown_s": [b["teardown_s"] for b in batches],
            "teardown_errors": [e for b in batches for e in b["teardown_errors"]][:10],
        }
        steps = [(zero, done, "signalling")]
        if side != NATIVE:
            steps += [("t_201", "t_srd", "apply answer"), ("t_srd", "t_connected", "ICE+DTLS")]
            entry["offer_ms"] = summary([r["offer_s"] * 1000 for r in recs if r["offer_s"]])
        else:
            steps += [("t_attach", "t_attached", "attach"), ("t_watch", "t_offer", "watch"),
                      ("t_offer", "t_answer", "aiortc answer"), ("t_answer", "t_started", "start"),
                      ("t_started", "t_connected", "ICE+DTLS")]
        steps += [("t_ice", "t_connected", "DTLS (ICE done->connected)"),
                  ("t_connected", "t_rtp", "connected->1st RTP"),
                  ("t_rtp", "t_kf", "1st RTP->key frame pkt"),
                  ("t_kf", "t_frame", "key frame pkt->decoded"),
                  (zero, "t_connected", "start->connected"),
                  (zero, "t_kf", "start->key frame pkt")]
        for a, b, name in steps:
            values = col(a, b, ok)
            entry["steps_p50_ms"][name] = percentile(values, 50)
            entry.setdefault("steps_p95_ms", {})[name] = percentile(values, 95)
        entry["viewers_waiting_for_keyframe"] = sum(
            1 for r in ok if r["t_kf"] and r["t_rtp"] and r["t_kf"] - r["t_rtp"] > 0.001)
        entry["viewers_sending_pli"] = sum(1 for r in recs if r["plis"])
        ready = "t_answer" if side == NATIVE else "t_srd"
        entry["slow_connect"] = {  # a ~1 s retransmission somewhere in ICE or DTLS
            "over_800ms": sum(1 for r in recs if r.get(ready) and r["t_connected"]
                              and r["t_connected"] - r[ready] > 0.8),
            "of_which_dtls": sum(1 for r in recs if r.get(ready) and r["t_connected"]
                                 and r["t_connected"] - r[ready] > 0.8 and r.get("t_ice")
                                 and r["t_connected"] - r["t_ice"] > 0.5),
            "of": sum(1 for r in recs if r.get(ready) and r["t_connected"])}
        if side == "gateway" and by_session:
            entry["gateway_steps"] = gateway_steps(recs, by_session)
            entry["handover"] = handover(recs, by_session, "t_asgi", "t_response")
        elif side not in ("gateway", NATIVE) and peer_probes:
            entry["handover"] = handover(recs, peer_probes, "t_app", "t_finish")
        out[side] = entry
    out["ratio"] = ratios(out["gateway"], out[against])
    if lag:
        gw_batches = [b for b in results.get("batches", []) if b["side"] == "gateway"]
        windows = [(b["go"], b["go"] + b["settle_s"]) for b in gw_batches]
        inside = [late * 1000 for t, late in lag if any(a <= t <= z for a, z in windows)]
        out["gateway_loop_lag_during_joins"] = {
            "samples_over_2ms": len(inside), "max_ms": max(inside) if inside else 0.0,
            "sum_ms_per_batch": sum(inside) / max(len(windows), 1)}
    return out


HANDOVER = ("POST sent -> app called", "app called -> response out", "response out -> 201 read")


def handover(recs: list[Json], by_id: dict[str, Json], t_in: str, t_out: str) -> Json:
    """A WHEP server's POST in three, joined by resource id: getting to its app, the
    app's work, getting the response back; the same cut for the gateway and a peer.

    The gateway's "response out" is its response start (the body follows in the
    next send); the peer's is its response handed to the socket (``finish``).
    """
    rows: dict[str, list[float]] = {name: [] for name in HANDOVER}
    for rec in recs:
        probe = by_id.get((rec.get("session") or "").rsplit("/", 1)[-1])
        if probe is None:
            continue
        for name, a, b in zip(HANDOVER, (rec["t_post"], probe[t_in], probe.get(t_out)),
                              (probe[t_in], probe.get(t_out), rec["t_201"])):
            value = ms(a, b)
            if value is not None:
                rows[name].append(value)
    return {name: summary(values) for name, values in rows.items()}


def gateway_steps(recs: list[Json], by_session: dict[str, Json]) -> Json:
    """Per-step times inside the gateway, from its probes, joined by session id."""
    rows: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            rows.setdefault(name, []).append(value)

    variant_made = []
    for rec in recs:
        if not rec.get("session"):
            continue
        probe = by_session.get(rec["session"].rsplit("/", 1)[-1])
        if probe is None:
            continue
        add("POST sent -> gateway ASGI call", ms(rec["t_post"], probe["t_asgi"]))
        add("ASGI call -> response start", ms(probe["t_asgi"], probe.get("t_response")))
        add("response start -> 201 at viewer", ms(probe.get("t_response"), rec["t_201"]))
        steps = {label: s for key, s in steps_by_key(probe).items()
                 if (label := STEP_LABELS.get(key))}
        view = steps.get("view")
        add("ASGI call -> Egress.view", ms(probe["t_asgi"], view and view["t0"]))
        for name in ("choose_codecs", "variant", "attach", "watch", "bridge", "start"):
            s = steps.get(name)
            add(name, ms(s["t0"], s["t1"]) if s else None)
        add("sdp.parse, all in the POST", step_sums_ms(probe).get("sdp.parse"))
        if "mountpoint_create" in steps:
            variant_made.append({k: ms(steps[k]["t0"], steps[k]["t1"])
                                 for k in ("variant", "mountpoint_create", "rtp_forward")
                                 if k in steps})
        for request in ("watch", "start"):
            s = steps.get(f"post:{request}")
            if s:
                add(f"{request}: POST -> ack", ms(s["t0"], s["t1"]))
                add(f"{request}: ack -> event at pump", ms(s["t1"], s.get("t_event")))
                outer = steps.get(request)
                if outer and s.get("t_event"):
                    add(f"{request}: pump -> caller resumes", ms(s["t_event"], outer["t1"]))
        add("view end -> response start", ms(view and view["t1"], probe.get("t_response")))
    return {"p50_ms": {k: percentile(v, 50) for k, v in rows.items()},
            "p95_ms": {k: percentile(v, 95) for k, v in rows.items()},
            "max_ms": {k: max(v) for k, v in rows.items()},
            "variant_created": variant_made}


def report(results: Json) -> str:
    a = results["analysis"]
    m = results["machine"]
    p = results["params"]
    out = [f"{machine_line(m)}, aiortc {m['aiortc']}",
           f"run: {p['rounds']} rounds x {p['viewers']} viewers per side, in {p['procs']} worker "
           f"process(es); {'a standing viewer per side (--warm)' if p['warm'] else 'no standing viewer'}; "
           f"probes {'on' if p['probes'] else 'off'}"
           f"{'; Janus ICE-lite' if p.get('ice_lite') else ''}"
           f"{'; gateway env ' + ' '.join(p['gateway_env']) if p.get('gateway_env') else ''}"
           f"{'; EXPERIMENT bufferkf on both sides' if p.get('bufferkf') else ''}; "
           f"{results.get('elapsed_s', 0):.1f} s", ""]
    against = other_side(results)
    g, n = a["gateway"], a[against]
    out.extend(setup_lines(results))
    out.append(f"{'(ms)':<30}{'gateway':>24}{against:>24}{'ratio p50/p95':>16}")
    for label, key in (("signalling p50/p95/max", "signalling"), ("TTFF p50/p95/max", "ttff")):
        gs, ns = g[key], n[key]
        out.append(f"{label:<30}"
                   f"{fmt(gs['p50_ms']) + '/' + fmt(gs['p95_ms']) + '/' + fmt(gs['max_ms']):>24}"
                   f"{fmt(ns['p50_ms']) + '/' + fmt(ns['p95_ms']) + '/' + fmt(ns['max_ms']):>24}"
                   f"{a['ratio'][key + '_p50']:>8.2f}{a['ratio'][key + '_p95']:>8.2f}")
    out.append(f"{'decoded (viewers with frames)':<30}{str(g['decoded']) + '/' + str(g['viewers']):>24}"
               f"{str(n['decoded']) + '/' + str(n['viewers']):>24}")
    out.append(f"{'fps while all decode p50/min':<30}"
               f"{fmt(g['hold_fps']['p50_ms']) + '/' + fmt(g['hold_fps']['min_ms']):>24}"
               f"{fmt(n['hold_fps']['p50_ms']) + '/' + fmt(n['hold_fps']['min_ms']):>24}")
    # One line per side: ten rounds do not fit a column.
    for side, entry in (("gateway", g), (against, n)):
        out.append(f"{'TTFF p95 per round, ' + side:<30}  "
                   + " ".join(fmt(x) for x in entry["per_round_ttff_p95_ms"]))
    out.append("")
    out.append("where the time goes, viewer side, p50 (p95) ms:")
    for side, entry in (("gateway", g), (against, n)):
        parts = [f"{k} {fmt(v)} ({fmt(entry['steps_p95_ms'][k])})"
                 for k, v in entry["steps_p50_ms"].items()]
        out.append(f"  {side}: " + "; ".join(parts))
        slow = entry["slow_connect"]
        out.append(f"    ICE+DTLS over 800 ms: {slow['over_800ms']}/{slow['of']} "
                   f"(of which DTLS over 500 ms: {slow['of_which_dtls']})")
        out.append(f"    waited for a key frame after 1st RTP: {entry['viewers_waiting_for_keyframe']}"
                   f"/{entry['decoded']}; viewers that sent PLI: {entry['viewers_sending_pli']}; "
                   f"PLIs reaching the publisher per batch: {entry['publisher_plis_per_batch']}, "
                   f"first at +{[fmt(x) if x is not None else '-' for x in entry['first_publisher_pli_ms']]} ms")
        cores = ", ".join(f"{k} {v:.2f}" for k, v in entry["cpu_cores_join"].items())
        others = " ".join(f"{x:.2f}" for x in entry["other_cores_join"])
        out.append(f"    CPU cores used while joining: {cores}; other processes per batch: {others}")
        per = ", ".join(f"{k} {v:.1f}" for k, v in entry["cpu_ms_per_viewer_join"].items())
        out.append(f"    CPU ms per viewer (go -> all decoded): {per}")
    if g.get("offer_ms"):
        out.append(f"  gateway viewers' offer (createOffer+gathering, before the POST): p50 "
                   f"{fmt(g['offer_ms']['p50_ms'])} ms, p95 {fmt(g['offer_ms']['p95_ms'])} ms")
    gs = g.get("gateway_steps")
    if gs:
        out.append("inside the gateway (probes), p50 / p95 / max ms:")
        for k, v in gs["p50_ms"].items():
            out.append(f"  {k:<36}{fmt(v):>6}{fmt(gs['p95_ms'][k]):>7}{fmt(gs['max_ms'][k]):>7}")
        for made in gs["variant_created"]:
            out.append("  variant made by the first viewer: "
                       + ", ".join(f"{k} {fmt(v)}" for k, v in made.items()))
    if g.get("handover") or n.get("handover"):
        out.append(f"{'a WHEP POST in three, p50 / p95 ms':<38}{'gateway':>22}{against:>22}")
        nothing = {name: summary([]) for name in HANDOVER}  # a side without its probes
        for name in HANDOVER:
            gs, ps = (g.get("handover") or nothing)[name], (n.get("handover") or nothing)[name]
            out.append(f"  {name:<36}{fmt(gs['p50_ms']) + ' / ' + fmt(gs['p95_ms']):>22}"
                       f"{fmt(ps['p50_ms']) + ' / ' + fmt(ps['p95_ms']):>22}")
    lag = a.get("gateway_loop_lag_during_joins")
    if lag:
        out.append(f"gateway event-loop lag while joining: {lag['samples_over_2ms']} ticks late by "
                   f">2 ms, max {lag['max_ms']:.0f} ms, {lag['sum_ms_per_batch']:.0f} ms late per batch")
    out.append("")
    if against != NATIVE:
        out.append(f"target (issue 13 item 3) gateway/{against} <= {TARGET_PEER_RATIO:.1f}, "
                   f"{p['viewers']} viewer(s) at once:")
        out.extend(peer_verdict(a["ratio"]))
    ok = g["ttff"]["p95_ms"] <= TARGET_GATEWAY_TTFF_P95_MS
    out.append(f"target gateway TTFF p95 <= {TARGET_GATEWAY_TTFF_P95_MS:.0f} ms: "
               f"{fmt(g['ttff']['p95_ms'])} ms  {'PASS' if ok else 'MISS'}")
    errors = g["errors"] + n["errors"] + g["teardown_errors"] + n["teardown_errors"]
    errors += results.get("cleanup_errors", [])
    out.append(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors[:10]))
    # Seen while measuring, and again at the end: once.
    for finding in dict.fromkeys((results.get("peer_finding"), results.get("peer_died"))):
        if finding:
            out.append(f"FINDING: {finding}")
    if "peer_subscribers_left" in results:
        out.append(f"{against} still listing subscribers after the DELETEs: "
                   f"{results['peer_subscribers_left']} (target 0)")
    return "\n".join(out)


def setup_lines(results: Json) -> list[str]:
    """What each side was given before timing (a WHEP peer run only), and the peer's version."""
    setup = results.get("setup") or {}
    out = []
    if results["machine"].get("peer"):
        out.append(f"peer: {results['machine']['peer']}")
    for side, what in setup.items():
        mp = what["mountpoint"]
        out.append(f"set-up {side}: mountpoint PTs {mp['pts']}, threads {mp['threads']}, "
                   f"bufferkf {mp['bufferkf']}; made {what['made']}")
    return out + ([""] if out else [])




def pooled(runs: list[Json]) -> Json:
    """Several runs' batches as one run (same sides and batch size; each run is ABBA in
    itself): on a noisy machine, ten single-viewer rounds per run are too few for a p95."""
    first = runs[0]
    keys = ("against", "viewers")
    if any(tuple(r["params"].get(k) for k in keys) != tuple(first["params"].get(k) for k in keys)
           for r in runs):
        raise ValueError("the runs differ in --against or --viewers")
    out = {**first, "params": {**first["params"], "rounds": sum(r["params"]["rounds"] for r in runs)},
           "batches": [b for r in runs for b in r.get("batches", [])],
           "elapsed_s": sum(r.get("elapsed_s", 0.0) for r in runs),
           "cleanup_errors": [e for r in runs for e in r.get("cleanup_errors", [])]}
    out.pop("peer_finding", None)
    out["analysis"] = analyse(out, [], [])
    return out


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    if len(sys.argv) < 2:
        sys.exit("usage: whep_ttff_report.py RUN.json [RUN.json ...]  (whep_ttff.py --json files)")
    print(report(pooled([json.loads(Path(path).read_text()) for path in sys.argv[1:]])))
