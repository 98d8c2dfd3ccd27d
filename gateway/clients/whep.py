"""A WHEP client (draft-ietf-wish-whep-03) on aiortc, with the core extensions.

``play()`` sets up a playback session in either of the draft's two shapes:

- ``mode="offer"``: POST a ``recvonly`` offer, the server answers ``201``.
  A server may still reject the offer with ``406`` and its own counter-offer
  (section "Server Sends Counter-Offer"); ``play()`` then answers that.
- ``mode="counter-offer"``: POST an empty body (the old server-offer
  convention), take the server's offer from the ``406`` (or ``201``, as
  older servers did), and PATCH the ``recvonly`` answer as ``application/sdp``.

``WhepSession`` is the HTTP half; it returns every response and keeps what
the 201/406 told it (Location, ETag, answer or counter-offer, Link headers).
``FrameCounter`` is the media half: it decodes what arrives, counts it, and
optionally records it with ``aiortc.contrib.media.MediaRecorder``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterable, Literal
from urllib.parse import urljoin

import httpx
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from gateway.clients.whip import WhipClientError, WhipSession, prefer_codec
from gateway.protocol import ICE_SERVER_REL, JSON, LAYER_REL, SDP, SDPFRAG, SSE_REL


class WhepClientError(WhipClientError):
    """The WHEP server answered with a status the client did not expect."""


# -- Link headers (RFC 8288) -----------------------------------------------------


def parse_link_header(value: str, base: str) -> list[dict[str, str]]:
    """Parse one ``Link`` field value into ``[{"url": ..., "rel": ..., param: ...}]``.

    Handles several links per field, quoted parameters holding ``,`` or ``;``
    (``events="active,inactive"``), ``\\`` escapes, bare tokens, and
    parameters separated by whitespace only (as the WHEP extension draft's
    examples are written).  URLs are resolved against ``base``; ``stun:`` and
    ``turn:`` URIs come back unchanged.  Parameter names are lower-cased.
    """
    links: list[dict[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        start = value.find("<", i)
        if start < 0:
            break
        end = value.find(">", start)
        if end < 0:
            break
        link = {"url": urljoin(base, value[start + 1:end].strip())}
        i = end + 1
        while i < n:
            while i < n and value[i] in " \t\r\n;":
                i += 1
            if i >= n or value[i] == ",":
                i += 1
                break
            if value[i] == "<":  # a new link without the comma
                break
            name_start = i
            while i < n and value[i] not in "=;, \t\r\n<":
                i += 1
            name = value[name_start:i].lower()
            while i < n and value[i] in " \t":
                i += 1
            param = ""
            if i < n and value[i] == "=":
                i += 1
                while i < n and value[i] in " \t":
                    i += 1
                if i < n and value[i] == '"':
                    i += 1
                    chars = []
                    while i < n and value[i] != '"':
                        if value[i] == "\\" and i + 1 < n:
                            i += 1
                        chars.append(value[i])
                        i += 1
                    i += 1  # the closing quote
                    param = "".join(chars)
                else:
                    param_start = i
                    while i < n and value[i] not in ";, \t\r\n":
                        i += 1
                    param = value[param_start:i]
            if name and name != "url" and name not in link:  # RFC 8288: first one wins
                link[name] = param
        links.append(link)
    return links


def parse_links(values: Iterable[str], base: str) -> list[dict[str, str]]:
    """Every link of several ``Link`` header fields, in order."""
    return [link for value in values for link in parse_link_header(value, base)]


def links_by_rel(links: Iterable[dict[str, str]]) -> dict[str, dict[str, str]]:
    """``rel -> link``; a link with ``rel="a b"`` is filed under both; the first wins."""
    out: dict[str, dict[str, str]] = {}
    for link in links:
        for rel in link.get("rel", "").split():
            out.setdefault(rel, link)
    return out


# -- Server-sent events (WHATWG HTML, "Server-sent events") ----------------------


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> dict[str, Any]:
        """The data as a JSON object.  Data that is not a JSON object (the
        ``scte35`` event carries base64) comes back as ``{"data": raw}``."""
        try:
            value = json.loads(self.data)
        except ValueError:
            return {"data": self.data}
        return value if isinstance(value, dict) else {"data": value}


class SseParser:
    """Line-at-a-time event-stream parser: comments (keepalives) and unknown
    fields are ignored, ``data`` lines are joined with ``\\n``, an event is
    dispatched on the blank line that ends it, and one without data is dropped."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry: float | None = None  # seconds, from a "retry:" field
        self._event = ""
        self._data: list[str] = []
        self._first = True

    def feed(self, line: str) -> SseEvent | None:
        if self._first:
            line = line.removeprefix("\ufeff")
            self._first = False
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> SseEvent | None:
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        if not data:
            return None
        return SseEvent(event, "\n".join(data), self.last_id)


def parse_sse(text: str) -> list[SseEvent]:
    """All complete events in ``text`` (a trailing event without its blank line is not complete)."""
    parser = SseParser()
    found = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        event = parser.feed(line)
        if event:
            found.append(event)
    return found


# -- The HTTP side ---------------------------------------------------------------


def _media_type_param(content_type: str, param: str) -> str | None:
    for part in parse_link_header(f"<>; {content_type.partition(';')[2]}", ""):
        return part.get(param)
    return None


@dataclass
class WhepSession(WhipSession):
    """WHIP's resource handling (URL, token, Location, ETag, DELETE) plus what
    WHEP adds: counter-offers, Link extensions and their event stream."""

    counter_offer: str | None = None
    counter_offer_valid_until: str | None = None  # the HTTP-date of Content-Type's valid-until
    links: dict[str, dict[str, str]] = field(default_factory=dict)
    ice_servers: list[dict[str, str]] = field(default_factory=list)
    events_location: str | None = None
    retry_after: float | None = None  # from a 409 (no publisher) or 503

    def _keep(self, response: httpx.Response) -> None:
        """Remember Location, ETag and Link headers of a 201 or 406."""
        if "location" in response.headers:
            self.location = urljoin(self.url, response.headers["location"])
        self.etag = response.headers.get("etag")
        links = parse_links(response.headers.get_list("link"), self.url)
        self.links = links_by_rel(links)
        self.ice_servers = [link for link in links if ICE_SERVER_REL in link.get("rel", "").split()]

    def _note_retry(self, response: httpx.Response) -> None:
        value = response.headers.get("retry-after", "")
        self.retry_after = float(value) if value.isdigit() else None

    async def post_offer(self, sdp: str) -> httpx.Response:
        """201: keeps the answer; 406: keeps the server's counter-offer."""
        response = await self.http.post(self.url, content=sdp, headers=self._headers(SDP))
        if response.status_code == 201:
            self._keep(response)
            self.answer = response.text
        elif response.status_code == 406 and response.text.strip():
            self._keep(response)
            self.counter_offer = response.text
            self.counter_offer_valid_until = _media_type_param(
                response.headers.get("content-type", ""), "valid-until")
        else:
            self._note_retry(response)
        return response

    async def post_empty(self) -> httpx.Response:
        """POST with no offer: the server answers 406 with its offer
        (draft-03 counter-offer), or 201 with it, as pre-03 servers did."""
        response = await self.http.post(self.url, content=b"", headers=self._headers(SDP))
        if response.status_code in (201, 406) and response.text.strip():
            self._keep(response)
            self.counter_offer = response.text
            self.counter_offer_valid_until = _media_type_param(
                response.headers.get("content-type", ""), "valid-until")
        else:
            self._note_retry(response)
        return response

    def _resource(self) -> str:
        if not self.location:
            raise RuntimeError("no WHEP session: POST first")
        return self.location

    async def patch_answer(self, sdp: str) -> httpx.Response:
        """Complete a counter-offer exchange; the server says 204."""
        response = await self.http.patch(self._resource(), content=sdp, headers=self._headers(SDP))
        if response.is_success and response.headers.get("etag"):
            self.etag = response.headers["etag"]
        return response

    async def trickle(self, fragment: str, if_match: str | None = None) -> httpx.Response:
        """PATCH a trickle-ice-sdpfrag; ``if_match='"*"'`` asks for an ICE restart.
        A 200 (restart done) carries the new ETag, which is kept."""
        headers = self._headers(SDPFRAG)
        if if_match:
            headers["If-Match"] = if_match
        response = await self.http.patch(self._resource(), content=fragment, headers=headers)
        if response.status_code == 200 and response.headers.get("etag"):
            self.etag = response.headers["etag"]
        return response

    async def delete(self) -> httpx.Response:
        return await self.http.delete(self._resource(), headers=self._headers())

    # -- extensions --

    def _link(self, rel: str) -> str:
        link = self.links.get(rel)
        if not link:
            raise LookupError(f"the server advertised no {rel} link")
        return link["url"]

    @property
    def advertised_events(self) -> list[str]:
        events = self.links.get(SSE_REL, {}).get("events", "")
        return [e.strip() for e in events.split(",") if e.strip()]

    async def subscribe(self, events: list[str]) -> httpx.Response:
        """POST the event names to the server-sent-events link; 201 gives the stream's Location."""
        url = self._link(SSE_REL)
        response = await self.http.post(url, content=json.dumps(events),
                                         headers=self._headers(JSON))
        if response.status_code == 201 and "location" in response.headers:
            self.events_location = urljoin(url, response.headers["location"])
        return response

    async def events(self, *, reconnect: bool = True,
                     read_timeout: float | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` from the event stream until the server ends it.

        As an EventSource would, it reconnects when the connection drops
        (after the ``retry:`` delay, one second by default, sending
        ``Last-Event-ID``) unless ``reconnect`` is false.  A 404/410 (the
        stream or the session was deleted) or a 204 ends the iteration;
        another status on connecting raises WhepClientError.
        """
        if not self.events_location:
            raise RuntimeError("no event stream: subscribe() first")
        parser = SseParser()
        timeout = httpx.Timeout(10, read=read_timeout)
        while True:
            headers = self._headers()
            headers["Accept"] = "text/event-stream"
            headers["Cache-Control"] = "no-cache"
            if parser.last_id:
                headers["Last-Event-ID"] = parser.last_id
            try:
                async with self.http.stream("GET", self.events_location, headers=headers,
                                            timeout=timeout) as response:
                    if response.status_code in (204, 404, 410):
                        return
                    if response.status_code != 200:
                        await response.aread()
                        raise WhepClientError(response)
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event:
                            yield event.event, event.json()
                    parser = _carry_over(parser)  # an unterminated event at EOF is discarded
            except (httpx.ReadError, httpx.RemoteProtocolError):
                parser = _carry_over(parser)
            if not reconnect:
                return
            await asyncio.sleep(parser.retry if parser.retry is not None else 1.0)

    async def unsubscribe(self) -> httpx.Response:
        """DELETE the event stream; afterwards the server answers 404 for it."""
        if not self.events_location:
            raise RuntimeError("no event stream")
        return await self.http.delete(self.events_location, headers=self._headers())

    async def select_layer(self, body: dict[str, Any]) -> httpx.Response:
        """POST a layer choice (``{"mediaId": "0", "rid": "h"}``); ``{"mediaId": ...}`` alone resets."""
        return await self.http.post(self._link(LAYER_REL), content=json.dumps(body),
                                    headers=self._headers(JSON))


def _carry_over(old: SseParser) -> SseParser:
    """A fresh parser for a new connection that keeps the last id and retry."""
    new = SseParser()
    new.last_id, new.retry = old.last_id, old.retry
    return new


# -- The media side --------------------------------------------------------------


class _QueueTrack(MediaStreamTrack):
    """Hands frames the counter already pulled on to a MediaRecorder."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def recv(self) -> Any:
        frame = await self.queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


@dataclass
class Sample:
    """One look at the receiving side: totals, and rates since the last look."""

    at: float
    bytes: int
    bitrate: float  # bit/s over all media, since the previous sample
    fps: float  # decoded video frames per second, since the previous sample
    video_frames: int
    inbound: dict[str, dict[str, Any]]  # kind -> inbound-rtp stats as a dict


class FrameCounter:
    """Decodes what the received tracks carry and counts it.

    ``attach()`` every track of the peer connection's ``track`` event.
    ``video_frames``/``audio_frames`` count decoded frames, ``width`` and
    ``height`` are the last video frame's, ``first_frame_at`` is the
    ``time.monotonic()`` of the first video frame.  ``bytes`` is what the
    transport received, updated by ``sample(pc)``.  With ``record`` set,
    the frames are also written to that file (``.mp4``: H.264 + AAC).
    """

    def __init__(self, record: str | None = None) -> None:
        self.video_frames = 0
        self.audio_frames = 0
        self.width: int | None = None
        self.height: int | None = None
        self.created_at = time.monotonic()
        self.first_frame_at: float | None = None
        self.first_audio_at: float | None = None
        self.last_frame_at: float | None = None
        self.bytes = 0
        self.record = record
        self.tracks: list[MediaStreamTrack] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._sinks: list[_QueueTrack] = []
        self._recorder: Any = None
        self._recording = False
        self._first_video = asyncio.Event()
        self._last: Sample | None = None
        if record:
            from aiortc.contrib.media import MediaRecorder

            self._recorder = MediaRecorder(record)

    def attach(self, track: MediaStreamTrack) -> None:
        if track.kind not in ("audio", "video"):
            return
        sink = None
        if self._recorder is not None:
            sink = _QueueTrack(track.kind)
            self._recorder.addTrack(sink)
            self._sinks.append(sink)
        self.tracks.append(track)
        self._tasks.append(asyncio.ensure_future(self._run(track, sink)))

    async def _run(self, track: MediaStreamTrack, sink: _QueueTrack | None) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                self.video_frames += 1
                self.width, self.height = frame.width, frame.height
                self.last_frame_at = now
                if self.first_frame_at is None:
                    self.first_frame_at = now
                    self._first_video.set()
            else:
                self.audio_frames += 1
                if self.first_audio_at is None:
                    self.first_audio_at = now
            if sink is not None:
                if not self._recording:  # every track is attached by now: the header can be written
                    self._recording = True
                    await self._recorder.start()
                sink.queue.put_nowait(frame)

    async def wait_first_frame(self, timeout: float = 10.0) -> float:
        """Seconds from this counter's creation to the first decoded video frame."""
        await asyncio.wait_for(self._first_video.wait(), timeout)
        assert self.first_frame_at is not None
        return self.first_frame_at - self.created_at

    async def sample(self, pc: RTCPeerConnection) -> Sample:
        report = await pc.getStats()
        inbound: dict[str, dict[str, Any]] = {}
        received = 0
        for stats in report.values():
            if stats.type == "inbound-rtp":
                inbound[stats.kind] = {k: v for k, v in vars(stats).items() if k != "timestamp"}
            elif stats.type == "transport":
                received += stats.bytesReceived
        now = time.monotonic()
        self.bytes = max(self.bytes, received)
        previous = self._last
        span = now - previous.at if previous else now - self.created_at
        bitrate = (self.bytes - (previous.bytes if previous else 0)) * 8 / span if span > 0 else 0.0
        frames = self.video_frames - (previous.video_frames if previous else 0)
        fps = frames / span if span > 0 else 0.0
        self._last = Sample(now, self.bytes, bitrate, fps, self.video_frames, inbound)
        return self._last

    async def stop(self) -> None:
        """Stop counting; finish the recording so the file is playable."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        if self._recorder is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while self._recording and any(not s.queue.empty() for s in self._sinks) \
                    and loop.time() < deadline:
                await asyncio.sleep(0.05)  # let the recorder drain what was received
            recorder, self._recorder = self._recorder, None
            await recorder.stop()


# -- Playback ----------------------------------------------------------------------


async def play(
    url: str,
    *,
    token: str | None = None,
    mode: Literal["offer", "counter-offer"] = "offer",
    video_codec: str | None = None,
    audio: bool = True,
    video: bool = True,
    record: str | None = None,
    http: httpx.AsyncClient | None = None,
) -> tuple[RTCPeerConnection, WhepSession, FrameCounter]:
    """Set up a WHEP playback session; media starts flowing once ICE connects.

    ``video_codec`` is a MIME type (``video/VP8``, ``video/H264``) to offer or
    accept alone.  Raises WhepClientError on any status the mode does not
    expect (the session's ``retry_after`` is set from a 409's Retry-After).
    """
    session = WhepSession(url, token, http=http) if http else WhepSession(url, token)
    counter = FrameCounter(record)
    pc = RTCPeerConnection()

    def listen(peer: RTCPeerConnection) -> None:
        @peer.on("track")
        def _track(track: MediaStreamTrack) -> None:
            counter.attach(track)

    async def answer_counter_offer(peer: RTCPeerConnection) -> None:
        # Transceivers made before the offer arrives are matched to its m-lines,
        # so a codec choice or a refused kind shows in the answer.
        if not audio:
            peer.addTransceiver("audio", direction="inactive")
        if not video:
            peer.addTransceiver("video", direction="inactive")
        elif video_codec:
            peer.addTransceiver("video", direction="recvonly")
            prefer_codec(peer, "video", video_codec)
        await peer.setRemoteDescription(RTCSessionDescription(session.counter_offer or "", "offer"))
        await peer.setLocalDescription(await peer.createAnswer())
        response = await session.patch_answer(peer.localDescription.sdp)
        if response.status_code not in (200, 204):
            raise WhepClientError(response)

    try:
        listen(pc)
        if mode == "offer":
            if audio:
                pc.addTransceiver("audio", direction="recvonly")
            if video:
                pc.addTransceiver("video", direction="recvonly")
                if video_codec:
                    prefer_codec(pc, "video", video_codec)
            await pc.setLocalDescription(await pc.createOffer())
            response = await session.post_offer(pc.localDescription.sdp)
            if response.status_code == 201 and session.location:
                await pc.setRemoteDescription(RTCSessionDescription(session.answer or "", "answer"))
            elif response.status_code == 406 and session.counter_offer and session.location:
                # aiortc cannot roll its offer back: answer on a fresh connection
                await pc.close()
                pc = RTCPeerConnection()
                listen(pc)
                await answer_counter_offer(pc)
            else:
                raise WhepClientError(response)
        elif mode == "counter-offer":
            response = await session.post_empty()
            if not (response.status_code in (201, 406) and session.counter_offer and session.location):
                raise WhepClientError(response)
            await answer_counter_offer(pc)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except BaseException:
        await pc.close()
        await counter.stop()
        if session.location:  # free whatever the server set up
            try:
                await session.delete()
            except httpx.HTTPError:
                pass
        if http is None:
            await session.aclose()
        raise
    return pc, session, counter


__all__ = [
    "FrameCounter", "LAYER_REL", "SSE_REL", "Sample", "SseEvent", "SseParser", "WhepClientError",
    "WhepSession", "links_by_rel", "parse_link_header", "parse_links", "parse_sse", "play",
]
