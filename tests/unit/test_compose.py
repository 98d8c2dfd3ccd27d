"""compose.yaml, checked without Docker: every file it needs exists, and the
gateway, the Janus nodes, Redis and coturn agree on nodes, ports and secrets.

A mismatch here (a secret changed in one file, a port range published but
not used) is the kind of mistake that only shows as "no video" in
production; these checks make it a failing test instead.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.config import Settings, load_settings
from gateway.janus.process import JANUS_LIB_DIR, PLUGINS_KEPT, TRANSPORTS_KEPT
from tests.compose_files import (
    JANUS_CONFIGS,
    ROOT,
    conf_lines,
    janus_configs,
    janus_services,
    load_compose,
    published,
)

ENV = {"PUBLIC_IP": "203.0.113.10", "TURN_SECRET": "a-turn-secret-of-some-length"}


@pytest.fixture
def compose() -> dict:
    return load_compose(ENV)


@pytest.fixture
def settings(compose: dict, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The gateway's settings as its container would load them (env only)."""
    for name in list(os.environ):
        if name.startswith("WHIP_GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in compose["services"]["gateway"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


def test_build_contexts_and_copied_files_exist(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is None:
            assert "image" in service, name
            continue
        context = ROOT / build.get("context", ".")
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile}"
        text = re.sub(r"\\\n", " ", dockerfile.read_text())
        for line in text.splitlines():
            words = line.split()
            if words and words[0] == "COPY":
                sources = [w for w in words[1:-1] if not w.startswith("--")]
                for source in sources:
                    assert list(context.glob(source)), f"{name}: COPY {source} matches nothing"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: volume {source}"


def test_gateway_environment_is_settings(compose: dict, settings: Settings) -> None:
    fields = set(Settings.model_fields)
    for name in compose["services"]["gateway"]["environment"]:
        assert name.startswith("WHIP_GATEWAY_"), name
        assert name.removeprefix("WHIP_GATEWAY_").lower() in fields, name
    assert settings.turn_secret == ENV["TURN_SECRET"]
    assert [n.role for n in settings.janus] == ["ingest", "egress", "egress"]


def test_nodes_agree_with_janus_configs(compose: dict, settings: Settings) -> None:
    configs = janus_configs()
    http = configs["janus.transport.http.jcfg"]
    services = {s.address: s for s in janus_services(compose)}
    assert len(services) == 3
    assert {n.url.split("//")[1].split(":")[0] for n in settings.janus} == set(services)
    for node in settings.janus:
        url, admin = urlsplit(node.url), urlsplit(node.admin_url or "")
        assert (url.port, url.path) == (int(http["general"]["port"]), http["general"]["base_path"])
        assert (admin.hostname, admin.port, admin.path) == (
            url.hostname, int(http["admin"]["admin_port"]), http["admin"]["admin_base_path"])
        assert node.admin_secret == configs["janus.jcfg"]["general"]["admin_secret"]
        for plugin in ("janus.plugin.videoroom.jcfg", "janus.plugin.streaming.jcfg"):
            assert node.plugin_admin_key == configs[plugin]["general"]["admin_key"], plugin
        service = services[url.hostname or ""]
        lite = service.switch("--ice-lite") is not None
        tcp = service.switch("--ice-tcp") is not None
        # Egress nodes are ICE-lite with ICE-TCP (libnice: ICE-TCP needs ICE-lite);
        # the ingest node is full ICE.
        assert (lite, tcp) == ((True, True) if node.role == "egress" else (False, False))
        assert service.switch("--nat-1-1") == ENV["PUBLIC_IP"]


def test_published_rtp_ranges(compose: dict) -> None:
    streaming = janus_configs()["janus.plugin.streaming.jcfg"]["general"]["rtp_port_range"]
    stream_low, stream_high = (int(p) for p in streaming.split("-"))
    seen: list[tuple[int, int]] = []
    for service in janus_services(compose):
        rtp = service.rtp_range
        assert published(service.ports, "udp") == [rtp], service.name
        if service.switch("--ice-tcp") is not None:
            assert published(service.ports, "tcp") == [rtp], f"{service.name}: ICE-TCP"
        else:
            assert published(service.ports, "tcp") == [], service.name
        assert not any(low <= rtp[1] and rtp[0] <= high for low, high in seen), "overlap"
        assert rtp[1] < stream_low or rtp[0] > stream_high, "RTP and mountpoint ranges overlap"
        seen.append(rtp)


def test_plugins_and_transports(compose: dict) -> None:
    core = janus_configs()["janus.jcfg"]
    disabled = {"plugins": set(core["plugins"]["disable"].split(",")),
                "transports": set(core["transports"]["disable"].split(","))}
    for kind, kept in (("plugins", PLUGINS_KEPT), ("transports", TRANSPORTS_KEPT)):
        assert not disabled[kind] & set(kept)
        installed = JANUS_LIB_DIR / kind
        if installed.is_dir():  # the same Debian package as the image
            others = {p.name for p in installed.glob("*.so")} - set(kept)
            assert others <= disabled[kind], f"{kind} left on: {others - disabled[kind]}"
    files = {p.name for p in JANUS_CONFIGS.glob("*.jcfg")}
    assert files == {"janus.jcfg", "janus.transport.http.jcfg", "janus.plugin.videoroom.jcfg",
                     "janus.plugin.streaming.jcfg"}


def test_coturn_agrees_with_the_gateway(compose: dict, settings: Settings) -> None:
    coturn = compose["services"]["coturn"]
    mount = next(v for v in coturn["volumes"] if "turnserver.conf" in v)
    conf = conf_lines(ROOT / mount.split(":")[0])
    assert mount.split(":")[1] == coturn["command"][1]  # -c <the mounted file>
    assert "use-auth-secret" in conf
    switches = dict(s.split("=", 1) for s in coturn["command"] if s.startswith("--"))
    assert switches["--static-auth-secret"] == settings.turn_secret
    assert switches["--external-ip"].split("/") == [ENV["PUBLIC_IP"],
                                                    coturn["networks"]["media"]["ipv4_address"]]
    port = int(conf["listening-port"])
    assert sorted(u.split("?")[1] for u in settings.turn_urls) == ["transport=tcp", "transport=udp"]
    for url in settings.turn_urls:
        host_port = url.split(":", 1)[1].split("?")[0]
        assert host_port == f"{ENV['PUBLIC_IP']}:{port}", url
    relays = (int(conf["min-port"]), int(conf["max-port"]))
    assert published(coturn["ports"], "udp") == [(port, port), relays]
    assert published(coturn["ports"], "tcp") == [(port, port)]
    janus_ranges = [s.rtp_range for s in janus_services(compose)]
    assert not any(low <= relays[1] and relays[0] <= high for low, high in janus_ranges)


def test_redis_is_the_rate_limit_store(compose: dict, settings: Settings) -> None:
    redis = compose["services"]["redis"]["networks"]["media"]["ipv4_address"]
    assert urlsplit(settings.rate_limit_storage).hostname == redis


def test_addresses_are_in_the_network(compose: dict) -> None:
    import ipaddress

    subnet = ipaddress.ip_network(compose["networks"]["media"]["ipam"]["config"][0]["subnet"])
    addresses = [s["networks"]["media"]["ipv4_address"] for s in compose["services"].values()]
    assert len(set(addresses)) == len(addresses)
    assert all(ipaddress.ip_address(a) in subnet for a in addresses)


def test_public_ip_defaults_for_a_local_try() -> None:
    """Without PUBLIC_IP the files still load (127.0.0.1: one machine, no NAT)."""
    compose = load_compose({})
    assert "127.0.0.1" in compose["services"]["janus-ingest"]["command"][1]
    assert Path(ROOT / "deploy/coturn/turnserver.conf").is_file()
