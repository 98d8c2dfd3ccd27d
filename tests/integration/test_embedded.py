"""``whip-gateway serve`` with no Janus configured: the embedded default.

The gateway starts its own Janus, restarts it when it dies, and stops it on
exit.  This drives the real console script as a user would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from gateway.clients.whip import WhipSession
from gateway.janus.process import free_port
from tests.publishers import aiortc_publisher, answer, obs_shaped, wait_connected

SERVE = [sys.executable, "-m", "gateway.cli", "serve"]


def janus_children(pid: int) -> list[int]:
    """Janus processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and comm == "janus":
            found.append(int(entry.name))
    return found


async def wait_health(http: httpx.AsyncClient, url: str, ok: bool, timeout: float = 15.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    body: dict = {}
    while asyncio.get_running_loop().time() < deadline:
        try:
            r = await http.get(f"{url}/healthz")
            body = r.json()
            if (r.status_code == 200) == ok:
                return body
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"/healthz never became ok={ok}: {body}")


async def publish_obs(http: httpx.AsyncClient, url: str) -> None:
    pc = await aiortc_publisher(video_codec="video/H264")
    whip = WhipSession(f"{url}/whip/live", token="k", http=http)
    try:
        r = await whip.post_offer(obs_shaped(pc.localDescription.sdp))
        assert r.status_code == 201, r.text
        await answer(pc, whip)
        await wait_connected(pc)
        deadline = asyncio.get_running_loop().time() + 10
        while not (await http.get(f"{url}/api/streams")).json()["streams"].get("live", {}).get("live"):
            assert asyncio.get_running_loop().time() < deadline, "stream never went live"
            await asyncio.sleep(0.1)
        assert (await whip.delete()).status_code == 200
    finally:
        await pc.close()


def _ice_lite(pid: int) -> bool:
    """Whether the Janus with ``pid`` was configured ICE-lite (its -C file says)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    config = Path(args[args.index(b"-C") + 1].decode())
    return "ice_lite = true" in config.read_text()


async def watch_once(http: httpx.AsyncClient, url: str) -> None:
    """A WHEP viewer on the embedded egress node decodes frames."""
    from aiortc import RTCSessionDescription

    from tests.viewers import aiortc_viewer

    publisher = await aiortc_publisher()
    whip = WhipSession(f"{url}/whip/live", token="k", http=http)
    pc, frames = await aiortc_viewer()
    try:
        assert (await whip.post_offer(publisher.localDescription.sdp)).status_code == 201
        await answer(publisher, whip)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            r = await http.post(f"{url}/whep/live", content=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"})
            if r.status_code != 409:
                break
            assert asyncio.get_running_loop().time() < deadline, "stream never went live"
            await asyncio.sleep(0.2)
        assert r.status_code == 201, r.text
        await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
        await frames.wait(10)
        assert (await http.delete(r.headers["location"])).status_code == 200
        assert (await whip.delete()).status_code == 200
    finally:
        await pc.close()
        await publisher.close()


async def test_embedded_janus_is_started_restarted_and_stopped() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        *SERVE, "--port", str(port), "--janus-interface", "v0", "--stream-key", "live=k",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            health = await wait_health(http, url, ok=True)
            assert {name: (n["role"], n["version"]) for name, n in health["nodes"].items()} == {
                "ingest": ("ingest", "1.1.2"), "egress": ("egress", "1.1.2")}
            pids = janus_children(proc.pid)
            assert len(pids) == 2, "an ingest Janus and an ICE-lite egress Janus"
            assert sorted(_ice_lite(pid) for pid in pids) == [False, True]
            await publish_obs(http, url)
            await watch_once(http, url)

            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            await wait_health(http, url, ok=False, timeout=5)
            await wait_health(http, url, ok=True)
            now = janus_children(proc.pid)
            assert len(now) == 2 and killed not in now
            restarted = now[-1]
            await publish_obs(http, url)
            await watch_once(http, url)

        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down cleanly, then re-raises the signal it caught
        assert await asyncio.wait_for(proc.wait(), 15) in (0, -signal.SIGTERM)
        assert janus_children(proc.pid) == []
        assert not Path(f"/proc/{restarted}").exists() or "janus" not in Path(
            f"/proc/{restarted}/comm").read_text()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        output = (await proc.stdout.read()).decode(errors="replace") if proc.stdout else ""
        if sys.exc_info()[0] is not None:
            print(output)
