"""Reading compose.yaml and deploy/janus/*.jcfg the way Docker and Janus would.

Shared by tests/unit/test_compose.py (static agreement between the files)
and tests/integration/test_compose_topology.py (the same Janus configs and
switches run as local processes).  There is no Docker engine here, so
compose's variable interpolation is done by ``interpolate``: ``${VAR}``,
``${VAR:-default}`` and ``${VAR:?message}``, from a given environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
JANUS_CONFIGS = ROOT / "deploy" / "janus"
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        def one(match: re.Match[str]) -> str:
            name, op, arg = match["name"], match["op"], match["arg"]
            if env.get(name):
                return env[name]
            if op == ":?":
                raise KeyError(f"{name}: {arg}")
            return arg or ""
        return _VARIABLE.sub(one, value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """compose.yaml with YAML anchors merged and variables interpolated."""
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})  # type: ignore[no-any-return]


def parse_jcfg(text: str) -> dict[str, dict[str, str]]:
    """A .jcfg's flat sections as {section: {key: value}} (values unquoted)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            current = sections.setdefault(line[:-1].rstrip(" :"), {})
        elif line == "}":
            current = None
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip().strip('"')
    return sections


def janus_configs() -> dict[str, dict[str, dict[str, str]]]:
    return {p.name: parse_jcfg(p.read_text()) for p in sorted(JANUS_CONFIGS.glob("*.jcfg"))}


@dataclass
class JanusService:
    """One Janus node of compose.yaml: its address and its command-line switches."""

    name: str
    address: str
    switches: list[str]
    ports: list[str]

    def switch(self, name: str) -> str | None:
        for s in self.switches:
            if s == name:
                return ""
            if s.startswith(name + "="):
                return s.split("=", 1)[1]
        return None

    @property
    def rtp_range(self) -> tuple[int, int]:
        low, high = (self.switch("--rtp-port-range") or "").split("-")
        return int(low), int(high)


def janus_services(compose: dict[str, Any]) -> list[JanusService]:
    found = []
    for name, service in compose["services"].items():
        if service.get("build", {}).get("dockerfile") == "deploy/janus/Dockerfile":
            networks = service.get("networks", {})
            address = next(iter(networks.values()))["ipv4_address"]
            found.append(JanusService(name, address, service.get("command", []),
                                      service.get("ports", [])))
    return found


def published(ports: list[str], protocol: str) -> list[tuple[int, int]]:
    """Host ranges published 1:1 for ``protocol`` ("udp"/"tcp"); asserts host == container."""
    ranges = []
    for entry in ports:
        mapping, _, proto = entry.partition("/")
        if (proto or "tcp") != protocol:
            continue
        host, _, container = mapping.rpartition(":")
        assert host == container, f"{entry}: host and container ports differ"
        low, _, high = container.partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


def conf_lines(path: Path) -> dict[str, str]:
    """turnserver.conf: option -> value ("" for flags)."""
    options = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            options[key.strip()] = value.strip()
    return options
