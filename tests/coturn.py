"""coturn (Debian's ``turnserver``) for the tests, on the test namespace's interface.

It runs with the TURN REST scheme (``use-auth-secret``), listens for UDP
and TCP on one free port at 127.0.0.2 (``v0``), relays from a small port
range there, and may relay to loopback peers (Janus is on 127.0.0.2 too,
which coturn otherwise refuses as a loopback peer).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.janus.process import free_port
from tests.sandbox import ADDRESS

TURNSERVER = "/usr/bin/turnserver"


def available() -> bool:
    return shutil.which(TURNSERVER) is not None


@dataclass
class Coturn:
    secret: str
    host: str = ADDRESS
    port: int = 0
    relay_range: tuple[int, int] = (0, 0)
    process: subprocess.Popen[bytes] | None = None
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="coturn-")))

    @property
    def udp_url(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=udp"

    @property
    def tcp_url(self) -> str:
        return f"turn:{self.host}:{self.port}?transport=tcp"

    def start(self) -> None:
        self.port = free_port(self.host)
        self.relay_range = (49200, 49299)  # the namespace is private; busy ports are skipped
        conf = self.folder / "turnserver.conf"
        conf.write_text("\n".join([
            f"listening-ip={self.host}",
            f"relay-ip={self.host}",
            f"listening-port={self.port}",
            f"min-port={self.relay_range[0]}",
            f"max-port={self.relay_range[1]}",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            "realm=whip-gateway.test",
            "fingerprint",
            "allow-loopback-peers",
            "no-tls", "no-dtls", "no-cli", "no-rfc5780", "no-multicast-peers",
            f"log-file={self.folder / 'turn.log'}", "simple-log", "no-stdout-log",
            f"pidfile={self.folder / 'turn.pid'}",
            f"userdb={self.folder / 'turndb'}",
            "",
        ]))
        self.process = subprocess.Popen([TURNSERVER, "-c", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # TCP listener up means it is ready
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log()[-2000:]}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("turnserver did not start")

    def log(self) -> str:
        path = self.folder / "turn.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
