"""aiortc viewers for the WHEP tests: count decoded frames, time the first one."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from conformance.offers import with_payload_types  # noqa: F401  (one copy, shared with the suite)


@dataclass
class Frames:
    count: int = 0
    first_at: float | None = None
    size: tuple[int, int] | None = None
    got_first: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while self.count < n:
            assert asyncio.get_running_loop().time() < deadline, f"only {self.count} frames decoded"
            await asyncio.sleep(0.05)


async def _consume(track: MediaStreamTrack, frames: Frames) -> None:
    try:
        while True:
            frame = await track.recv()
            frames.count += 1
            if frames.first_at is None:
                frames.first_at = time.monotonic()
                frames.size = (frame.width, frame.height)
                frames.got_first.set()
    except MediaStreamError:
        return


async def aiortc_viewer(*, audio: bool = True, video: bool = True,
                        video_codec: str | None = None) -> tuple[RTCPeerConnection, Frames]:
    """A recvonly offer with aiortc's own payload types (Opus 96, VP8 97 …)."""
    pc = RTCPeerConnection()
    frames = Frames()
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    if video:
        transceiver = pc.addTransceiver("video", direction="recvonly")
        if video_codec:
            caps = [c for c in RTCRtpReceiver.getCapabilities("video").codecs
                    if c.mimeType.lower() == video_codec.lower()]
            transceiver.setCodecPreferences(caps)

    @pc.on("track")
    def _track(track: MediaStreamTrack) -> None:
        if track.kind == "video":
            frames.task = asyncio.ensure_future(_consume(track, frames))

    await pc.setLocalDescription(await pc.createOffer())
    return pc, frames
