"""A WHIP client (RFC 9725) on aiortc: POST the offer, PATCH, DELETE."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpx
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack

from gateway.protocol import JSON, PROBLEM_JSON, SDP


class WhipClientError(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.request.method} {response.request.url}: "
                         f"{response.status_code} {response.text[:300]}")
        self.response = response

    @property
    def summary(self) -> str:
        """One line for people: ``409 Conflict: <problem detail> (retry after 5 s)``."""
        r = self.response
        line = f"{r.status_code} {r.reason_phrase}".strip()
        detail = ""
        if r.headers.get("content-type", "").startswith((PROBLEM_JSON, JSON)):
            try:
                body = r.json()
                detail = str(body.get("detail") or body.get("title") or "")
            except (ValueError, AttributeError):
                pass
        if not detail:
            detail = r.text.strip()[:200]
        if detail:
            line += ": " + " ".join(detail.split())
        if r.headers.get("retry-after"):
            line += f" (retry after {r.headers['retry-after']} s)"
        return line


def prefer_codec(pc: RTCPeerConnection, kind: str, mime: str) -> None:
    """Offer only ``mime`` (e.g. ``video/H264``) on the transceivers of ``kind``."""
    codecs = [c for c in RTCRtpSender.getCapabilities(kind).codecs
              if c.mimeType.lower() == mime.lower()]
    if not codecs:
        raise ValueError(f"aiortc cannot send {mime}")
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(codecs)


@dataclass
class WhipSession:
    url: str
    token: str | None = None
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=10))
    location: str | None = None
    etag: str | None = None
    answer: str | None = None

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def post_offer(self, offer_sdp: str) -> httpx.Response:
        response = await self.http.post(self.url, content=offer_sdp,
                                         headers=self._headers(SDP))
        if response.status_code == 201:
            self.location = urljoin(self.url, response.headers["location"])
            self.etag = response.headers.get("etag")
            self.answer = response.text
        return response

    async def delete(self) -> httpx.Response:
        assert self.location, "nothing to delete"
        return await self.http.delete(self.location, headers=self._headers())

    async def aclose(self) -> None:
        await self.http.aclose()


async def publish(
    url: str,
    tracks: list[MediaStreamTrack],
    *,
    token: str | None = None,
    video_codec: str | None = None,
) -> tuple[RTCPeerConnection, WhipSession]:
    """Start publishing ``tracks``; raises WhipClientError unless the server says 201."""
    pc = RTCPeerConnection()
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    if video_codec:
        prefer_codec(pc, "video", video_codec)
    await pc.setLocalDescription(await pc.createOffer())
    session = WhipSession(url, token)
    response = await session.post_offer(pc.localDescription.sdp)
    if response.status_code != 201:
        await pc.close()
        await session.aclose()
        raise WhipClientError(response)
    await pc.setRemoteDescription(RTCSessionDescription(session.answer or "", "answer"))
    return pc, session


class CountingTrack(MediaStreamTrack):
    """Passes another track's frames through and counts them (frames sent)."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.frames = 0

    async def recv(self):  # type: ignore[no-untyped-def]
        frame = await self.source.recv()
        self.frames += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self.source.stop()


class _LoopedTrack(MediaStreamTrack):
    """One kind of a LoopingFile: plays generation after generation, timestamps carried on."""

    def __init__(self, source: "LoopingFile", kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._generation = 0
        self._offset: int | None = 0
        self._next_pts = 0
        self._last_pts: int | None = None

    async def recv(self):  # type: ignore[no-untyped-def]
        from aiortc.mediastreams import MediaStreamError

        while True:
            if self.readyState != "live":
                raise MediaStreamError
            inner = self._source._track(self.kind, self._generation)
            try:
                frame = await inner.recv()
            except MediaStreamError:
                if not self._source.loop or self.readyState != "live":
                    self.stop()
                    raise
                self._generation += 1
                self._offset, self._last_pts = None, None
                continue
            if self._offset is None:
                self._offset = self._next_pts - frame.pts
            frame.pts += self._offset
            if self.kind == "audio":
                step = frame.samples
            else:
                step = frame.pts - self._last_pts if self._last_pts is not None else 0
                step = step if step > 0 else max(1, int(1 / (30 * frame.time_base)))
            self._last_pts = frame.pts
            self._next_pts = frame.pts + step
            return frame

    def stop(self) -> None:
        super().stop()
        self._source._stop(self.kind)


class LoopingFile:
    """A media file as audio and video tracks, played again and again.

    aiortc's ``MediaPlayer(loop=True)`` stops at the end of the file with
    PyAV 14 and later (the end is ``av.EOFError``, no more StopIteration),
    and would send video timestamps backwards if it did loop.  This opens a
    fresh MediaPlayer for each pass and keeps timestamps rising.
    """

    def __init__(self, path: str, loop: bool = True) -> None:
        from aiortc.contrib.media import MediaPlayer

        self.path, self.loop = path, loop
        self._players: dict[int, Any] = {0: MediaPlayer(path)}
        first = self._players[0]
        self.audio = _LoopedTrack(self, "audio") if first.audio else None
        self.video = _LoopedTrack(self, "video") if first.video else None

    def _track(self, kind: str, generation: int) -> MediaStreamTrack:
        from aiortc.contrib.media import MediaPlayer

        if generation not in self._players:
            self._players[generation] = MediaPlayer(self.path)
            for old in [g for g in self._players if g < generation - 1]:
                del self._players[old]  # both kinds moved on from these
        track = getattr(self._players[generation], kind)
        if track is None:
            raise ValueError(f"{self.path}: no {kind} stream any more")
        return track

    def _stop(self, kind: str) -> None:
        for player in self._players.values():
            track = getattr(player, kind)
            if track is not None:
                track.stop()


async def publish_file(
    url: str,
    path: str,
    *,
    token: str | None = None,
    video_codec: str | None = None,
    loop: bool = True,
) -> tuple[RTCPeerConnection, WhipSession, list[CountingTrack]]:
    """Publish a media file (decoded by aiortc's MediaPlayer, looped by default).

    Returns the publishing tracks, each counting the frames it sent.
    """
    source = LoopingFile(path, loop=loop)
    tracks = [CountingTrack(t) for t in (source.audio, source.video) if t is not None]
    if not tracks:
        raise ValueError(f"{path}: no audio or video stream")
    try:
        pc, session = await publish(url, list(tracks), token=token, video_codec=video_codec)
    except BaseException:
        for track in tracks:
            track.stop()
        raise
    return pc, session, tracks
