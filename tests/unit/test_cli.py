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


def test_serve_needs_no_webrtc_client_extra() -> None:
    """aiortc and PyAV are the ``[clients]`` extra: the server must import without them,
    and a client command must say which extra it needs instead of a traceback."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "for name in ('aiortc', 'av'): sys.modules[name] = None\n"  # import of either now fails
        "import gateway.app, gateway.backend, gateway.cli\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'aiortc' else spec(name, *a)\n"
        "print('imported')\n"
        "sys.exit(gateway.cli.main(['play', 'http://127.0.0.1:9/whep/x']))\n"
    )
    out = subprocess.run([sys.executable, "-c", "from importlib.util import find_spec as spec\n" + probe],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "imported", out.stderr
    assert out.returncode == 2
    assert "pip install 'whip-gateway[clients]'" in out.stderr
