"""egress_cost's report: the configurations, their run order, and one row per run.

Pure functions over bench/webinar's figures (``webinar_report.analyse``) and
the sampler's rows, so that they are tested without a run
(``tests/unit/test_egress_cost_bench.py``).  A configuration is the three
knobs of issue 13 that change what one egress Janus spends per viewer:
``event_loops`` (janus.jcfg; 0 is Janus's default, a loop thread per
handle), the Streaming mountpoint's helper ``threads`` and ``bufferkf``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from statistics import median

from harness import Json
from webinar_report import fmt

CONFIG_RE = re.compile(r"^E(\d+)T(\d+)K([01])$")


@dataclass(frozen=True)
class Config:
    event_loops: int
    threads: int
    bufferkf: bool

    @property
    def label(self) -> str:
        """``E2T2K1``: event loops, mountpoint threads, buffered keyframe (the --configs syntax)."""
        return f"E{self.event_loops}T{self.threads}K{int(self.bufferkf)}"

    def gateway_env(self) -> list[str]:
        """What the gateway is told, as an operator would: its own settings."""
        return [f"WHIP_GATEWAY_MOUNTPOINT_THREADS={self.threads}",
                f"WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME={str(self.bufferkf).lower()}"]


# The managed defaults when this bench was written (gateway/config.py).
DEFAULTS = Config(2, 2, True)


def parse_config(text: str) -> Config:
    match = CONFIG_RE.match(text.strip().upper())
    if not match:
        raise ValueError(f"not a configuration (E<event_loops>T<threads>K<0|1>): {text!r}")
    return Config(int(match[1]), int(match[2]), match[3] == "1")


def one_at_a_time(base: Config = DEFAULTS, loops: tuple[int, ...] = (0, 1, 2, 4),
                  threads: tuple[int, ...] = (0, 1, 2, 4)) -> list[Config]:
    """``base``, then each factor varied alone around it (the full product is 32 runs)."""
    out = [base]
    out += [Config(e, base.threads, base.bufferkf) for e in loops if e != base.event_loops]
    out += [Config(base.event_loops, t, base.bufferkf) for t in threads if t != base.threads]
    out.append(Config(base.event_loops, base.threads, not base.bufferkf))
    return out


def abba(configs: list[Config], rounds: int) -> list[Config]:
    """Run order: forward, then backward, and so on (A B C C B A ...), so that a
    drift in the machine's load falls on every configuration alike."""
    order: list[Config] = []
    for r in range(rounds):
        order += configs if r % 2 == 0 else configs[::-1]
    return order


def janus_between(samples: list[Json], name: str, t0: float, t1: float) -> tuple[float, float]:
    """Most RSS (MB) and threads of Janus ``name`` in the sampler's rows from t0 to t1."""
    rows = [s["janus"][name] for s in samples if t0 <= s["t"] <= t1 and name in s.get("janus", {})]
    rss = [r[0] for r in rows if not math.isnan(r[0])]
    threads = [r[1] for r in rows if not math.isnan(r[1])]
    return (max(rss) / 1024 if rss else float("nan"), max(threads) if threads else float("nan"))


def run_row(config: Config, figures: Json, samples: list[Json], hold: list[float]) -> Json:
    """One run's row: egress Janus CPU in the hold, per viewer and per packet; RSS, threads;
    completeness, and what the rest of the machine took meanwhile.

    CPU is egress0's utime+stime over the hold less its idle rate (publisher
    live, no viewer).  Per packet is per packet *sent* to a viewer (the
    publisher's rate times the viewers receiving): Janus encrypts and sends
    those whether or not a starved viewer process reads them.
    """
    cpu = figures["cpu"]
    cores = cpu["hold"]["egress0"] - cpu["idle"]["egress0"]
    rss, threads = janus_between(samples, "egress0", *hold)
    # Viewer handles on the node mid-hold (admin API): what Janus really sent to when
    # starved viewers' sessions ended during the hold (1000 viewers on a busy machine).
    handles = sum(figures.get("viewers_per_node") or [0])
    return {"config": config.label, "event_loops": config.event_loops,
            "threads": config.threads, "bufferkf": config.bufferkf,
            "viewers": figures["receiving"], "n": figures["n"], "pps": figures["sent_pps"],
            "cores": cores, "pct_per_viewer": figures["egress_pct_per_viewer"],
            "us_per_packet": figures["egress_us_per_sent_packet"],
            "us_per_received": figures["egress_us_per_packet"],
            "handles": handles, "us_per_handle_packet": cores / (handles * figures["sent_pps"]) * 1e6
            if handles and figures["sent_pps"] else float("nan"),
            "rss_mb": rss, "janus_threads": threads,
            "share_median": figures["share_median"], "share_min": figures["share_min"],
            "at_99": figures["at_99"], "other_cores": cpu["hold"]["*other"],
            "machine_cores": cpu["hold"]["*machine"]}


NUMERIC = ("pps", "cores", "pct_per_viewer", "us_per_packet", "us_per_received",
           "us_per_handle_packet", "rss_mb",
           "janus_threads", "share_median", "other_cores", "machine_cores")


def summarise(rows: list[Json]) -> list[Json]:
    """Per configuration (first-seen order): the median of its runs, and how many there were.

    The spread (min-max of µs per packet) comes along: on a shared machine a
    difference smaller than it is not a difference.
    """
    by: dict[str, list[Json]] = {}
    for row in rows:
        by.setdefault(row["config"], []).append(row)
    out = []
    for runs in by.values():
        merged = {k: runs[0][k] for k in ("config", "event_loops", "threads", "bufferkf", "n")}
        for key in NUMERIC:
            values = [r[key] for r in runs if not math.isnan(r.get(key, math.nan))]
            merged[key] = median(values) if values else float("nan")
        merged["share_min"] = min(r["share_min"] for r in runs)  # the worst viewer of all runs
        merged["viewers"] = min(r["viewers"] for r in runs)
        merged["at_99"] = min(r["at_99"] for r in runs)
        us = [r["us_per_packet"] for r in runs if not math.isnan(r["us_per_packet"])]
        merged["us_spread"] = (min(us), max(us)) if us else (float("nan"), float("nan"))
        merged["runs"] = len(runs)
        out.append(merged)
    return out


def table(rows: list[Json]) -> str:
    """The README's table (medians of the runs of each configuration)."""
    out = [("| config (loops/threads/kf) | runs | viewers | pkt/s | egress Janus % of a core "
            "| % per viewer | µs per packet sent (min-max) | RSS MB | threads "
            "| received: median / min, ≥ 99 % | other load, cores |"),
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lo, hi = r.get("us_spread", (r["us_per_packet"],) * 2)
        out.append(
            f"| {r['event_loops']} / {r['threads']} / {'on' if r['bufferkf'] else 'off'} "
            f"| {r.get('runs', 1)} | {r['viewers']}/{r['n']} | {fmt(r['pps'])} "
            f"| {fmt(r['cores'] * 100, 1)} | {fmt(r['pct_per_viewer'], 3)} "
            f"| {fmt(r['us_per_packet'], 1)} ({fmt(lo, 1)}-{fmt(hi, 1)}) | {fmt(r['rss_mb'])} "
            f"| {fmt(r['janus_threads'])} | {fmt(r['share_median'] * 100, 1)} % / "
            f"{fmt(r['share_min'] * 100, 1)} %, {r['at_99']} | {fmt(r['other_cores'], 2)} |")
    return "\n".join(out)
