"""bench/egress_cost.py's pure parts: configurations, ABBA order, a run's row, the summary."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from egress_cost_report import (
    DEFAULTS,
    Config,
    abba,
    janus_between,
    one_at_a_time,
    parse_config,
    run_row,
    summarise,
    table,
)


def test_parse_config_round_trips_its_label() -> None:
    config = parse_config("e4t0k0")
    assert config == Config(4, 0, False)
    assert parse_config(config.label) == config
    with pytest.raises(ValueError):
        parse_config("E2T2")


def test_gateway_is_told_through_its_own_settings() -> None:
    assert Config(0, 4, False).gateway_env() == [
        "WHIP_GATEWAY_MOUNTPOINT_THREADS=4", "WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME=false"]


def test_one_at_a_time_varies_each_factor_alone_around_the_base() -> None:
    configs = one_at_a_time(DEFAULTS)
    assert configs[0] == DEFAULTS
    assert len(configs) == len(set(configs)) == 8
    for c in configs[1:]:
        changed = [c.event_loops != DEFAULTS.event_loops, c.threads != DEFAULTS.threads,
                   c.bufferkf != DEFAULTS.bufferkf]
        assert sum(changed) == 1


def test_abba_runs_forward_then_backward() -> None:
    a, b, c = Config(0, 0, False), Config(1, 0, False), Config(2, 0, False)
    assert abba([a, b, c], 3) == [a, b, c, c, b, a, a, b, c]
    assert abba([a, b], 1) == [a, b]


def sample(t: float, rss_kb: float, threads: float) -> dict:
    return {"t": t, "janus": {"egress0": (rss_kb, threads)}}


def test_janus_between_takes_the_most_within_the_window() -> None:
    samples = [sample(0, 9999 * 1024, 99), sample(1, 20 * 1024, 10), sample(2, 30 * 1024, 12),
               sample(3, float("nan"), float("nan")), sample(9, 9999 * 1024, 99)]
    assert janus_between(samples, "egress0", 1, 3) == (30.0, 12)
    assert all(math.isnan(x) for x in janus_between(samples, "egress0", 4, 5))


def figures(egress_hold: float, egress_idle: float = 0.01) -> dict:
    return {"cpu": {"hold": {"egress0": egress_hold, "*other": 1.5, "*machine": 1.9},
                    "idle": {"egress0": egress_idle}},
            "receiving": 100, "n": 100, "sent_pps": 10.0, "egress_pct_per_viewer": 0.08,
            "egress_us_per_sent_packet": 80.0, "egress_us_per_packet": 81.0,
            "share_median": 1.0, "share_min": 0.99, "at_99": 100, "viewers_per_node": [50]}


def test_run_row_is_the_egress_cpu_above_idle_with_memory_and_load() -> None:
    row = run_row(Config(2, 2, True), figures(0.09), [sample(5, 40 * 1024, 7)], [4, 6])
    assert row["config"] == "E2T2K1"
    assert row["cores"] == pytest.approx(0.08)
    assert (row["rss_mb"], row["janus_threads"]) == (40.0, 7)
    assert row["other_cores"] == 1.5 and row["us_per_packet"] == 80.0
    assert row["handles"] == 50  # starved viewers gone mid-hold: per packet to those left
    assert row["us_per_handle_packet"] == pytest.approx(0.08 / (50 * 10.0) * 1e6)


def test_summarise_takes_medians_per_config_in_first_seen_order() -> None:
    a, b = Config(2, 2, True), Config(0, 2, True)
    rows = [run_row(a, figures(0.09), [], [0, 1]), run_row(b, figures(0.30), [], [0, 1]),
            run_row(b, figures(0.20), [], [0, 1]), run_row(a, figures(0.11), [], [0, 1])]
    rows[1]["us_per_packet"], rows[2]["us_per_packet"] = 300.0, 200.0
    rows[2]["viewers"], rows[2]["share_min"] = 97, 0.0
    out = summarise(rows)
    assert [r["config"] for r in out] == ["E2T2K1", "E0T2K1"]
    assert out[0]["cores"] == pytest.approx(0.09) and out[0]["runs"] == 2
    assert out[1]["us_per_packet"] == pytest.approx(250.0)
    assert out[1]["us_spread"] == (200.0, 300.0)
    assert out[1]["viewers"] == 97 and out[1]["share_min"] == 0.0  # the worst run's
    assert math.isnan(out[0]["rss_mb"])
    text = table(out)
    assert "| 0 / 2 / on | 2 | 97/100 |" in text and "250.0 (200.0-300.0)" in text
