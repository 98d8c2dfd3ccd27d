"""compose.yaml's topology without Docker: the same Janus configs and switches
as three local Janus processes, the gateway with compose's environment, and
a stream that reaches viewers on both egress nodes.

What has to differ from the containers is only what three processes in one
network namespace cannot share: the HTTP/admin ports and the Streaming
plugin's mountpoint range (each container has its own), the interface
(``v0`` instead of ``eth0``) and the NAT mapping (there is no NAT here).
Everything else (deploy/janus/*.jcfg, the RTP ranges, ICE-lite and ICE-TCP
switches, node names, roles and secrets) is read from the files.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from aiortc import RTCSessionDescription

from gateway.app import SERVER_OPTIONS, create_app
from gateway.clients.whip import WhipSession
from gateway.config import JanusNodeSettings, load_settings
from gateway.janus.admin import JanusAdmin
from gateway.janus.process import free_port
from tests.compose_files import JANUS_CONFIGS, JanusService, janus_services, load_compose
from tests.integration.test_whip import wait_stream
from tests.publishers import aiortc_publisher, answer
from tests.redis_server import redis_server
from tests.sandbox import INTERFACE
from tests.viewers import aiortc_viewer

SDP = "application/sdp"


class ComposeJanus:
    """One compose Janus service as a local process."""

    def __init__(self, service: JanusService, index: int) -> None:
        self.service = service
        self.folder = Path(tempfile.mkdtemp(prefix=f"compose-{service.name}-"))
        self.http_port, self.admin_port = free_port(), free_port()
        for source in JANUS_CONFIGS.glob("*.jcfg"):
            text = source.read_text()
            if source.name == "janus.transport.http.jcfg":
                text = re.sub(r"(?m)^(\s*)port = \d+", rf"\g<1>port = {self.http_port}", text)
                text = re.sub(r"(?m)^(\s*)admin_port = \d+",
                              rf"\g<1>admin_port = {self.admin_port}", text)
            if source.name == "janus.plugin.streaming.jcfg":
                low = 41000 + index * 1000
                text = re.sub(r'rtp_port_range = "[\d-]+"',
                              f'rtp_port_range = "{low}-{low + 999}"', text)
            (self.folder / source.name).write_text(text)
        switches = []
        for switch in service.switches:
            if switch.startswith("--nat-1-1"):
                continue
            if switch.startswith("--ice-enforce-list"):
                switch = f"--ice-enforce-list={INTERFACE}"
            switches.append(switch)
        self.command = ["janus", f"--configs-folder={self.folder}",
                        f"--config={self.folder / 'janus.jcfg'}", "--disable-colors",
                        f"--log-file={self.folder / 'janus.log'}", *switches]
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)

    def url(self, path: str) -> str:
        port = self.admin_port if path == "admin" else self.http_port
        return f"http://127.0.0.1:{port}/{path}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.folder / "janus.log").read_text()[-3000:]
            try:
                if httpx.get(self.url("janus") + "/info", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"{self.service.name} did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def compose() -> dict[str, Any]:
    return load_compose({})


@pytest.fixture
def nodes(compose: dict[str, Any]) -> Iterator[dict[str, ComposeJanus]]:
    started = {s.address: ComposeJanus(s, i) for i, s in enumerate(janus_services(compose))}
    try:
        for node in started.values():
            node.wait_ready()
        yield started
    finally:
        for node in started.values():
            node.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    with redis_server() as url:
        yield url


async def handles_with_webrtc(node: ComposeJanus, secret: str) -> int:
    """Handles on ``node`` with a PeerConnection (publishers or viewers), per Janus."""
    admin = JanusAdmin(node.url("admin"), secret)
    try:
        count = 0
        for session_id, handles in (await admin.all_handles()).items():
            for handle_id in handles:
                info = await admin.handle_info(session_id, handle_id)
                if (info.get("webrtc") or {}).get("ice", {}).get("selected-pair"):
                    count += 1
        return count
    finally:
        await admin.close()


@pytest.fixture
async def gateway(compose: dict[str, Any], nodes: dict[str, ComposeJanus],
                  redis_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The gateway with compose's environment; node URLs point at the local processes."""
    for name, value in compose["services"]["gateway"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    composed = load_settings()
    local = []
    for node in composed.janus:
        process = nodes[urlsplit(node.url).hostname or ""]
        local.append(JanusNodeSettings(**{**node.model_dump(), "url": process.url("janus"),
                                          "admin_url": process.url("admin")}))
    port = free_port()
    settings = load_settings(host="127.0.0.1", port=port, janus=local,
                             rate_limit_storage=redis_url, public_listing="details")
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                           log_level="warning", **SERVER_OPTIONS))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    app.state.url = f"http://127.0.0.1:{port}"
    try:
        yield app
    finally:
        server.should_exit = True
        await task
    for node in nodes.values():  # the gateway freed everything it made
        admin = JanusAdmin(node.url("admin"), composed.janus[0].admin_secret or "")
        try:
            assert await admin.sessions() == [], node.service.name
        finally:
            await admin.close()


async def test_stream_reaches_viewers_on_both_egress_nodes(
        gateway: Any, nodes: dict[str, ComposeJanus], http: httpx.AsyncClient) -> None:
    class Gw:  # what wait_stream needs
        url = gateway.state.url

    settings = gateway.state.settings
    secret = settings.janus[0].admin_secret
    publisher = await aiortc_publisher()
    # compose's WHIP_GATEWAY_STREAM_KEYS
    whip = WhipSession(f"{Gw.url}/whip/show", token="change-me", http=http)
    viewers = []
    try:
        posted = await whip.post_offer(publisher.localDescription.sdp)
        assert posted.status_code == 201, posted.text
        assert len(posted.headers.get_list("link")) == 2  # compose's TURN URLs, with credentials
        await answer(publisher, whip)
        await wait_stream(http, Gw, "show", live=True)  # type: ignore[arg-type]
        for _ in range(2):
            pc, frames = await aiortc_viewer()
            r = await http.post(f"{Gw.url}/whep/show", content=pc.localDescription.sdp,
                                headers={"Content-Type": SDP})
            assert r.status_code == 201, r.text
            assert "tcptype passive" in r.text  # the egress nodes' --ice-tcp took effect
            await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            viewers.append((pc, frames, r.headers["location"]))
        for _, frames, _ in viewers:
            await frames.wait(20, timeout=20)
        print("compose viewers decoded:", [frames.count for _, frames, _ in viewers])
        by_role = {}
        for node in nodes.values():
            by_role[node.service.name] = await handles_with_webrtc(node, secret or "")
        assert by_role == {"janus-ingest": 1, "janus-egress-1": 1, "janus-egress-2": 1}
        for pc, _, location in viewers:
            assert (await http.delete(location)).status_code == 200
    finally:
        for pc, _, _ in viewers:
            await pc.close()
        if whip.location:
            await whip.delete()
        await publisher.close()
    await gateway.state.egress.settled()
    await gateway.state.ingest.settled()
