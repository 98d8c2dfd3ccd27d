"""``whip-gateway config check FILE`` and the README's configuration table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.configcheck import secret_name

CHECK = [sys.executable, "-m", "gateway.cli", "config", "check"]
README = Path(__file__).parents[2] / "README.md"
SECRETS = ("op-token-0123456789abcdef", "publish-key-1", "viewer-token-1", "hunter2",
           "janus-admin-secret", "janus-api-secret", "plugin-admin-key", "turn-credential",
           "jwt-secret-0123456789")

GOOD = """
admin_token = "op-token-0123456789abcdef"
viewer_jwt_secret = "jwt-secret-0123456789"
rate_limit_storage = "redis://:hunter2@127.0.0.1:6379/0"
log_format = "json"
[stream_keys]
live = "publish-key-1"
[viewer_keys]
live = "viewer-token-1"
[[janus]]
url = "http://10.0.0.5:8088/janus"
admin_secret = "janus-admin-secret"
api_secret = "janus-api-secret"
plugin_admin_key = "plugin-admin-key"
[[ice_servers]]
url = "turn:turn.example.com"
username = "alice"
credential = "turn-credential"
"""


def run(tmp_path: Path, text: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return subprocess.run([*CHECK, str(path)], capture_output=True, text=True, timeout=30,
                          check=False, env={"PATH": "/usr/bin:/bin", **env})


def test_prints_the_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    result = run(tmp_path, GOOD, WHIP_GATEWAY_PORT="9000")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["port"] == 9000, "the environment applies, as for serve"
    assert shown["log_format"] == "json" and shown["ice_servers"][0]["username"] == "alice"
    assert shown["stream_keys"] == {"live": "***"} and shown["admin_token"] == "***"
    assert shown["janus"][0]["url"] == "http://10.0.0.5:8088/janus"
    assert shown["rate_limit_storage"] == "redis://:***@127.0.0.1:6379/0"
    for secret in SECRETS:
        assert secret not in result.stdout, secret
    assert set(shown) == set(Settings.model_fields)


@pytest.mark.parametrize("text, needle", [
    ("port = 99999\n", "port"),
    ("[[janus]]\nurl = \"ftp://x\"\n", "janus.0.url"),
    ("admin_token = \"short\"\n", "admin_token"),
    ("no_such_setting = 1\n", "no_such_setting"),
    ("port = [\n", "gateway.toml"),
])
def test_a_bad_setting_exits_2_naming_it(tmp_path: Path, text: str, needle: str) -> None:
    result = run(tmp_path, text)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("whip-gateway: ") and needle in line


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run([*CHECK, str(tmp_path / "none.toml")], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and "none.toml" in result.stderr


def test_secret_names() -> None:
    assert all(secret_name(n) for n in ("admin_token", "stream_keys", "plugin_admin_key",
                                         "viewer_jwt_secret", "credential", "turn_secret"))
    assert not any(secret_name(n) for n in ("mountpoint_buffer_keyframe", "public_listing",
                                             "username", "tls_cert"))


def test_the_readme_table_lists_every_setting() -> None:
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            listed |= set(re.findall(r"`([a-z0-9_]+)`", first_cell))
    missing = set(Settings.model_fields) - listed
    assert missing == set(), f"settings missing from README.md's configuration table: {missing}"
