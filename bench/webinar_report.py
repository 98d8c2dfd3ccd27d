"""webinar's report: the figures of both ramps, their ratios, the targets, the plot, sizing.

Pure functions over the driver's results (``per_hundred``, ``cores_between``,
``fit_costs``, ``sizing_rows``), so that they can be tested without a run.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

from harness import Json, percentile

# An egress node as sized in the README: 4 cores kept at 70 %, 10 Gbit/s at 70 %.
NODE_CORES, NODE_GBPS, HEADROOM = 4, 10.0, 0.7


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def per_hundred(ttff_by_order: list[float | None], size: int = 100) -> list[Json]:
    """p50/p95/p99 of each block of ``size`` joins in join order (None: never got a packet)."""
    blocks = []
    for start in range(0, len(ttff_by_order), size):
        chunk = ttff_by_order[start:start + size]
        got = [v for v in chunk if v is not None]
        blocks.append({"joins": f"{start + 1}-{start + len(chunk)}", "n": len(chunk),
                       "receiving": len(got), "p50": percentile(got, 50),
                       "p95": percentile(got, 95), "p99": percentile(got, 99)})
    return blocks


def cores_between(samples: list[Json], name: str, t0: float, t1: float) -> float:
    """Cores ``name`` used from t0 to t1: the sampler's last row before t0 to its first after t1."""
    before = [s for s in samples if s["t"] <= t0]
    after = [s for s in samples if s["t"] >= t1]
    if not before or not after:
        return float("nan")
    a, b = before[-1], after[0]  # a span a little wider than asked, never empty
    value = (b["cpu"][name] - a["cpu"][name]) if name != "*machine" else b["busy"] - a["busy"]
    return value / (b["t"] - a["t"])


def rss_between(samples: list[Json], t0: float, t1: float) -> float:
    rows = [s["rss_kb"] for s in samples if t0 <= s["t"] <= t1]
    return max(rows) / 1024 if rows else float("nan")


def side_figures(side: Json, samples: list[Json], idle: list[float], names: list[str]) -> Json:
    """One ramp's figures: set-ups, TTFF, packets against what was sent, CPU per phase."""
    viewers = side["viewers"]
    ttff = [(v["t_first"] - v["t_post"]) * 1000 if v["t_first"] and v["t_post"] else None
            for v in viewers]
    got = [t for t in ttff if t is not None]
    sent = side["sent"].get("video", 0)
    share = sorted(v["window"].get("video", 0) / sent if sent else float("nan") for v in viewers)
    window = side["hold"][1] - side["hold"][0]
    ramp, hold = (side["t0"], side["settled"]), tuple(side["hold"])
    cpu = {phase: {n: cores_between(samples, n, *span) for n in names + ["*machine"]}
           for phase, span in (("idle", idle), ("ramp", ramp), ("hold", hold))}
    for phase in ("ramp", "hold"):
        own = sum(v for k, v in cpu[phase].items() if k != "*machine" and not math.isnan(v))
        cpu[phase]["*other"] = max(cpu[phase]["*machine"] - own, 0.0)
    egress = [n for n in names if n.startswith("egress")]
    egress_hold = sum(cpu["hold"][n] - cpu["idle"][n] for n in egress)
    pkts = sum(v["window"].get("video", 0) + v["window"].get("audio", 0) for v in viewers)
    octets = sum(v["window"].get("bytes", 0) for v in viewers)
    receiving = sum(1 for v in viewers if v["window"].get("video", 0) > 0)
    g2g = [x for v in viewers for x in v["g2g_ms"]]

    def step(a: str, b: str) -> float:
        return percentile([(v[b] - v[a]) * 1000 for v in viewers if v[a] and v[b]], 50)

    return {
        "n": len(viewers), "answered": sum(1 for v in viewers if v["t_answer"]),
        "receiving": len(got), "errors": [v["error"] for v in viewers if v["error"]][:5],
        "ttff": {"p50": percentile(got, 50), "p95": percentile(got, 95), "p99": percentile(got, 99)},
        "ttff_by_order": ttff, "blocks": per_hundred(ttff),
        "sent_video": sent, "share_min": share[0] if share else float("nan"),
        "share_median": percentile(share, 50), "at_99": sum(1 for s in share if s >= 0.99),
        "viewers_per_node": side["viewers_per_node"], "cpu": cpu,
        "gateway_rss_mb": {"ramp": rss_between(samples, *ramp), "hold": rss_between(samples, *hold)},
        "viewer_pps": pkts / window / max(receiving, 1), "packet_bytes": octets / max(pkts, 1),
        # What Janus sends each viewer (the publisher's rate): packets a starved viewer
        # process drops from its socket buffer were still encrypted and sent.
        "sent_pps": sum(side["sent"].values()) / window,
        "egress_us_per_sent_packet": egress_hold / (receiving * sum(side["sent"].values()) / window)
        * 1e6 if receiving and side["sent"] else float("nan"),
        "egress_us_per_packet": egress_hold / (pkts / window) * 1e6 if pkts else float("nan"),
        "egress_pct_per_viewer": egress_hold / max(receiving, 1) * 100,
        "g2g": {"n": len(g2g), "p50": percentile(g2g, 50), "p95": percentile(g2g, 95)},
        "teardown_errors": side["teardown_errors"][:5],
        "steps_p50": {"answer": step("t_post", "t_answer"), "ice": step("t_answer", "t_ice"),
                      "dtls": step("t_ice", "t_connected"),
                      "first_packet": step("t_connected", "t_first")},
    }


def analyse(results: Json) -> Json:
    names = list(results["samples"][0]["cpu"]) if results.get("samples") else []
    return {s["side"]: side_figures(s, results["samples"], results["idle"], names)
            for s in results.get("sides", [])}


def report(results: Json, a: Json) -> str:
    p = results["params"]
    g, d = a["gateway"], a["direct"]
    lines = [(f"webinar: profile {p['profile']}, N={p['viewers']}, K={p['egress']} egress nodes, "
              f"{p['procs']} viewer processes, {p['rate']} joins/s, hold {p['hold']} s, "
              f"{p['decoders']} decoding viewers")]
    rows = [("set-ups that succeeded (answer)", "answered", None),
            ("viewers receiving video", "receiving", None)]
    lines.append(f"{'':34}{'gateway':>10}{'direct':>10}{'ratio':>8}")
    for label, key, _ in rows:
        lines.append(f"{label:34}{g[key]:>10}{d[key]:>10}")
    for q in ("p50", "p95", "p99"):
        ratio = g["ttff"][q] / d["ttff"][q] if d["ttff"][q] else float("nan")
        lines.append(f"{'POST->first packet ' + q + ' (ms)':34}{fmt(g['ttff'][q]):>10}"
                     f"{fmt(d['ttff'][q]):>10}{fmt(ratio, 2):>8}")
    steps = ("answer", "ice", "dtls", "first_packet")
    lines.append(f"{'  p50 steps: answer/ICE/DTLS/1st':34}"
                 f"{'/'.join(fmt(g['steps_p50'][k]) for k in steps):>10}  "
                 f"{'/'.join(fmt(d['steps_p50'][k]) for k in steps)}")
    for label, key in (("packets/viewer, min share of sent", "share_min"),
                       ("packets/viewer, median share", "share_median")):
        lines.append(f"{label:34}{fmt(g[key] * 100, 1) + '%':>10}{fmt(d[key] * 100, 1) + '%':>10}")
    lines.append(f"{'viewers with >= 99% of packets':34}{g['at_99']:>10}{d['at_99']:>10}")
    lines.append(f"{'video packets sent in the hold':34}{g['sent_video']:>10}{d['sent_video']:>10}")
    lines.append(f"{'viewers per egress node':34}{g['viewers_per_node']!s:>10} "
                 f"{d['viewers_per_node']!s}")
    lines.append(f"{'glass-to-glass p50/p95 ms (n)':34}"
                 f"{fmt(g['g2g']['p50'])}/{fmt(g['g2g']['p95'])} ({g['g2g']['n']})   "
                 f"{fmt(d['g2g']['p50'])}/{fmt(d['g2g']['p95'])} ({d['g2g']['n']})")
    lines.append("\nPOST->first packet per 100 joins, ms (gateway p50/p95/p99 | direct p50/p95/p99):")
    for gb, db in zip(g["blocks"], d["blocks"]):
        lines.append(f"  {gb['joins']:>10}  {fmt(gb['p50']):>6} {fmt(gb['p95']):>6} "
                     f"{fmt(gb['p99']):>6} | {fmt(db['p50']):>6} {fmt(db['p95']):>6} {fmt(db['p99']):>6}"
                     f"   ({gb['receiving']}/{gb['n']}, {db['receiving']}/{db['n']})")
    lines.append("\nCPU, cores (idle | gateway ramp, hold | direct ramp, hold):")
    for name in g["cpu"]["ramp"]:
        lines.append(f"  {name:>9}  {fmt(g['cpu']['idle'].get(name, float('nan')), 3):>6} | "
                     f"{fmt(g['cpu']['ramp'][name], 3):>6} {fmt(g['cpu']['hold'][name], 3):>6} | "
                     f"{fmt(d['cpu']['ramp'][name], 3):>6} {fmt(d['cpu']['hold'][name], 3):>6}")
    lines.append(f"gateway RSS max: ramp {fmt(g['gateway_rss_mb']['ramp'], 1)} MB, "
                 f"hold {fmt(g['gateway_rss_mb']['hold'], 1)} MB")
    for side, f in (("gateway", g), ("direct", d)):
        lines.append(f"egress Janus ({side} hold): {fmt(f['viewer_pps'], 1)} packets/s per viewer "
                     f"of {fmt(f['packet_bytes'])} B, {fmt(f['egress_us_per_packet'], 1)} µs CPU "
                     f"per viewer-packet received ({fmt(f['egress_us_per_sent_packet'], 1)} µs per "
                     f"packet sent: {fmt(f['sent_pps'], 1)}/s), {fmt(f['egress_pct_per_viewer'], 3)}% "
                     "of a core per viewer")
    n = p["viewers"]
    lines.append("")
    lines.append(target(f"{n}/{n} connected", g["receiving"] == n, f"{g['receiving']}/{n}"))
    lines.append(target("each with >= 99% of its packets", g["at_99"] == n, f"{g['at_99']}/{n}"))
    ratio = g["ttff"]["p95"] / d["ttff"]["p95"] if d["ttff"]["p95"] else float("nan")
    lines.append(target("POST->first packet p95 <= 1.1x direct", ratio <= 1.1, fmt(ratio, 2)))
    cores, rss = g["cpu"]["hold"]["gateway"], g["gateway_rss_mb"]["hold"]
    lines.append(target("gateway hold CPU <= 5% of a core", cores <= 0.05, f"{fmt(cores * 100, 1)}%"))
    lines.append(target("gateway hold RSS <= 150 MB", rss <= 150, f"{fmt(rss, 1)} MB"))
    if g["g2g"]["n"]:
        lines.append(target(f"glass-to-glass p95 <= 100 ms (target at N=10; this is N={n})",
                            g["g2g"]["p95"] <= 100, f"{fmt(g['g2g']['p95'])} ms"))
    else:
        lines.append("glass-to-glass: no sample (the webinar profile carries no barcode, "
                     "or no decoding viewer received frames in the hold)")
    return "\n".join(lines)


def target(label: str, ok: bool, value: str) -> str:
    return f"target {label}: {value}  {'PASS' if ok else 'MISS'}"


# --------------------------------------------------------------------------
# sizing


def fit_costs(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(µs per viewer-packet, % of a core per viewer at 0 packets/s) through (pps, %/viewer) points.

    Points of two profiles (packet rates at least 2x apart) give a line, the
    gateway and direct sides of one profile being averaged; one profile's
    points are taken as all per-packet cost.
    """
    points = sorted(points)
    low = [p for p in points if p[0] < 2 * points[0][0]]
    high = [p for p in points if p[0] >= 2 * points[0][0]]
    if not high:  # one packet rate (one profile): all of it counts as per-packet cost
        pps = sum(p[0] for p in low) / len(low)
        pct = sum(p[1] for p in low) / len(low)
        return pct / 100 / pps * 1e6, 0.0
    x1, y1 = (sum(p[i] for p in low) / len(low) for i in (0, 1))
    x2, y2 = (sum(p[i] for p in high) / len(high) for i in (0, 1))
    slope = (y2 - y1) / (x2 - x1)  # % per pps
    return slope / 100 * 1e6, max(y1 - slope * x1, 0.0)


def sizing_rows(us_per_packet: float, base_pct: float, packet_bytes: float,
                audiences: tuple[int, ...] = (1000, 10000),
                mbps: tuple[float, ...] = (0.5, 1.5, 3.0)) -> list[Json]:
    """Egress cores and nodes per audience and bitrate (+ Opus at 50 packets/s)."""
    rows = []
    for n in audiences:
        for rate in mbps:
            pps = rate * 1e6 / 8 / packet_bytes + 50
            cores = n * (pps * us_per_packet / 1e6 + base_pct / 100)
            gbps = n * (rate + 0.05) / 1000
            nodes = max(math.ceil(cores / (NODE_CORES * HEADROOM)),
                        math.ceil(gbps / (NODE_GBPS * HEADROOM)), 1)
            rows.append({"viewers": n, "mbps": rate, "pps": pps, "cores": cores,
                         "gbps": gbps, "nodes": nodes})
    return rows


def sizing_table(rows: list[Json]) -> str:
    out = [("| viewers | video Mbit/s | packets/s per viewer | egress Janus cores | egress Gbit/s | "
            f"nodes ({NODE_CORES} cores, {NODE_GBPS:.0f} GbE, {HEADROOM:.0%} load) |"),
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r['viewers']:,} | {r['mbps']} | {r['pps']:.0f} | {r['cores']:.1f} | "
                   f"{r['gbps']:.1f} | {r['nodes']} |")
    return "\n".join(out)


# --------------------------------------------------------------------------
# the plot


def plot(results: Json, a: Json, path: Path) -> None:
    """TTFF against join order (both sides), each process's CPU over time, viewers per node."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 11))
    for side, colour in (("gateway", "tab:blue"), ("direct", "tab:orange")):
        ttff = a[side]["ttff_by_order"]
        xs = [i for i, v in enumerate(ttff) if v is not None]
        ax1.scatter(xs, [ttff[i] for i in xs], s=4, c=colour, label=side)
        blocks = a[side]["blocks"]
        ax1.plot([i * 100 + 50 for i in range(len(blocks))], [b["p95"] for b in blocks],
                 c=colour, lw=1.5, label=f"{side} p95 per 100")
    ax1.set(xlabel="join order", ylabel="POST → first packet (ms)", yscale="log",
            title=f"{results['params']['profile']} profile, N={results['params']['viewers']}, "
                  f"K={results['params']['egress']}")
    ax1.legend()
    samples = results["samples"]
    t0 = samples[0]["t"]
    for name in samples[0]["cpu"]:
        if name.startswith(("egress", "ingest", "gateway")):
            xs = [(b["t"] - t0) for b in samples[1:]]
            ys = [(b["cpu"][name] - a_["cpu"][name]) / (b["t"] - a_["t"])
                  for a_, b in pairwise(samples)]
            ax2.plot(xs, ys, label=name, lw=1)
    for side in results["sides"]:
        ax2.axvspan(side["t0"] - t0, side["hold"][1] - t0, alpha=0.08,
                    color="tab:blue" if side["side"] == "gateway" else "tab:orange")
    ax2.set(xlabel="seconds", ylabel="cores", title="CPU per process (shaded: gateway, then direct)")
    ax2.legend(fontsize=8)
    k = len(a["gateway"]["viewers_per_node"])
    ax3.bar([i - 0.2 for i in range(k)], a["gateway"]["viewers_per_node"], 0.4, label="gateway")
    ax3.bar([i + 0.2 for i in range(k)], a["direct"]["viewers_per_node"], 0.4, label="direct")
    ax3.set(xticks=range(k), xticklabels=[f"egress{i}" for i in range(k)], ylabel="viewers",
            title="viewers per egress node during the hold")
    ax3.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
