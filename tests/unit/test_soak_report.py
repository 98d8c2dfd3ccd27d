"""bench/soak_report.py: a run cut short by a Janus crash still gets its report.

Issue 11: the planned kill hit a pid that an unplanned crash had already
replaced, the main phase ended early, and ``report()`` raised on a figure
that was None, so no leak figures were printed.  The report now shows a
missing figure as "missing", lists every unplanned Janus exit, and the
verdict counts them as failures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak_report  # noqa: E402  (bench/soak_report.py)
from soak_driver import describe_status  # noqa: E402

PARAMS = {"warmup": 200, "concurrency": 8, "media_share": 0.03, "max_media": 3, "streams": 500,
          "seed": 1, "settle_timeout": 15.0}


def cut_short() -> dict:
    """What a run ended by a crash leaves: no elapsed time, no RSS, no end state."""
    statuses = {op: {} for op in ("publish", "view", "trickle", "ice_restart", "delete", "drop")}
    return {
        "params": PARAMS,
        "main": {"ops": 1999, "elapsed_s": None, "ops_per_s": None, "statuses": statuses,
                 "latency_ms": {}, "fivexx_not_503": {}, "503_during_outage": 0,
                 "503_outside_outage": 4, "503_by_op": {}, "503_messages": {}, "timeouts": 0,
                 "exceptions": 0, "exception_samples": [], "unexpected_samples": []},
        "crashes": [{"role": "ingest", "pid": 4242, **describe_status(11 | 0x80),
                     "t_run_s": 31.5, "wall": "12:00:00", "phase": "main", "op": 1999,
                     "in_flight": [{"op": "ice_restart", "i": 1997, "target": "whip abcd (s1)"}]}],
        "kill_errors": [{"role": "ingest", "at_op": 1500, "error": "no live Janus"}],
    }


def test_report_of_a_run_cut_short_shows_missing_figures_and_the_crash() -> None:
    text = soak_report.report(cut_short())
    assert "could not be shown" not in text
    assert "main phase missing s, missing ops/s" in text
    assert "gateway RSS growth: missing" in text
    assert "ingest Janus 4242: SIGSEGV (core dumped)" in text
    assert "main op 1999" in text and "#1997 ice_restart whip abcd (s1)" in text


def test_report_never_raises_even_on_a_broken_section() -> None:
    results = cut_short()
    results["main"]["statuses"] = None  # a figure of the wrong shape
    text = soak_report.report(results)
    assert "could not be shown" in text
    assert "unplanned Janus exits: 1" in text  # the crash section still printed


def test_crashes_and_missing_figures_fail_the_run() -> None:
    failures = soak_report.failures_of(cut_short())
    assert "1 unplanned Janus exit(s)" in failures
    assert "planned kill(s) not done" in failures
    assert "Janus leftovers (or not measured)" in failures
    assert "RSS growth not measured" in failures


def test_wait_status_names_the_signal() -> None:
    assert describe_status(11 | 0x80) == {"signal": "SIGSEGV", "exit_code": None,
                                          "core_dumped": True}
    assert describe_status(3 << 8) == {"signal": None, "exit_code": 3, "core_dumped": False}
    assert describe_status(None)["signal"] is None
