"""bench/peer_janus_whep.py: janus-whep-server (npm) as whep_ttff.py runs it, for real.

On the sid Janus (1.4.x, the client-offer path the library needs) with its
WebSocket transport: the bench's script starts, an endpoint is made on a
mountpoint, an aiortc viewer's WHEP POST gets a 201 with an answer, Janus's
admin API shows the library's handle, and after the DELETE and the peer's
stop Janus holds nothing (the library's own destroy() fails in 1.1.0; the
script ends the session instead).

Skipped without node, without the package in its cache (run whep_ttff.py
--against janus-whep-server once: it installs it before entering its
namespace; the tests' namespace has no network), or without the sid chroot.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.janus_versions import sid_chroot
from tests.sandbox import INTERFACE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import peer_janus_whep
from harness import STREAMING, aiortc_offerer
from janus_direct import admin_of

MOUNTPOINT = 4242


def _skip_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (peer_janus_whep.HOME / "node_modules" / peer_janus_whep.PACKAGE).is_dir():
        return f"{peer_janus_whep.PACKAGE} not in {peer_janus_whep.HOME} (run whep_ttff.py once)"
    if not (sid_chroot() / "usr/bin/janus").is_file():
        return "no Debian sid Janus chroot (deploy/janus-sid.sh)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _handles(admin: Any) -> int:
    return int(admin.leftovers()["handles"])


async def test_janus_whep_server_answers_a_whep_post_and_leaves_nothing(tmp_path: Path) -> None:
    from aiortc import RTCSessionDescription

    peer_janus_whep.install()  # only copies the script: the package is there
    janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, websockets=True,
                                            chroot=str(sid_chroot())))
    await asyncio.to_thread(janus.start)
    peer: peer_janus_whep.JanusWhepPeer | None = None
    admin = admin_of(janus.cfg)
    try:
        admin.plugin(STREAMING, {
            "request": "create", "type": "rtp", "id": MOUNTPOINT, "permanent": False,
            "is_private": True, "media": [
                {"type": "audio", "mid": "a", "port": 0, "pt": 96, "codec": "opus"},
                {"type": "video", "mid": "v", "port": 0, "pt": 97, "codec": "vp8"}]})
        peer = peer_janus_whep.JanusWhepPeer(janus.cfg.ws_url, free_port(), tmp_path / "peer.log")
        await asyncio.to_thread(peer.wait_ready, 30)
        await asyncio.to_thread(peer.create_endpoint, "t", MOUNTPOINT)
        pc = await aiortc_offerer("recvonly")
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.post(peer.whep_url("t"), content=pc.localDescription.sdp,
                                        headers={"Content-Type": "application/sdp"})
                assert reply.status_code == 201, reply.text
                # An answer, which a standard viewer takes as one.
                await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))
                assert _handles(admin) == 1
                assert len(await asyncio.to_thread(peer.subscribers)) == 1
                gone = await http.delete(f"{peer.url}{reply.headers['location']}")
                assert gone.status_code == 200
        finally:
            await pc.close()
        assert await asyncio.to_thread(peer.subscribers) == []
        assert _handles(admin) == 0
        assert peer.stop() == 0
        assert peer.died() is not None  # stopped: what the bench would report
        probes = peer_janus_whep.read_probes(tmp_path / "peer.log")
        assert [p["status"] for p in probes.values()] == [201]
        assert admin.leftovers()["sessions"] == 0
    finally:
        if peer is not None:
            peer.stop()
        admin.plugin(STREAMING, {"request": "destroy", "id": MOUNTPOINT, "permanent": False})
        await asyncio.to_thread(janus.stop)
