"""The Janus of Debian sid (1.4.x) runs under ManagedJanus, and its
Streaming plugin takes a viewer's offer on ``watch`` — which 1.1.2 ignores."""

from __future__ import annotations

import asyncio
import secrets

from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusClient
from gateway.janus.process import ManagedJanus

STREAMING = "janus.plugin.streaming"


async def test_watch_with_viewer_offer_gets_an_answer(janus_new: ManagedJanus) -> None:
    cfg = janus_new.cfg
    client = JanusClient(cfg.api_url)
    admin = JanusAdmin(cfg.admin_url, cfg.admin_secret)
    pc = RTCPeerConnection()
    webrtcup = asyncio.Event()
    session = None
    mountpoint = None
    try:
        info = await client.info()
        assert info["version"] >= 1104, f"want Janus >= 1.1.4, got {info['version_string']}"

        session = await client.create_session()
        handle = await session.attach(STREAMING)
        mountpoint = secrets.randbelow(2**31 - 1) + 1
        created = await handle.request({
            "request": "create", "admin_key": cfg.plugin_admin_key, "type": "rtp",
            "id": mountpoint, "permanent": False,
            "media": [
                {"type": "audio", "mid": "a", "port": 0, "pt": 111, "codec": "opus"},
                {"type": "video", "mid": "v", "port": 0, "pt": 96, "codec": "vp8"},
            ],
        })
        assert created["streaming"] == "created"
        assert created["stream"]["id"] == mountpoint

        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"type": "offer", "sdp": pc.localDescription.sdp}

        event = await handle.message({"request": "watch", "id": mountpoint}, jsep=offer)
        print("watch-with-offer event:", event.data)
        assert event.jsep is not None, f"no jsep in {event.data}"
        assert event.jsep["type"] == "answer", event.jsep
        assert "m=audio" in event.jsep["sdp"] and "m=video" in event.jsep["sdp"]
        result = event.data.get("result") or {}
        # No "preparing" and no "start" round: the viewer's offer goes straight to "starting".
        assert result.get("status") == "starting", event.data

        # The answer is usable: ICE and DTLS complete, and Janus reports webrtcup.
        handle.on_event = lambda e: e.get("janus") == "webrtcup" and webrtcup.set()
        await pc.setRemoteDescription(RTCSessionDescription(**event.jsep))
        for _ in range(200):
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        assert pc.connectionState == "connected", pc.connectionState
        await asyncio.wait_for(webrtcup.wait(), 5)

        await handle.hangup()
        destroyed = await handle.request({
            "request": "destroy", "id": mountpoint, "admin_key": cfg.plugin_admin_key})
        assert destroyed == {"streaming": "destroyed", "destroyed": mountpoint} or \
            destroyed.get("destroyed") == mountpoint, destroyed
        mountpoint = None
    finally:
        await pc.close()
        if session is not None:
            if mountpoint is not None:
                await admin.message_plugin(STREAMING, {
                    "request": "destroy", "id": mountpoint, "admin_key": cfg.plugin_admin_key})
            await session.destroy()
        await client.close()
    try:
        for _ in range(20):  # destroy is immediate, but the admin view may lag a tick
            if not await admin.sessions():
                break
            await asyncio.sleep(0.05)
        assert await admin.sessions() == [], "a Janus session was left behind"
        listed = await admin.message_plugin(STREAMING, {
            "request": "list", "admin_key": cfg.plugin_admin_key})
        assert listed.get("list") == [], f"a mountpoint was left behind: {listed}"
    finally:
        await admin.close()
