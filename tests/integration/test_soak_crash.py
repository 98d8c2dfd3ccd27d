"""bench/soak.py reports a Janus crash instead of dying with it (issue 11).

A short soak SIGSEGVs its own ingest Janus mid-run (``--inject-crash``,
not one of its planned kills).  The run must carry on through its planned
kills (found by the node's config folder, not a remembered pid), print the
crash with its signal and operation number, keep the Janus log and the
core dump, and exit non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(400)
def test_soak_survives_and_reports_an_injected_sigsegv(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the soak needs root for its network namespace")
    out = tmp_path / "soak.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench/soak.py"), "--ops", "200", "--warmup", "10",
         "--warmup-seconds", "0", "--inject-crash", "ingest:60", "--json", str(out),
         "--crash-dir", str(tmp_path / "crashes"), "--max-seconds", "300"],
        capture_output=True, text=True, timeout=380, env=env, cwd=REPO, check=False)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    crashes = results["crashes"]
    assert len(crashes) == 1, crashes
    crash = crashes[0]
    assert crash["role"] == "ingest" and crash["signal"] == "SIGSEGV"
    assert crash["phase"] == "main" and crash["op"] >= 60
    assert Path(crash["janus_log"]).stat().st_size > 0
    assert Path(crash["core"]).is_file()  # core_dumped is unknown when read from the log
    assert crash["backtrace_top"], "gdb gave no frames"
    # The planned kills still happened, on the restarted processes.
    # Both planned kills were carried out (the restarts may be recorded in either order).
    assert sorted(e["event"]["role"] for e in results["restarts"]) == ["egress", "ingest"]
    assert all("t_kill" in e["event"] for e in results["restarts"])
    assert not results["kill_errors"]
    assert "UNPLANNED EXIT: ingest Janus" in done.stdout
    assert "unplanned Janus exits: 1" in done.stdout
    assert "1 unplanned Janus exit(s)" in done.stdout
