"""Synthetic media sources: a moving test pattern and a tone, no numpy needed."""

from __future__ import annotations

import fractions
import math
import time

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, VIDEO_PTIME, VIDEO_TIME_BASE


class TestPatternTrack(MediaStreamTrack):
    """Moving bars, so encoders send real inter frames and decoders see change."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        import asyncio

        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._count / self.fps
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        shift = (self._count * 4) % self.width
        row = bytes(((x + shift) // 40 % 8) * 32 for x in range(self.width))
        luma = frame.planes[0]
        luma.update(row.ljust(luma.line_size, b"\0") * self.height)
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * (plane.line_size * plane.height))
        frame.pts = int(self._count * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        self._count += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms per frame."""

    kind = "audio"

    def __init__(self, rate: int = 48000) -> None:
        super().__init__()
        self.rate = rate
        self._start: float | None = None
        self._samples = 0

    async def recv(self) -> av.AudioFrame:
        import asyncio

        if self._start is None:
            self._start = time.monotonic()
        target = self._start + self._samples / self.rate
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        count = int(AUDIO_PTIME * self.rate)
        pcm = bytearray()
        for i in range(count):
            value = int(8000 * math.sin(2 * math.pi * 440 * (self._samples + i) / self.rate))
            pcm += value.to_bytes(2, "little", signed=True)
        frame = av.AudioFrame(format="s16", layout="mono", samples=count)
        frame.planes[0].update(bytes(pcm))
        frame.sample_rate = self.rate
        frame.pts = self._samples
        frame.time_base = fractions.Fraction(1, self.rate)
        self._samples += count
        return frame


__all__ = ["TestPatternTrack", "ToneTrack", "VIDEO_PTIME"]
