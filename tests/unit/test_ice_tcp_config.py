"""janus_ice_tcp reaches the managed egress Janus's janus.jcfg, and only in ICE-lite mode
(libnice's ICE-TCP works only there; a full-ICE node with it would fail its TCP checks)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.backend import build_backend
from gateway.config import load_settings
from gateway.janus.process import JanusProcessConfig, write_configs
from tests.compose_files import parse_jcfg


def nat_section(tmp_path: Path, cfg: JanusProcessConfig) -> dict[str, str]:
    write_configs(tmp_path, cfg)
    return parse_jcfg((tmp_path / "janus.jcfg").read_text())["nat"]


def test_written_only_with_ice_lite(tmp_path: Path) -> None:
    assert nat_section(tmp_path, JanusProcessConfig(ice_lite=True, ice_tcp=True))["ice_tcp"] == "true"
    assert "ice_tcp" not in nat_section(tmp_path, JanusProcessConfig(ice_lite=False, ice_tcp=True))
    assert "ice_tcp" not in nat_section(tmp_path, JanusProcessConfig(ice_lite=True))


def test_setting_turns_it_on_for_the_egress_node() -> None:
    on, off = build_backend(load_settings(janus_ice_tcp=True)), build_backend(load_settings())
    try:
        ingest, egress = (m.cfg for m in on.managed)
        assert (ingest.ice_lite, ingest.ice_tcp) == (False, False)
        assert (egress.ice_lite, egress.ice_tcp) == (True, True)
        assert not any(m.cfg.ice_tcp for m in off.managed)
    finally:  # nothing was started; only the work folders exist
        for managed in (*on.managed, *off.managed):
            shutil.rmtree(managed.workdir, ignore_errors=True)
