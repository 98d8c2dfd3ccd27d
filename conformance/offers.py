"""Offers the suite sends: aiortc's own, and aiortc's reshaped into what
other clients send (OBS, browsers' payload types, RFC 9725's max-bundle
example), plus the trickle-ice-sdpfrag bodies of PATCH requests.

All parsing and writing goes through ``gateway.sdp.model``: the reshaping
functions take SDP text and return SDP text, and never guess at syntax.
Offers that are only POSTed to look at the HTTP answer (never connected)
come from one cached aiortc offer per shape (``Offers``), so a run does
not pay for dozens of peer connections.
"""

from __future__ import annotations

import asyncio
import secrets

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from gateway.sdp import model as sdp
from gateway.clients.media import TestPatternTrack, ToneTrack
from gateway.clients.whep import FrameCounter
from gateway.clients.whip import prefer_codec

from .runner import Fail

# Payload types each browser's WHEP offer uses for Opus and VP8, read from the
# real offers in tests/fixtures/sdp/{chrome,firefox,safari}_view.sdp (the
# integration test checks this table against those files).
BROWSER_PAYLOAD_TYPES: dict[str, dict[str, int]] = {
    "chrome": {"audio": 111, "video": 96},
    "firefox": {"audio": 109, "video": 120},
    "safari": {"audio": 111, "video": 104},
}


# -- peer connections ------------------------------------------------------------


async def publisher(video_codec: str | None = "video/VP8", *, audio: bool = True,
                    video: bool = True) -> RTCPeerConnection:
    """An aiortc publisher (moving test pattern, 440 Hz tone) with its offer set."""
    pc = RTCPeerConnection()
    if audio:
        pc.addTransceiver(ToneTrack(), direction="sendonly")
    if video:
        pc.addTransceiver(TestPatternTrack(), direction="sendonly")
        if video_codec:
            prefer_codec(pc, "video", video_codec)
    await pc.setLocalDescription(await pc.createOffer())
    return pc


def _count_frames(pc: RTCPeerConnection, counter: FrameCounter) -> None:
    @pc.on("track")
    def _track(track: MediaStreamTrack) -> None:
        counter.attach(track)


async def viewer(*, video_codec: str | None = None, audio: bool = True, video: bool = True,
                 datachannel: bool = False) -> tuple[RTCPeerConnection, FrameCounter]:
    """An aiortc viewer with a recvonly offer set, decoding what arrives."""
    pc = RTCPeerConnection()
    counter = FrameCounter()
    _count_frames(pc, counter)
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    if video:
        pc.addTransceiver("video", direction="recvonly")
        if video_codec:
            prefer_codec(pc, "video", video_codec)
    if datachannel:
        pc.createDataChannel("conformance")  # MediaMTX's reader page adds one
    await pc.setLocalDescription(await pc.createOffer())
    return pc, counter


async def answerer(counter_offer: str) -> tuple[RTCPeerConnection, FrameCounter, str]:
    """An aiortc viewer answering a WHEP counter-offer: returns its answer."""
    pc = RTCPeerConnection()
    counter = FrameCounter()
    _count_frames(pc, counter)
    await pc.setRemoteDescription(RTCSessionDescription(counter_offer, "offer"))
    for transceiver in pc.getTransceivers():
        transceiver.direction = "recvonly"
    await pc.setLocalDescription(await pc.createAnswer())
    return pc, counter, pc.localDescription.sdp


def for_aiortc(answer: str) -> str:
    """The answer as aiortc can take it.  aiortc insists on ICE credentials in
    every m-line, even one the answer rejects (port 0, which JSEP allows
    bare, as servers answer MediaMTX's data-channel m-line); copy the
    bundle's ICE credentials, fingerprint and DTLS role into such m-lines.
    Nothing else changes."""
    try:
        desc = sdp.parse(answer)
    except sdp.SdpError:
        return answer
    ufrag, pwd = desc.ice_credentials()
    fingerprint = desc.fingerprint()
    kept = accepted(desc)
    setup = (kept[0].attribute("setup") if kept else None) or desc.attribute("setup")
    changed = False
    for media in desc.media:
        if rejected(desc, media) and not media.has("ice-ufrag") and ufrag and pwd:
            media.lines += [sdp.Line("a", f"ice-ufrag:{ufrag}"), sdp.Line("a", f"ice-pwd:{pwd}")]
            if fingerprint and not media.has("fingerprint"):
                media.lines.append(sdp.Line("a", f"fingerprint:{fingerprint}"))
            if setup and not media.has("setup"):
                media.lines.append(sdp.Line("a", f"setup:{setup}"))
            changed = True
    return str(desc) if changed else answer


async def apply_answer(pc: RTCPeerConnection, answer: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(for_aiortc(answer), "answer"))
    except Exception as exc:
        raise Fail(f"aiortc cannot apply the server's answer: {exc}") from None


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> float:
    """Seconds until ICE+DTLS are up; Fail with the state reached otherwise."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    if pc.connectionState not in ("connected", "failed", "closed"):
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise Fail(f"not connected within {timeout:g} s (ICE {pc.iceConnectionState}, "
                       f"connection {pc.connectionState})") from None
    if pc.connectionState != "connected":
        raise Fail(f"the connection ended {pc.connectionState} (ICE {pc.iceConnectionState})")
    return loop.time() - start


async def wait_frames(counter: FrameCounter, at_least: int, timeout: float) -> float:
    """Seconds until ``at_least`` video frames were decoded, or Fail."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while counter.video_frames < at_least:
        if loop.time() - start > timeout:
            raise Fail(f"{counter.video_frames} video frames decoded in {timeout:g} s "
                       f"(wanted {at_least})")
        await asyncio.sleep(0.05)
    return loop.time() - start


# -- reading answers ----------------------------------------------------------------


def parse(text: str, what: str = "the body") -> sdp.SessionDescription:
    """gateway.sdp.model.parse, failing the check (not crashing it) on bad SDP."""
    try:
        desc = sdp.parse(text)
    except sdp.SdpError as exc:
        raise Fail(f"{what} is not valid SDP: {exc}") from None
    if not desc.media:
        raise Fail(f"{what} has no m-line")
    return desc


def rejected(desc: sdp.SessionDescription, media: sdp.MediaSection) -> bool:
    """An m-line turned down in an answer: port 0 and not bundled (a bundled
    m-line may carry port 0 with ``bundle-only``, RFC 9143)."""
    return media.port == 0 and not media.has("bundle-only") and media.mid not in desc.bundle_mids


def accepted(desc: sdp.SessionDescription) -> list[sdp.MediaSection]:
    return [m for m in desc.media if not rejected(desc, m)]


# -- reshaping offers ---------------------------------------------------------------


def with_payload_types(offer: str, pts: dict[str, int]) -> str:
    """The first codec of each kind renumbered to ``pts[kind]``, the others
    dropped: an aiortc offer in a browser's payload types."""
    desc = sdp.parse(offer)
    for media in desc.media:
        if media.kind in pts:
            media.keep_codecs({media.codecs()[0].pt: pts[media.kind]})
    return str(desc)


def obs_shaped(offer: str) -> str:
    """An aiortc offer the way OBS (libdatachannel) sends one (wish-facts.md):
    ICE credentials and fingerprint at session level, no candidates and no
    end-of-candidates, Opus on PT 111 and exactly one video codec on PT 96.
    aiortc adopts the payload types of the answer, so it still sends."""
    desc = sdp.parse(offer)
    first = desc.media[0]
    desc.session.extend([
        sdp.Line("a", f"ice-ufrag:{first.attribute('ice-ufrag')}"),
        sdp.Line("a", f"ice-pwd:{first.attribute('ice-pwd')}"),
        sdp.Line("a", f"fingerprint:{first.attribute('fingerprint')}"),
    ])
    for media in desc.media:
        media.remove_attributes("ice-ufrag", "ice-pwd", "fingerprint", "candidate",
                                "end-of-candidates", "ice-options")
        media.port = 9
        media.lines = [sdp.Line("c", "IN IP4 0.0.0.0") if ln.type == "c" else ln for ln in media.lines]
        codec = next(c for c in media.codecs() if c.key != "rtx")
        media.keep_codecs({codec.pt: 111 if media.kind == "audio" else 96})
    return str(desc)


SAFARI_H264 = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id="


def safari_shaped(offer: str) -> str:
    """An aiortc viewer offer with Safari's video codecs (wish-facts.md,
    tests/fixtures/sdp/safari_view.sdp): H.264 High 640c1f on PT 96 before
    constrained baseline 42e01f on PT 98, then VP8 on 104; Opus on 111.
    The High PT stands where aiortc lists its 42001f, so a server that
    answers with the first H.264 PT, or with its own profile on the viewer's
    PT, shows it."""
    desc = sdp.parse(offer)
    for media in desc.media:
        if media.kind == "audio":
            media.keep_codecs({next(c for c in media.codecs() if c.key == "opus").pt: 111})
        elif media.kind == "video":
            h264 = [c for c in media.codecs() if c.key == "h264"]
            vp8 = next(c for c in media.codecs() if c.key == "vp8")
            media.keep_codecs({h264[0].pt: 96, h264[1].pt: 98, vp8.pt: 104})
            media.formats = ["96", "98", "104"]
            fmtp = {"96": f"{SAFARI_H264}640c1f", "98": f"{SAFARI_H264}42e01f"}
            media.lines = [sdp.Line("a", f"fmtp:{pt} {fmtp[pt]}")
                           if (a := ln.attribute) and a[0] == "fmtp" and (pt := (a[1] or "").split(" ")[0]) in fmtp
                           else ln for ln in media.lines]
    return str(desc)


def set_direction(offer: str, direction: str) -> str:
    desc = sdp.parse(offer)
    for media in desc.media:
        media.remove_attributes("sendonly", "recvonly", "sendrecv", "inactive")
        media.lines.append(sdp.Line("a", direction))
    return str(desc)


def set_setup(offer: str, role: str) -> str:
    desc = sdp.parse(offer)
    if desc.has("setup"):
        desc.session = [sdp.Line("a", f"setup:{role}") if ln.attribute and ln.attribute[0] == "setup"
                        else ln for ln in desc.session]
    for media in desc.media:
        if media.has("setup"):
            media.set_attribute("setup", role)
    return str(desc)


def max_bundle(offer: str) -> str:
    """RFC 9725's own example shape: ``rtcp-mux-only`` on every m-line, and
    every m-line but the first ``port 0`` + ``bundle-only`` without
    candidates (JSEP "max-bundle", RFC 9429 section 4.1.1)."""
    desc = sdp.parse(offer)
    for i, media in enumerate(desc.media):
        if not media.has("rtcp-mux-only"):
            media.lines.append(sdp.Line("a", "rtcp-mux-only"))
        if i > 0:
            media.port = 0
            media.remove_attributes("candidate", "end-of-candidates")
            if not media.has("bundle-only"):
                media.lines.append(sdp.Line("a", "bundle-only"))
    return str(desc)


def unknown_audio_codec(offer: str) -> str:
    """Every audio codec renamed to one no server knows: the audio m-line
    cannot be accepted, the video one can (section 4.4.3)."""
    desc = sdp.parse(offer)
    for media in desc.media:
        if media.kind != "audio":
            continue
        media.lines = [
            sdp.Line("a", f"rtpmap:{(ln.attribute[1] or '').split(' ')[0]} X-CONFORMANCE-{i}/48000/2")
            if ln.attribute and ln.attribute[0] == "rtpmap" else ln
            for i, ln in enumerate(media.lines)
        ]
        media.remove_attributes("fmtp", "rtcp-fb")
    return str(desc)


def _add_to_bundle(desc: sdp.SessionDescription, mid: str) -> None:
    for i, ln in enumerate(desc.session):
        attr = ln.attribute
        if attr and attr[0] == "group" and (attr[1] or "").startswith("BUNDLE"):
            desc.session[i] = sdp.Line("a", f"group:{attr[1]} {mid}")


def second_video_track(offer: str) -> str:
    """A second video m-line in the same MediaStream (section 4.4.2)."""
    desc = sdp.parse(offer)
    video = next(m for m in desc.media if m.kind == "video")
    mid = "conf2"
    lines = []
    for ln in video.lines:
        attr = ln.attribute
        if attr and attr[0] == "mid":
            ln = sdp.Line("a", f"mid:{mid}")
        elif attr and attr[0] == "msid":
            stream, _, _track = (attr[1] or "").partition(" ")
            ln = sdp.Line("a", f"msid:{stream} {secrets.token_hex(8)}")
        elif attr and attr[0] in ("ssrc", "ssrc-group"):
            continue
        lines.append(ln)
    desc.media.append(sdp.MediaSection(video.kind, video.port, video.proto, list(video.formats), lines))
    _add_to_bundle(desc, mid)
    return str(desc)


def second_media_stream(offer: str) -> str:
    """Audio and video in two different MediaStreams (msid stream ids differ)."""
    desc = sdp.parse(offer)
    video = next(m for m in desc.media if m.kind == "video")
    new_stream = secrets.token_hex(8)
    video.lines = [
        sdp.Line("a", f"msid:{new_stream} {(ln.attribute[1] or '').partition(' ')[2]}")
        if ln.attribute and ln.attribute[0] == "msid" else ln
        for ln in video.lines if not (ln.attribute and ln.attribute[0] == "ssrc"
                                      and "msid:" in (ln.attribute[1] or ""))
    ]
    return str(desc)


RID_EXTMAP = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"


def with_simulcast(offer: str, rids: tuple[str, ...] = ("0", "1", "2")) -> str:
    """Simulcast on the video m-line as OBS 32.1 offers it (RFC 8853):
    ``a=rid:<r> send`` per layer and ``a=simulcast:send 0;1;2``."""
    desc = sdp.parse(offer)
    video = next(m for m in desc.media if m.kind == "video")
    ids = [int((v or "0").split()[0].split("/")[0]) for v in video.attributes("extmap")
           if (v or "").split()[0].split("/")[0].isdigit()]
    if not any(RID_EXTMAP in (v or "") for v in video.attributes("extmap")):
        video.lines.append(sdp.Line("a", f"extmap:{max(ids, default=0) + 1} {RID_EXTMAP}"))
    video.remove_attributes("ssrc", "ssrc-group")
    for rid in rids:
        video.lines.append(sdp.Line("a", f"rid:{rid} send"))
    video.lines.append(sdp.Line("a", f"simulcast:send {';'.join(rids)}"))
    return str(desc)


# -- trickle-ice-sdpfrag bodies -------------------------------------------------------


def fragment(local_sdp: str, *, candidates: list[str] | None = None, ufrag: str | None = None,
             pwd: str | None = None, end: bool = True) -> str:
    """An RFC 8840 fragment for the first (offerer-tagged) m-line of the
    bundle: RFC 9725 section 4.3.2 says only that one is sent."""
    desc = sdp.parse(local_sdp)
    first = desc.media[0]
    own_ufrag, own_pwd = desc.ice_credentials()
    lines = []
    options = first.attribute("ice-options") or desc.attribute("ice-options")
    if options:
        lines.append(f"a=ice-options:{options}")
    if desc.bundle_mids:
        lines.append("a=group:BUNDLE " + " ".join(desc.bundle_mids))
    lines.append(str(first.m_line))
    if first.mid is not None:
        lines.append(f"a=mid:{first.mid}")
    lines.append(f"a=ice-ufrag:{ufrag or own_ufrag}")
    lines.append(f"a=ice-pwd:{pwd or own_pwd}")
    for cand in first.candidates if candidates is None else candidates:
        lines.append(f"a=candidate:{cand}")
    if end:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def restart_fragment(local_sdp: str) -> tuple[str, str, str]:
    """A fragment with fresh ICE credentials (an ICE restart, section 4.3.3);
    returns (body, ufrag, pwd)."""
    ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
    return fragment(local_sdp, ufrag=ufrag, pwd=pwd), ufrag, pwd


def candidates_of(local_sdp: str) -> list[str]:
    desc = sdp.parse(local_sdp)
    return desc.media[0].candidates if desc.media else []


class Offers:
    """One aiortc offer per shape, made on first use and then reused as text
    for every POST that is never connected."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def publisher(self, video_codec: str = "video/VP8") -> str:
        return await self._get(f"pub:{video_codec}", lambda: publisher(video_codec))

    async def viewer(self) -> str:
        async def make() -> RTCPeerConnection:
            pc, _ = await viewer()
            return pc
        return await self._get("view", make)

    async def _get(self, key: str, make) -> str:  # type: ignore[no-untyped-def]
        async with self._lock:
            if key not in self._cache:
                pc = await make()
                try:
                    self._cache[key] = pc.localDescription.sdp
                finally:
                    await pc.close()
            return self._cache[key]
