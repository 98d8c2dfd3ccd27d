"""Meetecho's simple-whip-server as a bench peer: install it, run it, watch it die.

whip_setup.py compares the gateway with the WHIP server Janus's own authors
publish, run against the same Janus.  Two builds of it:

- ``simple-whip-server``: the Debian package (a 2023 snapshot: express 4 and a
  hand-written Janus WebSocket client).  Debian packs only its JavaScript; its
  npm dependencies come from the npm registry, at the versions of its own
  package.json / Debian's Depends.  Installed once, at run time, outside the
  repository (``PEERS_ROOT``).
- ``simple-whip-server-upstream``: the current code (the ``janus-whip-server``
  library on janode and express 5), from a checkout the user cloned
  (``--peer-dir``).  The library is not on the npm registry, but the checkout
  is the library itself: ``npm install`` there brings janode and express.  It
  has no REST call to make endpoints, so ``peer_simple_whip_upstream.mjs``
  wraps it with the same ``POST /whip/create`` the Debian server has.

Both need what their READMEs say, done before timing: Janus's WebSocket
transport, a VideoRoom room that exists already, an endpoint mapped to it.
The peer is fragile, and its crashes are findings, not bench failures:
``PeerServer`` keeps each incarnation's log, tells how it died, and restarts it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import httpx
from harness import GatewayProcess, Json

PEERS_ROOT = Path(os.environ.get("WHIP_GATEWAY_BENCH_PEERS",
                                 "/var/cache/whip-gateway/bench-peers"))
DEBIAN = "simple-whip-server"
UPSTREAM = "simple-whip-server-upstream"
KINDS = (DEBIAN, UPSTREAM)
# The Debian package's runtime Depends (node-express 4.18, node-body-parser
# 1.20, ...), pinned so that every run installs the same code; colors is
# pinned below its sabotaged releases.
DEBIAN_NPM_DEPS: Mapping[str, str] = {
    "async": "3.2.4", "body-parser": "1.20.1", "colors": "1.4.0", "cors": "2.8.5",
    "debug": "4.3.4", "express": "4.18.2", "websocket": "1.0.34",
}
DEBIAN_SHARE = "usr/share/simple-whip-server"
UPSTREAM_LAUNCHER = Path(__file__).resolve().parent / "peer_simple_whip_upstream.mjs"
REST = "/whip"


class PeerUnavailable(RuntimeError):
    """The peer cannot be installed or started here (what to do is in the message)."""


# --------------------------------------------------------------------------
# installing


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> None:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)  # noqa: S603
    if done.returncode != 0:
        raise PeerUnavailable(f"{' '.join(argv)} failed ({done.returncode}):\n"
                              f"{(done.stdout + done.stderr)[-2000:]}")


def debian_package_json() -> Json:
    """package.json of the bench's copy of the Debian server (its deps, pinned)."""
    return {"name": "simple-whip-server-bench", "private": True,
            "description": "Debian's simple-whip-server, for bench/whip_setup.py",
            "dependencies": dict(DEBIAN_NPM_DEPS)}


def config_shim() -> str:
    """src/config.js: server.js requires ./config.js; each run points it at its own file."""
    return "module.exports = require(process.env.SIMPLE_WHIP_CONFIG);\n"


def install_debian(dest: Path = PEERS_ROOT / DEBIAN) -> Path:
    """The Debian server's JavaScript plus its npm dependencies in ``dest``, once.

    ``apt-get download`` + ``dpkg-deb -x`` (nothing is installed system-wide,
    no service is started), then ``npm install``.  A stamp with the pinned
    dependencies says the folder is complete.
    """
    stamp = dest / ".bench-installed"
    wanted = json.dumps(debian_package_json(), sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    for tool in ("apt-get", "dpkg-deb", "npm", "node"):
        if shutil.which(tool) is None:
            raise PeerUnavailable(f"installing {DEBIAN} needs {tool}")
    with tempfile.TemporaryDirectory(prefix="swsdeb-") as tmp:
        work = Path(tmp)
        try:
            _run(["apt-get", "download", DEBIAN], work, 180)
        except PeerUnavailable:  # the package lists may be missing
            _run(["apt-get", "update"], work, 300)
            _run(["apt-get", "download", DEBIAN], work, 180)
        deb = next(work.glob(f"{DEBIAN}_*.deb"))
        _run(["dpkg-deb", "-x", str(deb), "root"], work)
        share = work / "root" / DEBIAN_SHARE
        if dest.exists():
            shutil.rmtree(dest)
        (dest / "src").mkdir(parents=True)
        for name in ("server.js", "whip-janus.js"):
            shutil.copy(share / "src" / name, dest / "src" / name)
        # served statically from the cwd (the demo page; its libraries are links)
        shutil.copytree(share / "web", dest / "web", symlinks=True)
        (dest / "DEBIAN_VERSION").write_text(deb.name.split("_")[1] + "\n")
    (dest / "src" / "config.js").write_text(config_shim())
    (dest / "package.json").write_text(json.dumps(debian_package_json(), indent=2) + "\n")
    _run(["npm", "install", "--no-audit", "--no-fund", "--omit=dev"], dest)
    stamp.write_text(wanted)
    return dest


# Dependencies of janus-whip-server that the npm registry does not have; the
# library imports them at start but uses them only for other Janus plugins
# than the VideoRoom, so an empty module stands in.
NOT_ON_NPM = ("janode-ndi",)


def upstream_dependencies(manifest: Json) -> dict[str, str]:
    """The checkout's runtime dependencies that npm can install."""
    deps = dict(manifest.get("dependencies") or {})
    return {name: spec for name, spec in deps.items() if name not in NOT_ON_NPM}


def write_stub(node_modules: Path, name: str) -> None:
    folder = node_modules / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps(
        {"name": name, "version": "0.0.0-bench-stub", "type": "module", "main": "index.js",
         "description": "not on the npm registry; stands in for it in bench/whip_setup.py"}) + "\n")
    (folder / "index.js").write_text("export default {};\n")


def install_upstream(peer_dir: Path) -> Path:
    """npm dependencies for a checkout of meetecho/simple-whip-server, if not there yet.

    They are installed in a scratch folder from the checkout's own
    package.json (less ``NOT_ON_NPM``, which get a stub) and moved into the
    checkout's node_modules, so the checkout's files stay as cloned.
    """
    manifest_path = peer_dir / "package.json"
    if not (peer_dir / "src" / "whip.js").is_file() or not manifest_path.is_file():
        raise PeerUnavailable(f"{peer_dir} is not a checkout of meetecho/simple-whip-server "
                              "(no src/whip.js + package.json)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("name") != "janus-whip-server":
        raise PeerUnavailable(f"{manifest_path} is not the janus-whip-server library")
    if (peer_dir / "node_modules" / "janode").is_dir():
        return peer_dir
    with tempfile.TemporaryDirectory(prefix="swsup-") as tmp:
        work = Path(tmp)
        (work / "package.json").write_text(json.dumps(
            {"name": "janus-whip-server-deps", "private": True,
             "dependencies": upstream_dependencies(manifest)}) + "\n")
        _run(["npm", "install", "--no-audit", "--no-fund", "--omit=dev"], work)
        shutil.rmtree(peer_dir / "node_modules", ignore_errors=True)
        shutil.move(str(work / "node_modules"), peer_dir / "node_modules")
    for name in NOT_ON_NPM:
        if name in (manifest.get("dependencies") or {}):
            write_stub(peer_dir / "node_modules", name)
    return peer_dir


def peer_version(kind: str, folder: Path) -> str:
    """What ran, for the report: the Debian version, or the library's version."""
    if kind == DEBIAN:
        path = folder / "DEBIAN_VERSION"
        return path.read_text().strip() if path.exists() else "?"
    manifest = json.loads((folder / "package.json").read_text())
    janode = folder / "node_modules" / "janode" / "package.json"
    jv = json.loads(janode.read_text()).get("version", "?") if janode.exists() else "?"
    return f"janus-whip-server {manifest.get('version', '?')}, janode {jv}"


# --------------------------------------------------------------------------
# configuring and running


def debian_config(ws_url: str, port: int) -> Json:
    """The Debian server's config (its /etc/simple-whip-server/config.js, as JSON)."""
    return {"janus": {"address": ws_url}, "port": port, "rest": REST, "allowTrickle": True,
            "strictETags": False, "iceServers": []}


def peer_command(kind: str, folder: Path, workdir: Path, ws_url: str,
                 port: int) -> tuple[list[str], dict[str, str], Path]:
    """(argv, environment, cwd) to run one peer on ``port`` against ``ws_url``."""
    node = shutil.which("node") or "node"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBUG")}
    env["NODE_ENV"] = "production"  # as Debian's systemd unit runs it
    if kind == DEBIAN:
        config = workdir / "simple-whip-server.config.json"
        config.write_text(json.dumps(debian_config(ws_url, port), indent=2) + "\n")
        env["SIMPLE_WHIP_CONFIG"] = str(config)
        return [node, "src/server.js"], env, folder
    env.update({"PEER_DIR": str(folder), "JANUS_WS": ws_url, "PORT": str(port)})
    return [node, str(UPSTREAM_LAUNCHER), "--janode-log=warn"], env, folder


class PeerProcess(GatewayProcess):
    """One incarnation of the peer: a node process with its own log file."""

    name = "the peer"
    health_path = f"{REST}/healthcheck"

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path, port: int,
                 cwd: Path) -> None:
        super().__init__([], env, log_path, port, cwd=cwd, command=command)


@dataclass
class Crash:
    """How one incarnation ended: exit code (negative: signal) and its last log lines."""

    returncode: int | None
    log_tail: str
    when: str


@dataclass
class PeerServer:
    """The peer across restarts: its endpoints, its crashes, its logs.

    Endpoint ``bench-e<i>`` publishes to ``rooms[i]``, a room the bench
    created (one each, or one shared room repeated); with ``labels`` each
    gets its own display name, without, the server's default, which is the
    same for every endpoint of a room ("WHIP Publisher <room>", as the
    README's example leaves it).  After a restart the endpoints are made
    again (the peer keeps them in memory only).
    """

    kind: str
    folder: Path
    workdir: Path
    ws_url: str
    port: int
    rooms: list[int]
    labels: bool = True
    # Janus's session ids now (admin ``list_sessions``): the ones that appear
    # while an incarnation starts are its own, for the report of what it left.
    list_sessions: Callable[[], list[int]] | None = None
    proc: PeerProcess | None = None
    crashes: list[Crash] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    janus_sessions: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint_ids(self) -> list[str]:
        return [f"bench-e{i}" for i in range(len(self.rooms))]

    def start(self, timeout: float = 30.0) -> None:
        """Start an incarnation, wait for its health check, make the endpoints (untimed)."""
        command, env, cwd = peer_command(self.kind, self.folder, self.workdir, self.ws_url,
                                         self.port)
        log = self.workdir / f"{self.kind}-{len(self.logs)}.log"
        self.logs.append(log)
        before = set(self.list_sessions()) if self.list_sessions else set()
        self.proc = PeerProcess(command, env, log, self.port, cwd)
        self.proc.wait_healthy(timeout)
        if self.list_sessions:
            self.janus_sessions += sorted(set(self.list_sessions()) - before)
        for endpoint, room in zip(self.endpoint_ids(), self.rooms):
            body: Json = {"id": endpoint, "room": room}
            if self.labels:
                body["label"] = endpoint
            reply = httpx.post(f"{self.url}{REST}/create", timeout=5, json=body)
            if reply.status_code != 200:
                raise PeerUnavailable(f"{REST}/create {endpoint}: {reply.status_code} "
                                      f"{reply.text[:200]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    def check(self, when: str) -> bool:
        """After a block: if the peer died, note how and start it again.  True if it had died."""
        if self.proc is None or self.alive():
            return False
        self.crashes.append(Crash(self.proc.proc.returncode, self.proc.log_tail(15), when))
        self.proc.stop(1)
        self.start()
        return True

    def stop(self) -> int | None:
        return self.proc.stop(5) if self.proc is not None else None

    def kill_now(self) -> None:
        if self.proc is not None:
            self.proc.kill_now()


# --------------------------------------------------------------------------
# what the peer got wrong, for the report


def error_kind(message: str) -> str:
    """A failure, without what differs per request, so that alike ones count together."""
    for marker in ("POST ", "DELETE "):
        if message.startswith(marker):
            head, _, rest = message.partition(": ")
            return f"{marker.strip()} {rest}"[:160]
    return message[:160]


def crash_cause(log_tail: str) -> str:
    """A Node crash in one line: the source line it names and the error, else the last lines."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    error = next((line for line in lines if re.match(r"^\w*Error\b", line)), "")
    where = next((line.rsplit("/", 1)[-1] for line in lines if re.search(r"\.js:\d+$", line)), "")
    if error:
        return f"{where} {error}".strip()
    return " | ".join(lines[-3:])


def findings(kind: str, survival: list[Json], crashes: list[Crash],
             leftovers: Mapping[str, Any] | None) -> list[str]:
    """The lines that say what the peer survived and what it left behind."""
    out = [f"{kind}: what it survived (untimed rounds, DELETE after each):"]
    for row in survival:
        errors = ", ".join(f"{n}x {e}" for e, n in sorted(row["errors"].items())) or "none"
        out.append(f"  {row['width']:>3} at once x {row['rounds']}: {row['ok']}/{row['total']} "
                   f"POSTs 201, crashes {row['crashes']}; errors: {errors}")
    out.append(f"{kind}: crashes in the whole run: {len(crashes)}")
    for crash in crashes[:5]:
        out.append(f"  {crash.when}: exit {crash.returncode}: {crash_cause(crash.log_tail)}")
    if leftovers is not None and "handles_after_timed" in leftovers:
        out.append(f"{kind}: handles it held in Janus after the timed part (all DELETEd, "
                   f"0 expected): {leftovers['handles_after_timed']}")
    if leftovers is not None and "sessions" in leftovers:
        out.append(f"{kind}: left in Janus by it before it stopped: "
                   f"{leftovers.get('handles', '?')} handles in its "
                   f"{leftovers.get('sessions', '?')} sessions; after it stopped: "
                   f"{leftovers.get('sessions_after_stop', '?')} sessions")
    return out


def wait_for(predicate: Any, timeout: float, poll: float = 0.1) -> bool:
    """Poll ``predicate`` until true or ``timeout`` (for Janus freeing a closed socket's session)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
