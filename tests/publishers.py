"""Publisher shapes the integration tests and benchmarks drive: aiortc, and
aiortc dressed as OBS (RFC 9725 clients as wish-facts.md describes them)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from conformance.offers import obs_shaped  # noqa: F401  (one copy, shared with the suite)
from gateway.clients.media import TestPatternTrack, ToneTrack
from gateway.clients.whip import WhipSession, prefer_codec
from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusError


async def aiortc_publisher(
    *, video_codec: str | None = "video/VP8", audio: bool = True, video: bool = True
) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    if audio:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    if video:
        pc.addTransceiver(TestPatternTrack(), direction="sendonly")
    if video and video_codec:
        prefer_codec(pc, "video", video_codec)
    await pc.setLocalDescription(await pc.createOffer())
    return pc


async def answer(pc: RTCPeerConnection, session: WhipSession) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(session.answer or "", "answer"))


async def wait_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    if pc.connectionState != "connected":
        await asyncio.wait_for(done.wait(), timeout)
    assert pc.connectionState == "connected", pc.connectionState


async def janus_publishers(admin: JanusAdmin) -> list[dict[str, Any]]:
    """What Janus itself reports for each VideoRoom publisher handle:
    per media kind its codec and the RTP packets it received."""
    found = []
    for session_id, handles in (await admin.all_handles()).items():
        for handle_id in handles:
            try:
                info = await admin.handle_info(session_id, handle_id)
            except JanusError as exc:
                if exc.code == JanusError.NO_SUCH_HANDLE:  # freed between the listing and this call
                    continue
                raise
            plugin = info.get("plugin_specific") or {}
            if plugin.get("type") != "publisher":
                continue
            media = (info.get("webrtc") or {}).get("media") or {}
            found.append({
                "room": plugin.get("room"),
                "codecs": {s["type"]: s.get("codec") for s in plugin.get("streams", [])},
                "packets": {m["type"]: int(m["stats"]["in"]["packets"]) for m in media.values()},
            })
    return found


async def wait_for_janus_packets(admin: JanusAdmin, kinds: set[str], minimum: int = 20,
                                 timeout: float = 10.0) -> dict[str, Any]:
    """Poll Janus's own counters until every kind in ``kinds`` passed ``minimum``.

    Janus sends no event per packet, so its counters are read until they
    move; the loop is bounded by ``timeout``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: list[dict[str, Any]] = []
    while loop.time() < deadline:
        last = await janus_publishers(admin)
        if len(last) == 1 and all(last[0]["packets"].get(k, 0) >= minimum for k in kinds):
            return last[0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"Janus did not receive {kinds} media: {last}")
