"""bench/setup_rate.py's pure parts: a step's figures and the first rate over the limit
(the README's setup-rate table comes from them)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from setup_rate import first_over, step_figures, table


def _record(i: int, post: float, answer: float | None, status: int | None,
            delete_status: int | None = 200) -> dict:
    return {"index": i, "t_post": post, "t_answer": answer, "status": status,
            "delete_status": delete_status if status == 201 else None,
            "error": None if status == 201 else f"POST {status}"}


def test_step_figures_cpu_per_setup_less_idle() -> None:
    records = [_record(i, i * 0.1, i * 0.1 + 0.010, 201) for i in range(10)]
    records.append(_record(10, 1.0, 1.5, 503))
    cpu = {"gateway": 0.150, "ingest": 0.020, "egress0": 0.040, "worker0": 0.5, "bench": 0.1}
    idle = {"gateway": 0.01, "ingest": 0.005, "egress0": 0.0}
    row = step_figures(records, cpu, idle, window_s=5.0, gateway="gateway")
    assert row["setups"] == 11 and row["ok"] == 10
    assert math.isclose(row["gateway_ms"], (0.150 - 0.05) * 1000 / 10)  # minus 5 s idle
    assert math.isclose(row["janus_ms"], (0.020 - 0.025 + 0.040) * 1000 / 10)
    assert math.isclose(row["loadgen_cores"], 0.1)
    assert math.isclose(row["achieved"], 9 / 0.91)  # 10 set-ups from first POST to last 201
    assert math.isclose(row["p50"], 10.0)
    assert row["max"] == 500.0  # the 503 took 500 ms
    assert row["statuses"] == {"201": 10, "503": 1}
    assert row["deletes"] == {"200": 10}


def test_first_over_takes_latency_and_failures() -> None:
    rows = [{"rate": 25.0, "p95": 20.0, "ok": 250, "setups": 250},
            {"rate": 50.0, "p95": 30.0, "ok": 499, "setups": 500},  # one failed
            {"rate": 75.0, "p95": 400.0, "ok": 750, "setups": 750}]
    assert first_over(rows, 250.0) == 50.0
    assert first_over(rows[:1], 250.0) is None
    assert first_over([{"rate": 10.0, "p95": float("nan"), "ok": 0, "setups": 0}], 250.0) == 10.0


def test_table_has_a_row_per_step() -> None:
    records = [_record(i, i * 0.1, i * 0.1 + 0.010, 201) for i in range(3)]
    row = {"side": "gateway", "rate": 25.0, "other_cores": 0.5,
           **step_figures(records, {"gateway": 0.01}, {}, 1.0, "gateway")}
    lines = table([row]).splitlines()
    assert len(lines) == 2 and "POST 201:3; DELETE 200:3" in lines[1]
