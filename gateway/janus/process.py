"""A Janus process that the gateway (or a test) starts, watches and stops.

This is the embedded default: with no Janus URL configured, ``serve`` runs
the distribution's ``janus`` binary with configs written into a private
folder, on free loopback ports, with only the VideoRoom and Streaming
plugins and the HTTP transport.  The same class starts Janus for the
integration tests, so what the tests run is what users run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

JANUS_LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGINS_KEPT = ("libjanus_videoroom.so", "libjanus_streaming.so")
TRANSPORTS_KEPT = ("libjanus_http.so",)
WEBSOCKETS = "libjanus_websockets.so"


def _disabled(kind: str, kept: tuple[str, ...], root: Path = Path("/")) -> str:
    """Every module of ``kind`` that Janus would load, except the kept ones.

    Janus has no allow-list, only ``disable``; so list what is installed
    (under ``root``, for a Janus that runs in a chroot).
    """
    lib = root / JANUS_LIB_DIR.relative_to("/")
    candidates = [lib / kind, *(root / "usr/lib").glob(f"*/janus/{kind}")]
    names: set[str] = set()
    for folder in candidates:
        if folder.is_dir():
            names.update(p.name for p in folder.glob("*.so"))
    return ",".join(sorted(names - set(kept)))


# Ports handed out for servers that bind them later, maybe in another
# process: below the kernel's ephemeral range (32768-60999 on Linux), so that
# neither a port the kernel gives another process's bind(0) nor a client
# connection's source port can land on one before its server binds it.  A
# soak run lost its gateway that way: the gateway's managed Janus was given
# the very port the bench had just chosen for the gateway.
PORT_RANGE = range(10000, 20000)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now, from ``PORT_RANGE``."""
    for _ in range(500):
        port = random.choice(PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free TCP port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1} on {host}")


@dataclass
class JanusProcessConfig:
    binary: str = "/usr/bin/janus"
    host: str = "127.0.0.1"
    http_port: int = 0  # 0: pick a free port
    admin_port: int = 0
    admin_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    plugin_admin_key: str = field(default_factory=lambda: secrets.token_hex(16))
    rtp_port_range: str = "20000-40000"
    streaming_port_range: str = "40001-50000"
    ice_enforce_list: str | None = None
    ice_ignore_list: str | None = "vmnet"
    ice_lite: bool = False
    # ICE over TCP as well (RFC 6544), for viewers whose firewall drops UDP;
    # libnice does it only in ICE-lite mode, so it is written only then.
    ice_tcp: bool = False
    nat_1_1_mapping: str | None = None
    stun_server: str | None = None  # host:port
    session_timeout: int = 60
    debug_level: int = 4
    event_loops: int = 0
    # Janus's WebSocket transport as well, on ``ws_port`` (0: a free port):
    # for clients that talk to Janus over WebSocket (janode-based peers in
    # bench/, or the gateway's own WebSocket client).
    websockets: bool = False
    ws_port: int = 0
    # Run Janus inside this root (e.g. the Debian sid one of deploy/janus-sid.sh):
    # ``binary`` is then a path inside it.  The network namespace is shared.
    chroot: str | None = None

    def resolved(self) -> JanusProcessConfig:
        """A copy with free ports chosen for the ones left at 0."""
        out = JanusProcessConfig(**self.__dict__)
        out.http_port = self.http_port or free_port(self.host)
        out.admin_port = self.admin_port or free_port(self.host)
        if self.websockets:
            out.ws_port = self.ws_port or free_port(self.host)
        return out

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.http_port}/janus"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}/admin"

    @property
    def ws_url(self) -> str:
        """The WebSocket transport's address (subprotocol ``janus-protocol``)."""
        if not self.websockets:
            raise ValueError("this Janus runs without its WebSocket transport")
        return f"ws://{self.host}:{self.ws_port}"


def write_configs(folder: Path, cfg: JanusProcessConfig) -> None:
    """Write the four .jcfg files Janus needs; every other plugin stays off."""
    nat = ["ice_keepalive_conncheck = true", f"ice_lite = {str(cfg.ice_lite).lower()}"]
    if cfg.ice_tcp and cfg.ice_lite:
        nat.append("ice_tcp = true")
    if cfg.ice_enforce_list:
        nat.append(f'ice_enforce_list = "{cfg.ice_enforce_list}"')
    elif cfg.ice_ignore_list:
        nat.append(f'ice_ignore_list = "{cfg.ice_ignore_list}"')
    if cfg.nat_1_1_mapping:
        nat.append(f'nat_1_1_mapping = "{cfg.nat_1_1_mapping}"')
    if cfg.stun_server:
        host, _, port = cfg.stun_server.rpartition(":")
        nat += [f'stun_server = "{host}"', f"stun_port = {port}"]
    general = [
        f"debug_level = {cfg.debug_level}",
        f'admin_secret = "{cfg.admin_secret}"',
        f"session_timeout = {cfg.session_timeout}",
        "protected_folders = []",
    ]
    if cfg.event_loops:
        general.append(f"event_loops = {cfg.event_loops}")
    root = Path(cfg.chroot or "/")
    transports = TRANSPORTS_KEPT + ((WEBSOCKETS,) if cfg.websockets else ())
    files = {
        "janus.jcfg": _jcfg(
            general=general,
            media=[f'rtp_port_range = "{cfg.rtp_port_range}"'],
            nat=nat,
            plugins=[f'disable = "{_disabled("plugins", PLUGINS_KEPT, root)}"'],
            transports=[f'disable = "{_disabled("transports", transports, root)}"'],
        ),
        "janus.transport.http.jcfg": _jcfg(
            general=["json = \"compact\"", "http = true", f"port = {cfg.http_port}",
                     f'ip = "{cfg.host}"', 'base_path = "/janus"', "https = false"],
            admin=["admin_http = true", f"admin_port = {cfg.admin_port}",
                   f'admin_ip = "{cfg.host}"', 'admin_base_path = "/admin"', "admin_https = false"],
        ),
        "janus.plugin.videoroom.jcfg": _jcfg(
            general=[f'admin_key = "{cfg.plugin_admin_key}"', "lock_rtp_forward = true"],
        ),
        "janus.plugin.streaming.jcfg": _jcfg(
            general=[f'admin_key = "{cfg.plugin_admin_key}"',
                     f'rtp_port_range = "{cfg.streaming_port_range}"'],
        ),
    }
    if cfg.websockets:
        files["janus.transport.websockets.jcfg"] = _jcfg(
            general=['json = "compact"', "ws = true", f"ws_port = {cfg.ws_port}",
                     f'ws_ip = "{cfg.host}"', "wss = false"],
            admin=["admin_ws = false", "admin_wss = false"],
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _jcfg(**sections: list[str]) -> str:
    out = []
    for name, lines in sections.items():
        out.append(f"{name}: {{")
        out.extend(f"\t{line}" for line in lines)
        out.append("}")
    return "\n".join(out) + "\n"


def _raise_open_files() -> None:
    """Each viewer costs Janus about two file descriptors: lift the soft
    open-files limit to the hard one so a webinar does not stop at 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY
                                                    else max(soft, 65536), hard))


class JanusNotReady(RuntimeError):
    pass


class ManagedJanus:
    """One supervised Janus process with private configs."""

    def __init__(self, cfg: JanusProcessConfig, workdir: Path | None = None) -> None:
        if cfg.chroot:
            binary = Path(cfg.chroot) / cfg.binary.lstrip("/")
            if not (binary.is_file() and os.access(binary, os.X_OK)):
                raise FileNotFoundError(
                    f"Janus binary {str(binary)!r} not found; run deploy/janus-sid.sh"
                )
        elif not shutil.which(cfg.binary):
            raise FileNotFoundError(
                f"Janus binary {cfg.binary!r} not found; install the 'janus' package"
            )
        self.cfg = cfg.resolved()
        self._own_dir = workdir is None
        # In a chroot, the configs and the log must be inside it.
        tmp = Path(cfg.chroot) / "tmp" if cfg.chroot else None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="whip-gateway-janus-", dir=tmp))
        if cfg.chroot:
            self._inside(self.workdir)  # raises if the workdir is outside the chroot
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = False

    @property
    def log_path(self) -> Path:
        return self.workdir / "janus.log"

    def _inside(self, path: Path) -> str:
        """``path`` as Janus sees it: relative to the chroot, if any."""
        if not self.cfg.chroot:
            return str(path)
        return "/" + str(path.resolve().relative_to(Path(self.cfg.chroot).resolve()))

    def launch(self) -> None:
        write_configs(self.workdir, self.cfg)
        command = [
            self.cfg.binary, "-F", self._inside(self.workdir),
            "-C", self._inside(self.workdir / "janus.jcfg"), "--disable-colors",
            "-L", self._inside(self.log_path), "-d", str(self.cfg.debug_level),
        ]
        if self.cfg.chroot:  # chroot execs Janus, so proc.pid stays Janus's
            command = ["chroot", self.cfg.chroot, *command]
        log.info("starting Janus: %s", " ".join(command))
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=_raise_open_files,
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise JanusNotReady(f"Janus exited early; see {self.log_path}")
            try:
                if httpx.get(f"{self.cfg.api_url}/info", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise JanusNotReady(f"Janus did not answer /info in {timeout} s; see {self.log_path}")

    def start(self, timeout: float = 10.0) -> None:
        self.launch()
        self.wait_ready(timeout)

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        self._stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def supervise(self, on_restart: "asyncio.Event | None" = None) -> None:
        """Restart Janus whenever it dies, with a short back-off, until stop()."""
        backoff = 0.2
        while not self._stopping:
            await asyncio.sleep(0.25)
            if self._stopping or self.running():
                backoff = 0.2
                continue
            code = self.proc.returncode if self.proc else None
            log.error("Janus exited (code %s); restarting in %.1f s", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            if self._stopping:
                return
            try:
                self.launch()
                await asyncio.to_thread(self.wait_ready)
                self.restarts += 1
                log.info("Janus is back (restart %d)", self.restarts)
                if on_restart is not None:
                    on_restart.set()
            except (JanusNotReady, OSError) as exc:
                log.error("Janus restart failed: %s", exc)
