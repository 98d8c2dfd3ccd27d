"""The flags a remote set-up needs (README: Publishing from another machine)
reach the settings and the managed Janus's config, and bad values stop
``serve`` with one line instead of a Janus that silently ignores them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import _serve_overrides, build_parser, main
from gateway.config import Settings, SettingsError, load_settings
from gateway.janus.process import JanusProcessConfig, write_configs


def settings_from(*argv: str) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    return load_settings(None, **_serve_overrides(args))


def test_nat_and_rtp_ports_reach_the_managed_janus_config(tmp_path: Path) -> None:
    settings = settings_from("--janus-nat-1-1", "203.0.113.7", "--janus-rtp-ports", "20000-20999")
    assert settings.janus_nat_1_1_mapping == "203.0.113.7"
    assert settings.janus_rtp_port_range == "20000-20999"
    write_configs(tmp_path, JanusProcessConfig(nat_1_1_mapping=settings.janus_nat_1_1_mapping,
                                               rtp_port_range=settings.janus_rtp_port_range))
    config = (tmp_path / "janus.jcfg").read_text()
    assert 'nat_1_1_mapping = "203.0.113.7"' in config
    assert 'rtp_port_range = "20000-20999"' in config


@pytest.mark.parametrize("argv,message", [
    (["--janus-nat-1-1", "my.host"], "not an IP address"),
    (["--janus-rtp-ports", "40000-30000"], "MIN < MAX"),
    (["--janus-rtp-ports", "20000"], "janus_rtp_port_range"),
    (["--tls-cert", "/nonexistent/cert.pem"], "go together"),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "readable file"),
])
def test_bad_remote_flags_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        settings_from(*argv)


def test_serve_reports_a_bad_flag_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--janus-nat-1-1", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("whip-gateway: ") and err.count("\n") == 1


def test_offer_prints_a_complete_offer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["offer", "--codec", "vp8"]) == 0
    offer = capsys.readouterr().out
    assert offer.startswith("v=0") and "a=sendonly" in offer and "VP8/90000" in offer
    assert "H264" not in offer and "a=candidate:" in offer and "a=end-of-candidates" in offer
    assert main(["offer", "--viewer"]) == 0
    viewer = capsys.readouterr().out
    assert "a=recvonly" in viewer and "a=sendonly" not in viewer and "H264/90000" in viewer
