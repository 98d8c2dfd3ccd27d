"""Offer bridging for WHEP on Janus 1.1.2: two answers from two offers.

Why this exists: Janus 1.1.2's Streaming plugin ignores a viewer's offer on
``watch`` and always makes its own (O_j).  A WHEP player also sends an offer
(O_v) and wants an answer back.  Since each side has only offered, the
gateway writes an answer for each:

- ``A_v`` (to the viewer): Janus's transport (ICE credentials, fingerprint,
  candidates, SSRCs) under the viewer's labels (mids, payload types).
- ``A_j`` (to Janus, sent with ``start``): the viewer's transport under
  Janus's labels.

Each rule below says why it is there, because most of them come from a
failure that was seen (Chrome drops packets stamped with an unknown mid; Janus reads
remote credentials only from the session or the first m-line; ...).

Everything here is pure: text in, text out, no I/O.  ``gateway.sdp.model`` does
the reading and writing of lines.  Bad input raises ``gateway.sdp.model.SdpError``
(not an SDP we can trust) or ``BridgeError`` (a fine SDP we cannot serve).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from gateway.sdp import model as sdp
from gateway import probes
from gateway.sdp.formats import offered_fmtp
from gateway.sdp.model import Codec, Line, MediaSection, SessionDescription

# Janus's codec names (janus_sdp_get_codec_rtpmap in sdp-utils.c, 1.1.2) as
# (kind, rtpmap encoding name, clock rate, channels).
JANUS_CODECS: dict[str, tuple[str, str, int, int | None]] = {
    "opus": ("audio", "opus", 48000, 2),
    "multiopus": ("audio", "multiopus", 48000, 6),
    "pcmu": ("audio", "PCMU", 8000, None),
    "pcma": ("audio", "PCMA", 8000, None),
    "g722": ("audio", "G722", 8000, None),
    "isac16": ("audio", "ISAC", 16000, None),
    "isac32": ("audio", "ISAC", 32000, None),
    "l16-48": ("audio", "L16", 48000, None),
    "l16": ("audio", "L16", 16000, None),
    "vp8": ("video", "VP8", 90000, None),
    "vp9": ("video", "VP9", 90000, None),
    "h264": ("video", "H264", 90000, None),
    "av1": ("video", "AV1", 90000, None),
    "h265": ("video", "H265", 90000, None),
}

# Never carried over, in either answer.  sdes:mid: Janus stamps its own mids
# ("a"/"v") into every packet; a Chrome viewer that negotiated the mid
# extension drops every packet whose mid it does not know (connected, black
# video).  rtp-stream-id / repaired-rtp-stream-id: rid simulcast, which a
# Streaming viewer never receives; Janus would misread them.
NEVER_EXTMAP = frozenset({
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
})
# rtcp-fb transport-cc without the transport-wide sequence number extension
# would make the viewer wait for feedback data it can never get.
TRANSPORT_CC_URIS = frozenset({
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "http://www.webrtc.org/experiments/rtp-hdrext/transport-wide-cc-02",
})
_RTX_NAMES = frozenset({"rtx"})
_NOT_A_CODEC = frozenset({"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"})
# RFC 8843 section 7.2 / RFC 8866 token: a mid goes into a=group:BUNDLE, so
# it must not hold spaces or anything else that would break that line.
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]{1,64}$")
_RECEIVING = ("recvonly", "sendrecv")


class BridgeError(ValueError):
    """A readable offer that we cannot serve: no usable media, no common codec.

    The message says why, for the 422 problem body.
    """


@dataclass(frozen=True)
class CodecChoice:
    """What a mountpoint (or a variant of it) must carry for one viewer.

    ``payload_type`` is the viewer's: if it differs from the mountpoint's,
    frames do not decode (Chrome: 0 frames; aiortc hides it by adopting any
    PT), so the gateway makes a mountpoint variant with this PT.
    """

    kind: str
    name: str
    clock_rate: int
    channels: int | None
    payload_type: int
    fmtp: str | None


@dataclass
class Bridged:
    """The two answers, and the labels the gateway needs afterwards."""

    viewer_answer: str  # A_v
    janus_answer: str  # A_j
    viewer_mids: dict[str, str] = field(default_factory=dict)  # Janus mid -> viewer mid
    viewer_bundle_mid: str = ""  # trickled viewer candidates on this mid are forwarded
    janus_bundle_mid: str = ""  # ... to Janus under this mid (Janus reads only its first)


# -- codec matching ------------------------------------------------------------


def _fmtp_params(fmtp: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip()
    return params


def _h264_profile(fmtp: str | None) -> tuple[str, str, str] | None:
    """(profile_idc, packetization-mode, full profile-level-id) of an H.264 fmtp.

    RFC 6184 section 8.1: no profile-level-id means 42000a (Baseline, level
    1.0), no packetization-mode means 0.  None if the profile-level-id is
    not 6 hex digits: nothing can match it.
    """
    params = _fmtp_params(fmtp)
    plid = params.get("profile-level-id", "42000a").lower()
    if not re.fullmatch(r"[0-9a-f]{6}", plid):
        return None
    return plid[:2], params.get("packetization-mode", "0"), plid


def _channels(kind: str, channels: int | None) -> int | None:
    """RFC 8866 section 6.6: an audio rtpmap without channels means one."""
    if kind == "audio":
        return channels or 1
    return channels


def _same_codec(kind: str, a: Codec, b: Codec) -> bool:
    """Same name, clock rate and channels; for H.264 also profile and packetization-mode."""
    if a.key != b.key or a.clock_rate != b.clock_rate:
        return False
    if _channels(kind, a.channels) != _channels(kind, b.channels):
        return False
    if a.key == "h264":
        pa, pb = _h264_profile(a.fmtp), _h264_profile(b.fmtp)
        return pa is not None and pb is not None and pa[:2] == pb[:2]
    return True


def _best_match(kind: str, wanted: Codec, offered: list[Codec]) -> Codec | None:
    """The viewer's codec for ``wanted``, preferring the same PT, then the exact H.264 profile-level-id.

    The same PT first because only then do frames decode without a variant;
    then an exact profile-level-id because aiortc lists 42001f before 42e01f
    and both match a 42e01f mountpoint by profile_idc.
    """
    matches = [c for c in offered if c.key not in _NOT_A_CODEC and _same_codec(kind, wanted, c)]
    if not matches:
        return None
    for c in matches:
        if c.pt == wanted.pt:
            return c
    if wanted.key == "h264":
        exact = _h264_profile(wanted.fmtp)
        for c in matches:
            got = _h264_profile(c.fmtp)
            if exact and got and got[2] == exact[2]:
                return c
    return matches[0]


def _rtx_for(codecs: list[Codec], pt: int) -> Codec | None:
    """The rtx codec (of an m-line's ``codecs``) whose apt names ``pt`` (RFC 4588 section 8.6)."""
    for c in codecs:
        if c.key in _RTX_NAMES and _fmtp_params(c.fmtp).get("apt") == str(pt):
            return c
    return None


# -- reading the viewer's offer -----------------------------------------------


def _is_rtp(media: MediaSection) -> bool:
    return media.kind in ("audio", "video") and "RTP" in media.proto.upper().split("/")


def _receiving(media: MediaSection) -> bool:
    """Can this viewer m-line take our media at all?

    WHEP draft-03 'Media Direction Attributes': a viewer's m-lines are
    recvonly (sendrecv tolerated).  A rejected m-line (port 0 without
    bundle-only), a mid we could not put into BUNDLE, or not RTP, is not usable.
    """
    return (
        _is_rtp(media)
        and not media.rejected
        and media.direction in _RECEIVING
        and media.mid is not None
        and bool(_TOKEN.match(media.mid))
    )


def _check_mids(offer: SessionDescription) -> None:
    """RFC 8843 section 7.2.1: a mid names one m-line; two with one mid cannot be bundled or answered."""
    seen: set[str] = set()
    for media in offer.media:
        mid = media.mid
        if mid is None:
            continue
        if mid in seen:
            raise sdp.SdpError(f"mid {mid[:20]!r} appears on two m-lines")
        seen.add(mid)


def _check_direction(offer: SessionDescription) -> None:
    live = [m for m in offer.media if _is_rtp(m) and not m.rejected]
    if live and not any(m.direction in _RECEIVING for m in live):
        directions = sorted({m.direction for m in live})
        raise BridgeError(
            "a WHEP offer must be recvonly (or sendrecv) on at least one m-line; "
            f"this one's media direction is {', '.join(directions)} "
            "(WHEP draft-03, Media Direction Attributes)"
        )


def _fingerprint(holders: list[list[Line]]) -> str | None:
    """sha-256 if offered (Janus expects it); else the first hash offered.

    ``holders`` in order of precedence: the BUNDLE-tag m-line, then the session.
    """
    for lines in holders:
        values = [a[1] for ln in lines if (a := ln.attribute) and a[0] == "fingerprint" and a[1]]
        if values:
            for value in values:
                if value.split(" ", 1)[0].lower() == "sha-256":
                    return value
            return values[0]
    return None


def _has(lines: list[Line], name: str) -> bool:
    return any((a := ln.attribute) and a[0] == name for ln in lines)


def _has_anywhere(offer: SessionDescription, name: str) -> bool:
    return _has(offer.session, name) or any(m.has(name) for m in offer.media)


# -- choose_codecs -------------------------------------------------------------


@probes.timed("sdp.choose_codecs")
def choose_codecs(viewer_offer: str | SessionDescription,
                  available: list[tuple[str, str, str | None]]) -> dict[str, CodecChoice]:
    """For each kind the stream carries, the viewer's matching codec.

    ``available`` is the mountpoint's media: ``(kind, janus codec name, fmtp)``,
    e.g. ``("video", "h264", "profile-level-id=42e01f;packetization-mode=1")``.

    The gateway calls this before ``watch`` to learn which payload types the
    mountpoint must carry for this viewer: if one differs from the
    mountpoint's, frames will not decode, and it must use (or make) a
    mountpoint variant with these PTs.

    Pairing is by kind in order, as in ``bridge()``: the stream's n-th medium
    of a kind goes to the viewer's n-th usable m-line of that kind.  A viewer
    may take only some kinds (video-only); then only those are in the result.
    Raises BridgeError if the viewer's offer sends or is inactive on every
    m-line, or if it accepts none of the stream's media.
    """
    offer = _read(viewer_offer)
    _check_mids(offer)
    _check_direction(offer)
    usable: dict[str, list[MediaSection]] = {}
    for media in offer.media:
        if _receiving(media):
            usable.setdefault(media.kind, []).append(media)
    result: dict[str, CodecChoice] = {}
    seen: dict[str, int] = {}
    wanted_names: list[str] = []
    for kind, janus_name, fmtp in available:
        index = seen.get(kind, 0)
        seen[kind] = index + 1
        spec = JANUS_CODECS.get(janus_name.lower())
        if spec is None or spec[0] != kind:
            raise BridgeError(f"the stream's {kind} codec {janus_name!r} is not one Janus knows")
        wanted_names.append(f"{kind} {janus_name}")
        candidates = usable.get(kind, [])
        if index >= len(candidates) or kind in result:
            continue
        wanted = Codec(-1, spec[1], spec[2], spec[3], fmtp)
        match = _best_match(kind, wanted, candidates[index].codecs())
        if match is not None:
            result[kind] = CodecChoice(kind, match.name, match.clock_rate, match.channels, match.pt, match.fmtp)
    if not result:
        offered = sorted({f"{m.kind} {c.name[:20]}" for ms in usable.values() for m in ms for c in m.codecs()
                          if c.key not in _NOT_A_CODEC})[:12]  # echoed in the 422 body: keep it short
        raise BridgeError(
            f"the viewer accepts none of the stream's media (stream: {', '.join(wanted_names) or 'none'}; "
            f"viewer receives: {', '.join(offered) or 'nothing'})"
        )
    return result


# -- bridge ----------------------------------------------------------------------


@dataclass
class _Pair:
    """One Janus m-line, the viewer m-line it goes to, and what both will say."""

    janus: MediaSection
    viewer: MediaSection
    janus_codec: Codec
    viewer_codec: Codec
    janus_rtx: Codec | None  # kept only when both sides use the same rtx PT
    viewer_rtx: Codec | None
    rtcp_fb: list[str]
    extmap: list[tuple[int, str]]


def _primary_codec(codecs: list[Codec]) -> Codec | None:
    """The media codec of a Janus m-line's ``codecs``: Janus offers one (plus its rtx)."""
    for c in codecs:
        if c.key not in _NOT_A_CODEC:
            return c
    return None


def _rtcp_fb(media: MediaSection, pt: int) -> list[str]:
    out: list[str] = []
    for value in media.attributes("rtcp-fb"):
        fmt, _, kind = (value or "").partition(" ")
        kind = " ".join(kind.split())
        if kind and fmt in (str(pt), "*") and kind not in out:
            out.append(kind)
    return out


def _extmaps(media: MediaSection) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for value in media.attributes("extmap"):
        parts = (value or "").split()
        if len(parts) < 2:
            continue
        ident = parts[0].split("/", 1)[0]
        if not re.fullmatch(r"[0-9]{1,3}", ident):
            continue
        out.append((int(ident), parts[1]))
    return out


def _pair(janus: MediaSection, viewer: MediaSection) -> _Pair | None:
    janus_codecs, viewer_codecs = janus.codecs(), viewer.codecs()  # read once: not cheap
    janus_codec = _primary_codec(janus_codecs)
    if janus_codec is None:
        return None
    viewer_codec = _best_match(janus.kind, janus_codec, viewer_codecs)
    if viewer_codec is None:
        return None
    # rtx: the viewer's rtx PT only if it equals Janus's.  Janus sends rtx
    # under its own PT, which the viewer would otherwise read as garbage.
    janus_rtx = _rtx_for(janus_codecs, janus_codec.pt)
    viewer_rtx = _rtx_for(viewer_codecs, viewer_codec.pt)
    if not (janus_rtx and viewer_rtx and janus_rtx.pt == viewer_rtx.pt
            and janus_rtx.clock_rate == viewer_rtx.clock_rate):
        janus_rtx = viewer_rtx = None
    # extmap: the same id and URI on both sides, because Janus writes its ids
    # into the packets and the viewer reads them with its own.
    viewer_ext = set(_extmaps(viewer))
    extmap = list(dict.fromkeys(e for e in _extmaps(janus) if e in viewer_ext and e[1] not in NEVER_EXTMAP))
    ids = Counter(i for i, _ in extmap)
    extmap = [e for e in extmap if ids[e[0]] == 1]  # one id for two URIs: trust neither
    viewer_fb = set(_rtcp_fb(viewer, viewer_codec.pt))
    rtcp_fb = [fb for fb in _rtcp_fb(janus, janus_codec.pt) if fb in viewer_fb]
    if not any(uri in TRANSPORT_CC_URIS for _, uri in extmap):
        rtcp_fb = [fb for fb in rtcp_fb if fb != "transport-cc"]
    return _Pair(janus, viewer, janus_codec, viewer_codec, janus_rtx, viewer_rtx, rtcp_fb, extmap)


def _rtpmap(pt: int, codec: Codec) -> Line:
    text = f"rtpmap:{pt} {codec.name}/{codec.clock_rate}"
    if codec.channels:
        text += f"/{codec.channels}"
    return Line("a", text)


def _codec_lines(pair: _Pair, codec: Codec, *, rtx_pt: int | None, fmtp: str | None) -> list[Line]:
    """rtpmap/fmtp/rtcp-fb of the chosen codec under ``codec.pt``, then its rtx if kept."""
    pt = codec.pt
    lines = [_rtpmap(pt, codec)]
    if fmtp:
        lines.append(Line("a", f"fmtp:{pt} {fmtp}"))
    lines += [Line("a", f"rtcp-fb:{pt} {fb}") for fb in pair.rtcp_fb]
    if rtx_pt is not None:
        lines.append(Line("a", f"rtpmap:{rtx_pt} rtx/{pair.janus_codec.clock_rate}"))
        lines.append(Line("a", f"fmtp:{rtx_pt} apt={pt}"))
    return lines


def _janus_ssrc_lines(pair: _Pair) -> list[Line]:
    """Janus's msid / ssrc / ssrc-group:FID, without the rtx SSRC if rtx was dropped.

    The viewer needs them to tie Janus's SSRCs to a track before the first
    packet; an rtx SSRC without rtx would announce a stream that never comes.
    """
    rtx_ssrcs: set[str] = set()
    for value in pair.janus.attributes("ssrc-group"):
        parts = (value or "").split()
        if parts and parts[0] == "FID":
            rtx_ssrcs.update(parts[2:])
    out: list[Line] = []
    for ln in pair.janus.lines:
        attr = ln.attribute
        if not attr:
            continue
        name, value = attr
        if name == "msid":
            out.append(ln)
        elif name == "ssrc-group" and pair.janus_rtx is not None:
            out.append(ln)
        elif name == "ssrc":
            ssrc = (value or "").split(" ", 1)[0]
            if pair.janus_rtx is not None or ssrc not in rtx_ssrcs:
                out.append(ln)
    return out


def _rejected(media: MediaSection) -> MediaSection:
    """An m-line turned down in an answer: port 0 and inactive (RFC 8843 section 7.3.3)."""
    out = MediaSection(kind=media.kind, port=0, proto=media.proto, formats=list(media.formats[:1]) or ["0"])
    if media.mid is not None:
        out.lines.append(Line("a", f"mid:{media.mid}"))
    out.lines.append(Line("a", "inactive"))
    return out


def _c_line(media: MediaSection | None, session: list[Line], default: str) -> Line:
    for lines in ([] if media is None else media.lines, session):
        for ln in lines:
            if ln.type == "c":
                return Line("c", ln.value)
    return Line("c", default)


def _pair_media(janus: SessionDescription, viewer: SessionDescription) -> dict[int, tuple[int, _Pair]]:
    """Pair by kind, in order: the n-th Janus m-line of a kind with the n-th usable viewer one.

    Returns {viewer index: (janus index, pair)} for the pairs with a common codec.
    """
    usable: dict[str, list[int]] = {}
    for i, media in enumerate(viewer.media):
        if _receiving(media):
            usable.setdefault(media.kind, []).append(i)
    seen: dict[str, int] = {}
    pairs: dict[int, tuple[int, _Pair]] = {}
    for j, media in enumerate(janus.media):
        if media.rejected or not _is_rtp(media) or media.mid is None:
            continue
        n = seen.get(media.kind, 0)
        seen[media.kind] = n + 1
        indexes = usable.get(media.kind, [])
        if n >= len(indexes):
            continue
        pair = _pair(media, viewer.media[indexes[n]])
        if pair is not None:
            pairs[indexes[n]] = (j, pair)
    return pairs


def _read(description: str | SessionDescription) -> SessionDescription:
    """Callers that hold the parsed offer pass it, so it is read once."""
    return sdp.parse(description) if isinstance(description, str) else description


@probes.timed("sdp.bridge")
def bridge(janus_offer: str, viewer_offer: str | SessionDescription) -> Bridged:
    """Write A_v (to the viewer) and A_j (to Janus) from O_j and O_v.

    Raises SdpError if either offer is unreadable or the viewer's lacks ICE
    credentials or a fingerprint; BridgeError if no medium can be served.
    """
    oj = sdp.parse(janus_offer)
    ov = _read(viewer_offer)
    _check_mids(ov)
    _check_direction(ov)
    pairs = _pair_media(oj, ov)
    if not pairs:
        raise BridgeError("no common codec: the viewer's offer accepts none of the stream's media")

    viewer_order = sorted(pairs)  # viewer m-line order
    accepted_viewer_mids = [ov.media[i].mid or "" for i in viewer_order]
    janus_order = sorted(j for j, _ in pairs.values())
    accepted_janus_mids = [oj.media[j].mid or "" for j in janus_order]
    if len(viewer_order) > 1 and not set(accepted_viewer_mids) <= set(ov.bundle_mids):
        raise BridgeError(
            "Janus carries all media on one transport: the viewer's offer must put "
            f"its media ({' '.join(accepted_viewer_mids)}) in one BUNDLE group"
        )

    # The viewer's transport: from its BUNDLE-tag m-line, which in our answer
    # is the first one we accept (RFC 8843 section 7.3.1), else the session.
    tag = ov.media[viewer_order[0]]
    v_ufrag = tag.attribute("ice-ufrag") or ov.attribute("ice-ufrag")
    v_pwd = tag.attribute("ice-pwd") or ov.attribute("ice-pwd")
    v_fp = _fingerprint([tag.lines, ov.session])
    if not v_ufrag or not v_pwd:
        raise sdp.SdpError("the viewer's offer has no ice-ufrag/ice-pwd")
    if not v_fp:
        raise sdp.SdpError("the viewer's offer has no DTLS fingerprint")
    v_candidates = tag.candidates
    v_ice_options = tag.attribute("ice-options") or ov.attribute("ice-options")

    # Janus's transport: the same on every m-line (it bundles everything).
    jtag = oj.media[janus_order[0]]
    j_ufrag = jtag.attribute("ice-ufrag") or oj.attribute("ice-ufrag")
    j_pwd = jtag.attribute("ice-pwd") or oj.attribute("ice-pwd")
    j_fp = _fingerprint([jtag.lines, oj.session])
    if not j_ufrag or not j_pwd or not j_fp:
        raise sdp.SdpError("Janus's offer has no ICE credentials or fingerprint")
    j_candidates = jtag.candidates
    j_ice_options = jtag.attribute("ice-options") or oj.attribute("ice-options")

    allow_mixed = _has_anywhere(oj, "extmap-allow-mixed") and _has_anywhere(ov, "extmap-allow-mixed")

    janus_side = _Transport(j_ufrag, j_pwd, j_fp, j_candidates, j_ice_options)
    viewer_side = _Transport(v_ufrag, v_pwd, v_fp, v_candidates, v_ice_options)
    viewer_answer = _answer(ov, oj, pairs, accepted_viewer_mids, allow_mixed, janus_side,
                            to_viewer=True, viewer_tag=tag)
    by_janus = {j: (i, pair) for i, (j, pair) in pairs.items()}
    janus_answer = _answer(oj, ov, by_janus, accepted_janus_mids, allow_mixed, viewer_side,
                           to_viewer=False, viewer_tag=tag)
    return Bridged(
        viewer_answer=str(viewer_answer),
        janus_answer=str(janus_answer),
        viewer_mids={pair.janus.mid or "": pair.viewer.mid or "" for _, (_, pair) in sorted(pairs.items())},
        viewer_bundle_mid=accepted_viewer_mids[0],
        janus_bundle_mid=accepted_janus_mids[0],
    )


@dataclass(frozen=True)
class _Transport:
    """One side's ICE and DTLS parameters, which the answer to the other side carries."""

    ufrag: str
    pwd: str
    fingerprint: str
    candidates: list[str]
    ice_options: str | None


def _answer(
    offer: SessionDescription, remote: SessionDescription, pairs: dict[int, tuple[int, _Pair]],
    bundle: list[str], allow_mixed: bool, transport: _Transport, *, to_viewer: bool,
    viewer_tag: MediaSection,
) -> SessionDescription:
    """An answer to ``offer`` (indexes of ``pairs`` are its m-lines) carrying
    the other side's ``transport``: A_v (``to_viewer``: the viewer's labels,
    Janus's transport) or A_j (Janus's labels, the viewer's transport).

    Where the two differ, Janus is the sender and an ICE-lite, half-trickle
    peer: A_v says sendonly/passive and carries Janus's SSRCs and its full
    candidate list; A_j says recvonly/active.
    """
    default_origin = "- 0 1 IN IP4 127.0.0.1" if to_viewer else "- 0 1 IN IP4 0.0.0.0"
    origin = next((ln.value for ln in remote.session if ln.type == "o"), default_origin)
    session = [Line("v", "0"), Line("o", origin), Line("s", "-"), Line("t", "0 0"),
               Line("a", "group:BUNDLE " + " ".join(bundle))]
    if allow_mixed:
        session.append(Line("a", "extmap-allow-mixed"))
    semantic = remote.attribute("msid-semantic")
    if to_viewer and semantic is not None:
        session.append(Line("a", f"msid-semantic:{semantic}"))
    if remote.has("ice-lite"):  # the viewer must then be controlling: no role conflict
        session.append(Line("a", "ice-lite"))
    ice_lines = [Line("a", f"ice-ufrag:{transport.ufrag}"), Line("a", f"ice-pwd:{transport.pwd}")]
    if transport.ice_options:
        ice_lines.append(Line("a", f"ice-options:{transport.ice_options}"))
    fingerprint = Line("a", f"fingerprint:{transport.fingerprint}")
    if not to_viewer:
        # Janus 1.1.2 reads the remote ufrag/pwd/fingerprint from the session or
        # the first m-line only: a video-only viewer (first m-line, audio,
        # rejected) fails `start` with "SDP missing mandatory information"
        # unless they are also at session level.
        session += [*ice_lines, fingerprint]
    # O_j holds every candidate (half-trickle); the viewer's may say it is done.
    end_of_candidates = to_viewer or _has_anywhere(remote, "end-of-candidates")
    media: list[MediaSection] = []
    for index, offered in enumerate(offer.media):
        if index not in pairs:
            media.append(_rejected(offered))
            continue
        _, pair = pairs[index]
        if to_viewer:
            codec, rtx = pair.viewer_codec, pair.viewer_rtx
            # Janus's fmtp where it names the format the viewer offered on
            # this PT, else the viewer's own: libwebrtc matches H.264 by profile.
            fmtp = offered_fmtp(offered.kind, pair.viewer_codec,
                                pair.janus_codec.fmtp or pair.viewer_codec.fmtp)
            port, c_line = pair.janus.port or 9, _c_line(pair.janus, remote.session, "IN IP4 0.0.0.0")
            direction, setup = "sendonly", "passive"
        else:
            codec, rtx = pair.janus_codec, pair.janus_rtx
            fmtp = pair.viewer_codec.fmtp
            port, c_line = 9, _c_line(viewer_tag, remote.session, "IN IP4 0.0.0.0")
            direction, setup = "recvonly", "active"
        rtx_pt = rtx.pt if rtx else None
        out = MediaSection(kind=offered.kind, port=port, proto=offered.proto,
                           formats=[str(codec.pt)] + ([str(rtx_pt)] if rtx_pt is not None else []))
        lines = [c_line, Line("a", f"mid:{offered.mid}"), Line("a", direction), Line("a", "rtcp-mux"),
                 *ice_lines, fingerprint, Line("a", f"setup:{setup}")]
        lines += _codec_lines(pair, codec, rtx_pt=rtx_pt, fmtp=fmtp)
        lines += [Line("a", f"extmap:{i_} {uri}") for i_, uri in pair.extmap]
        if to_viewer:
            lines += _janus_ssrc_lines(pair)
        lines += [Line("a", f"candidate:{c}") for c in transport.candidates]
        if end_of_candidates:
            lines.append(Line("a", "end-of-candidates"))
        out.lines = lines
        media.append(out)
    return SessionDescription(session=session, media=media)


def map_trickle_candidates(fragment_candidates: list[tuple[str | None, str]], bridged: Bridged) -> list[str]:
    """Keep candidates for the viewer's BUNDLE-tag mid (or with mid None), drop others.

    Chrome gathers ports per m-line until BUNDLE is agreed; only the tag
    m-line's transport survives, so candidates for the other mids would
    give Janus addresses nobody listens on.  The kept ones go to Janus under
    ``bridged.janus_bundle_mid`` (index 0); they are returned as given, in
    the ``SdpFragment.candidates`` form (without the ``candidate:`` prefix).
    """
    return [cand for mid, cand in fragment_candidates if mid is None or mid == bridged.viewer_bundle_mid]
