"""A WHIP client (RFC 9725) on aiortc: POST the offer, PATCH, DELETE."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack


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
        if r.headers.get("content-type", "").startswith(("application/problem+json", "application/json")):
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
                                         headers=self._headers("application/sdp"))
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
    from aiortc.contrib.media import MediaPlayer

    player = MediaPlayer(path, loop=loop)
    tracks = [CountingTrack(t) for t in (player.audio, player.video) if t is not None]
    if not tracks:
        raise ValueError(f"{path}: no audio or video stream")
    try:
        pc, session = await publish(url, list(tracks), token=token, video_codec=video_codec)
    except BaseException:
        for track in tracks:
            track.stop()
        raise
    return pc, session, tracks
