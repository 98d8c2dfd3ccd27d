"""Offers from clients: read once, checked once, handed on typed.

A WHIP publisher's offer and a WHEP viewer's offer arrive as text.  This is
the one place they are parsed and checked against what RFC 9725 and the
WHEP draft allow; what leaves is a ``SessionDescription`` (and, for a
viewer, the codecs it takes from the stream), so nothing further along
parses the client's SDP again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from gateway import probes
from gateway.errors import MalformedSdp, UnsupportedMedia
from gateway.janus.streaming import MediaSpec
from gateway.sdp import bridge as sdp_bridge
from gateway.sdp import model as sdp

T = TypeVar("T")

# Janus codec names (room settings) -> rtpmap encoding names in offers.
RTPMAP_NAMES = {
    "opus": "opus", "multiopus": "multiopus", "pcmu": "pcmu", "pcma": "pcma", "g722": "g722",
    "isac16": "isac", "isac32": "isac",
    "h264": "h264", "vp8": "vp8", "vp9": "vp9", "av1": "av1", "h265": "h265",
}


def _read(parse: Callable[[str], T], text: str, failure: str) -> T:
    """Client text read by ``parse``; unreadable is the client's 400."""
    try:
        return parse(text)
    except sdp.SdpError as exc:
        raise MalformedSdp(f"{failure}: {exc}") from None


def parse_offer(text: str, what: str = "offer") -> sdp.SessionDescription:
    return _read(sdp.parse, text, f"the {what} is not valid SDP")


def check_port_counts(offer: sdp.SessionDescription) -> None:
    """``m=audio 9/2 ...`` is RFC 8866 SDP, but not WebRTC, and Janus 1.1.2 cannot
    parse it: it drops its own answer and never replies (a 6 s timeout, 503)."""
    for media in offer.media:
        if media.port_count is not None:
            raise MalformedSdp(f"m={media.kind} gives a number of ports ({media.port}/{media.port_count}); "
                               "a WebRTC m-line has one port")


@probes.timed("ingest.check_offer")
def check_publish_offer(offer: sdp.SessionDescription, *, video_codecs: str,
                        audio_codecs: str) -> None:
    """RFC 9725 sections 4.2 and 4.4: what a publish offer may carry."""
    check_port_counts(offer)
    active = [m for m in offer.media if not m.rejected]
    if not active:
        raise UnsupportedMedia("the offer has no media to publish")
    for kind in ("audio", "video"):
        if sum(1 for m in active if m.kind == kind) > 1:
            raise UnsupportedMedia(f"more than one {kind} track (RFC 9725 section 4.4.2)")
    for media in active:
        if media.kind not in ("audio", "video"):
            raise UnsupportedMedia(f"{media.kind} m-lines are not supported")
        if "SAVPF" not in media.proto:
            raise UnsupportedMedia(f"protocol {media.proto} is not WebRTC (UDP/TLS/RTP/SAVPF)")
        if media.direction in ("recvonly", "inactive"):
            raise UnsupportedMedia(
                f"a publish offer must be sendonly or sendrecv, not {media.direction}"
            )
        wanted = video_codecs if media.kind == "video" else audio_codecs
        names = {RTPMAP_NAMES[c] for c in wanted.split(",")}
        offered = {c.key for c in media.codecs()}
        if not names & offered:
            raise UnsupportedMedia(
                f"no supported {media.kind} codec in the offer "
                f"(offered: {sorted(offered) or 'none'}; supported: {wanted})"
            )
    if len(active) > 1 and not set(m.mid for m in active) <= set(offer.bundle_mids):
        raise UnsupportedMedia("all media must be in one BUNDLE group (RFC 9725 section 4.4.1)")
    ufrag, pwd = offer.ice_credentials()
    if not ufrag or not pwd:
        raise MalformedSdp("the offer has no ice-ufrag/ice-pwd")
    if not offer.fingerprint():
        raise MalformedSdp("the offer has no DTLS fingerprint")


@dataclass(frozen=True)
class ViewerOffer:
    """A viewer's offer, read and checked."""

    text: str
    description: sdp.SessionDescription

    @property
    def ice_ufrag(self) -> str | None:
        return self.description.ice_credentials()[0]

    @property
    def video_mindex(self) -> str:
        return video_mindex(self.description)


def read_viewer_offer(text: str) -> ViewerOffer:
    """WHEP draft-03: parse the viewer's offer and check it (400, 422)."""
    offer = parse_offer(text)
    _check_viewer_offer(offer)
    return ViewerOffer(text=text, description=offer)


def viewer_payload_types(offer: ViewerOffer, stream_media: tuple[MediaSpec, ...]) -> dict[str, int]:
    """Per kind the viewer takes from the stream, its payload type (which the
    mountpoint must send); 422 when it takes none of the stream's media."""
    try:
        choices = sdp_bridge.choose_codecs(offer.description,
                                           [(m.kind, m.codec, m.fmtp) for m in stream_media])
    except sdp_bridge.BridgeError as exc:
        raise UnsupportedMedia(str(exc)) from None
    except sdp.SdpError as exc:  # e.g. one mid on two m-lines
        raise MalformedSdp(f"the offer cannot be used: {exc}") from None
    return {kind: c.payload_type for kind, c in choices.items()}


def _check_viewer_offer(offer: sdp.SessionDescription) -> None:
    """WHEP draft-03, Media Direction Attributes: recvonly (or sendrecv) only."""
    check_port_counts(offer)
    active = [m for m in offer.media if not m.rejected and m.kind in ("audio", "video")]
    if not active:
        raise UnsupportedMedia("the offer has no audio or video to receive")
    for media in active:
        if media.direction in ("sendonly", "inactive"):
            raise UnsupportedMedia(f"a WHEP offer must be recvonly or sendrecv, not {media.direction}")
    ufrag, pwd = offer.ice_credentials()
    if not ufrag or not pwd or not offer.fingerprint():
        raise MalformedSdp("the offer lacks ICE credentials or a DTLS fingerprint")


def read_viewer_answer(text: str) -> sdp.SessionDescription:
    """Counter-offer mode: the player's answer to Janus's offer, recvonly."""
    answer = parse_offer(text, "answer")
    if any(m.direction in ("sendonly", "sendrecv") for m in answer.media if not m.rejected):
        raise UnsupportedMedia("a WHEP player's answer must be recvonly")
    return answer


def read_fragment(text: str) -> sdp.SdpFragment:
    """A PATCH body of RFC 8840 trickle-ice-sdpfrag."""
    return _read(sdp.parse_fragment, text, "bad trickle-ice-sdpfrag")


def video_mindex(desc: sdp.SessionDescription) -> str:
    """The index of the video m-line, which keys the ``layers`` event."""
    kinds = [m.kind for m in desc.media]
    return str(kinds.index("video")) if "video" in kinds else "0"


def first_mid(text: str) -> str:
    try:
        return sdp.parse(text).media[0].mid or "a"
    except (sdp.SdpError, IndexError):
        return "a"
