"""deploy/gateway.sh and Debian's own janus.service.

``apt-get install janus`` enables a stock Janus whose HTTP API listens on
every interface without a secret.  The script must stop, disable and mask
it where systemd runs, and leave systemd alone where it does not.  These
tests source the script in bash and call its function with a fake
``systemctl`` first on PATH that records its arguments.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "gateway.sh"

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "$CALLS"
if [ "$1" = is-enabled ]; then cat "$STATE"; exit 0; fi
if [ "$1" = mask ]; then echo masked > "$STATE"; fi
exit 0
"""


def run_function(tmp_path: Path, function: str, *, systemd: bool, state: str = "enabled",
                 args: str = "") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Source the script and call one of its functions with the fake systemctl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    run_dir = tmp_path / "run-systemd-system"
    if systemd:
        run_dir.mkdir(exist_ok=True)
    calls, state_file = tmp_path / "calls", tmp_path / "state"
    state_file.write_text(state + "\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls),
           "STATE": str(state_file), "SYSTEMD_RUN_DIR": str(run_dir)}
    env.pop("WHIP_GATEWAY_JANUS", None)
    done = subprocess.run(["bash", "-c", f'source "{SCRIPT}"; {function} {args}'], env=env,
                          capture_output=True, text=True, timeout=30)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_stock_janus_is_stopped_disabled_and_masked_under_systemd(tmp_path: Path) -> None:
    done, calls = run_function(tmp_path, "silence_stock_janus", systemd=True)
    assert done.returncode == 0, done.stderr
    assert calls == ["is-enabled janus.service", "stop janus.service",
                     "disable janus.service", "mask janus.service"]
    assert "masking Debian's janus.service" in done.stderr


def test_an_already_masked_unit_is_left_alone(tmp_path: Path) -> None:
    done, calls = run_function(tmp_path, "silence_stock_janus", systemd=True, state="masked")
    assert done.returncode == 0, done.stderr
    assert calls == ["is-enabled janus.service"]
    assert done.stderr == ""


def test_without_systemd_systemctl_is_never_called(tmp_path: Path) -> None:
    done, calls = run_function(tmp_path, "silence_stock_janus", systemd=False)
    assert done.returncode == 0, done.stderr
    assert calls == []


def test_a_gateway_on_an_outside_janus_keeps_the_unit(tmp_path: Path) -> None:
    """``serve --janus URL`` may point at that very stock Janus: hands off."""
    outside, _ = run_function(tmp_path, "uses_managed_janus", systemd=True,
                              args="--host 0.0.0.0 --janus http://janus.example:8088/janus")
    assert outside.returncode == 1
    managed, _ = run_function(tmp_path, "uses_managed_janus", systemd=True, args="--host 0.0.0.0")
    assert managed.returncode == 0
