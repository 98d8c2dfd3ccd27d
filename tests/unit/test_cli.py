"""A bad setting ends ``whip-gateway serve`` with one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVE = [sys.executable, "-m", "gateway.cli", "serve"]


@pytest.mark.parametrize("args,env,needle", [
    (["--port", "99999"], {}, "port"),
    (["--janus", "ftp://x"], {}, "--janus"),
    (["--stream-key", "nokey"], {}, "--stream-key"),
    (["--ice-server", "turn:127.0.0.1:3478"], {}, "TURN server needs username"),
    ([], {"WHIP_GATEWAY_VIDEO_CODECS": "h263"}, "video_codecs"),
    (["--config", "/nonexistent.toml"], {}, "/nonexistent.toml"),
    ([], {"WHIP_GATEWAY_JANUS_BINARY": "/nonexistent/janus"}, "install the 'janus' package"),
    (["--trusted-proxy", "proxy.local"], {}, "trusted_proxies"),
    ([], {"WHIP_GATEWAY_RATE_LIMIT_STORAGE": "mongodb://x"}, "rate_limit_storage"),
])
def test_bad_setting_is_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    result = subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=30,
                            env={"PATH": "/usr/bin:/bin", **env})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("whip-gateway: ") and needle in lines[0]
