"""bench/webinar.py's pure parts: percentiles per 100 joins, the timestamp barcode,
the cost fit and the sizing rows (the README's table comes from them)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from webinar_report import fit_costs, per_hundred, sizing_rows
from webinar_scenario import (
    STAMP_MOD,
    bits_stamp,
    draw_stamp,
    read_stamp,
    stamp_age_ms,
    stamp_bits,
)


def test_per_hundred_blocks_in_join_order() -> None:
    ttff = [float(i) for i in range(250)]
    ttff[5] = None  # never got a packet
    blocks = per_hundred(ttff)
    assert [b["joins"] for b in blocks] == ["1-100", "101-200", "201-250"]
    assert [b["receiving"] for b in blocks] == [99, 100, 50]
    assert blocks[1]["p50"] == pytest.approx(149.5)
    assert blocks[1]["p95"] == pytest.approx(100 + 99 * 0.95)
    assert blocks[2]["p99"] == pytest.approx(200 + 49 * 0.99)
    assert math.isnan(per_hundred([None, None])[0]["p50"])


@pytest.mark.parametrize("ms", [0, 1, 123456, STAMP_MOD - 1, STAMP_MOD + 77, 2**40 + 5])
def test_stamp_bits_round_trip(ms: int) -> None:
    assert bits_stamp(stamp_bits(ms)) == ms % STAMP_MOD


def test_a_flipped_bit_reads_as_nothing() -> None:
    bits = stamp_bits(424242)
    for i in range(len(bits)):
        flipped = list(bits)
        flipped[i] ^= 1
        assert bits_stamp(flipped) != 424242


def test_drawn_stamp_survives_noise_and_reads_back() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    luma = np.full((180, 320), 128, dtype=np.uint8)
    draw_stamp(luma, 9_876_543)
    noisy = np.clip(luma.astype(int) + rng.integers(-40, 41, luma.shape), 0, 255).astype(np.uint8)
    assert read_stamp(noisy) == 9_876_543 % STAMP_MOD


def test_stamp_age_wraps() -> None:
    assert stamp_age_ms(1005, 1000) == 5
    assert stamp_age_ms(3, STAMP_MOD - 2) == 5


def test_fit_costs_two_points_and_one() -> None:
    # 0.05 % per viewer at 0 pps, 20 µs per packet: 10 pps -> 0.07 %, 300 pps -> 0.65 %.
    us, base = fit_costs([(10, 0.07), (300, 0.65)])
    assert us == pytest.approx(20)
    assert base == pytest.approx(0.05)
    us, base = fit_costs([(100, 0.2)])
    assert (us, base) == (pytest.approx(20), 0.0)


def test_sizing_rows_count_cores_and_bandwidth() -> None:
    rows = sizing_rows(20.0, 0.0, 1250.0, audiences=(10000,), mbps=(3.0,))
    row = rows[0]
    assert row["pps"] == pytest.approx(3e6 / 8 / 1250 + 50)
    assert row["cores"] == pytest.approx(10000 * 350 * 20e-6)
    assert row["gbps"] == pytest.approx(30.5)
    assert row["nodes"] == max(math.ceil(70 / 2.8), math.ceil(30.5 / 7))
