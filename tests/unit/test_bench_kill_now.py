"""bench/harness.kill_now, the hard cap's last resort shared by every bench:
it SIGKILLs whatever still runs, whatever kind of child it is, and skips the
ones not started yet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import kill_now  # noqa: E402


class Worker:
    killed = False

    def kill_now(self) -> None:
        self.killed = True


def test_kills_every_kind_of_child_and_skips_none() -> None:
    worker = Worker()
    janus_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    janus = SimpleNamespace(proc=janus_proc)  # what a ManagedJanus offers
    exited = SimpleNamespace(proc=subprocess.Popen([sys.executable, "-c", "pass"]))
    exited.proc.wait()
    try:
        kill_now(None, worker, janus, exited, SimpleNamespace(proc=None))
        assert worker.killed
        assert janus_proc.wait(10) == -9
        assert exited.proc.returncode == 0
    finally:
        if janus_proc.poll() is None:
            janus_proc.kill()
