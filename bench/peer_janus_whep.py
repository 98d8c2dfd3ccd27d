"""janus-whep-server (npm), the WHEP server whep_ttff.py compares the gateway with.

Meetecho's library (1.1.0: Express 5, janode 1.8) runs as its README shows:
one ``JanusWhepServer`` connected to the bench's Janus over WebSocket, one
endpoint per Streaming mountpoint, made by whoever runs it.  What it asks of
Janus per viewer, read in its ``src/whep.js``: ``attach`` to Streaming, then
``watch`` carrying the viewer's offer (Janus >= 1.1.4 answers on ``watch``;
the library checks only ``version >= 1000``, so on 1.1.2 it would take
Janus's own offer for an answer), the 201 with that answer; DELETE is one
``detach``.  Two Janus requests per POST, on one shared Janus session.

The package is installed at run time, outside the repository, into
``/var/cache/whip-gateway/bench-peers/janus-whep-server`` (npm), with the
bench's small server script (``peer_janus_whep.mjs``) copied next to its
``node_modules``.  The server process inherits the bench's network namespace.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
from harness import BenchError, Json, LoggedProcess

PACKAGE = "janus-whep-server"
VERSION = "1.1.0"
HOME = Path("/var/cache/whip-gateway/bench-peers/janus-whep-server")
SCRIPT = Path(__file__).with_name("peer_janus_whep.mjs")
BASE_PATH = "/whep"
# What one viewer costs in Janus requests, POST and DELETE (see the docstring).
JANUS_REQUESTS = {"POST": "attach + watch(offer)", "DELETE": "detach"}


def install(home: Path = HOME, timeout: float = 300.0) -> str:
    """The package in ``home`` (npm install if missing) and our script beside it; its version."""
    manifest = home / "node_modules" / PACKAGE / "package.json"
    if not manifest.is_file() or json.loads(manifest.read_text()).get("version") != VERSION:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "package.json").exists():
            (home / "package.json").write_text('{"private": true}\n')
        npm = shutil.which("npm")
        if npm is None:
            raise BenchError("npm is not installed: it is needed for the janus-whep-server side")
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", f"{PACKAGE}@{VERSION}"],
                              check=False,
                              cwd=home, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not manifest.is_file():
            raise BenchError(f"npm install {PACKAGE}@{VERSION} failed:\n{done.stderr[-2000:]}")
    shutil.copyfile(SCRIPT, home / SCRIPT.name)  # ESM finds packages from the script's folder
    return str(json.loads(manifest.read_text())["version"])


class JanusWhepPeer(LoggedProcess):
    """``node peer_janus_whep.mjs`` on one loopback port, connected to Janus's WebSocket."""

    def __init__(self, janus_ws_url: str, port: int, log_path: Path, home: Path = HOME) -> None:
        node = shutil.which("node")
        if node is None:
            raise BenchError("node is not installed: it is needed for the janus-whep-server side")
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        config = {"janus": janus_ws_url, "port": port, "basePath": BASE_PATH}
        super().__init__([node, str(home / SCRIPT.name), json.dumps(config)], None, log_path,
                         cwd=home)

    def whep_url(self, endpoint: str) -> str:
        return f"{self.url}{BASE_PATH}/endpoint/{endpoint}"

    def died(self) -> str | None:
        """None while it runs; else what a report says about it (a finding, not a crash)."""
        code = self.proc.poll()
        if code is None:
            return None
        return f"janus-whep-server exited with status {code}; its last lines:\n{self.log_tail(15)}"

    def wait_ready(self, timeout: float, poll: float = 0.1) -> None:
        """Until the library's own healthcheck answers: it exists once Janus is connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            gone = self.died()
            if gone:
                raise BenchError(gone)
            try:
                if httpx.get(f"{self.url}{BASE_PATH}/healthcheck", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        raise BenchError(f"janus-whep-server not ready within {timeout} s:\n{self.log_tail()}")

    def create_endpoint(self, endpoint: str, mountpoint: int) -> None:
        """``createEndpoint({id, mountpoint})``, as its README does, before any timing."""
        reply = httpx.post(f"{self.url}/bench/endpoints",
                           json={"id": endpoint, "mountpoint": mountpoint}, timeout=5)
        if reply.status_code != 201:
            raise BenchError(f"createEndpoint: {reply.status_code} {reply.text[:200]}")

    def destroy_endpoint(self, endpoint: str) -> None:
        reply = httpx.delete(f"{self.url}/bench/endpoints/{endpoint}", timeout=5)
        if reply.status_code != 200:
            raise BenchError(f"destroyEndpoint: {reply.status_code} {reply.text[:200]}")

    def subscribers(self) -> list[Json]:
        """The library's ``listSubscribers()``: what it still holds (0 after the DELETEs)."""
        return list(httpx.get(f"{self.url}/bench/subscribers", timeout=5).json()["subscribers"])


PROBE_PREFIX = "bench-probe "


def read_probes(log_path: Path) -> dict[str, Json]:
    """The peer's per-POST timing lines (its script's middleware), by resource id.

    ``t_app``: the POST reached the Express app; ``t_finish``: its response was
    handed to the socket; both on CLOCK_MONOTONIC, like the viewers' clocks.
    """
    found: dict[str, Json] = {}
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        if line.startswith(PROBE_PREFIX):
            record = json.loads(line[len(PROBE_PREFIX):])
            if record.get("location"):
                found[str(record["location"]).rsplit("/", 1)[-1]] = record
    return found
