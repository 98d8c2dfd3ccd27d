"""Media formats: which H.264 a stream should carry, and answers that name
only formats the viewer offered.

Why this exists: a WHEP answer that puts a format on a payload type the
viewer offered with another format (H.264 ``42001f`` on Safari's ``42e01f``
PT) can leave a libwebrtc-based browser without a decoder, since libwebrtc
matches H.264 by profile.  Browsers differ in what they offer (Chrome and
aiortc ``42001f`` before ``42e01f``; Firefox ``42e01f``; Safari ``640c1f``
and ``42e01f``), and only constrained baseline (``42e01f``,
packetization-mode 1) is offered by every one of them.  So:

- a publisher that offers constrained baseline is asked for it
  (``room_h264_profile``: VideoRoom's ``h264_profile`` room setting);
- the offer a viewer sends Janus ≥ 1.1.4 keeps only the payload type the
  gateway chose for it (``narrow_offer``), because Janus's Streaming plugin
  would otherwise answer with the first H.264 PT, whatever its profile;
- every answer is checked, and mended, so each payload type carries a
  format its viewer offered (``offered_fmtp``, ``mend_answer``).

Pure functions on text or ``gateway.sdp.model`` objects, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.sdp import model as sdp
from gateway.sdp.model import Codec, MediaSection

CONSTRAINED_BASELINE = "42e01f"  # level 3.1: what every browser offers
_PLID = re.compile(r"^[0-9a-fA-F]{6}$")
_NOT_A_FORMAT = frozenset({"rtx", "red", "ulpfec", "flexfec-03", "cn", "telephone-event"})


def _params(fmtp: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def h264_format(fmtp: str | None) -> tuple[str, str] | None:
    """(profile-level-id, packetization-mode) of an H.264 fmtp, lower case.

    RFC 6184 section 8.1 defaults: 42000a and mode 0.  None when the
    profile-level-id is not 6 hex digits.
    """
    params = _params(fmtp)
    plid = params.get("profile-level-id", "42000a")
    if not _PLID.match(plid):
        return None
    return plid.lower(), params.get("packetization-mode", "0")


def is_constrained_baseline(plid: str) -> bool:
    """RFC 6184 section 8.1, table 5: the profile_idc/profile-iop pairs that
    mean constrained baseline (what libwebrtc also reads them as)."""
    idc, iop = int(plid[:2], 16), int(plid[2:4], 16)
    return ((idc == 0x42 and iop & 0x40 != 0) or (idc == 0x4D and iop & 0x80 != 0)
            or (idc == 0x58 and iop & 0xC0 == 0xC0))


def _profile(plid: str) -> str:
    """The H.264 profile a profile-level-id names, without its level (the
    level is a limit, and level-asymmetry-allowed lets it differ)."""
    return "constrained-baseline" if is_constrained_baseline(plid) else plid[:4]


def room_h264_profile(offer: sdp.SessionDescription) -> str | None:
    """The profile-level-id to ask VideoRoom for (``h264_profile``), or None.

    Constrained baseline with packetization-mode 1, ``42e01f`` itself when
    the publisher offers it, so that every browser viewer finds the stream's
    format in its own offer.  Janus takes the first H.264 PT whose fmtp has
    that profile-level-id and is not mode 0, and falls back to the first
    H.264 PT when none has it: without one, nothing is asked.
    """
    found: list[str] = []
    for media in offer.media:
        if media.kind != "video" or media.rejected:
            continue
        for codec in media.codecs():
            fmt = h264_format(codec.fmtp) if codec.key == "h264" else None
            if fmt and fmt[1] == "1" and is_constrained_baseline(fmt[0]):
                found.append(fmt[0])
    if CONSTRAINED_BASELINE in found:
        return CONSTRAINED_BASELINE
    return found[0] if found else None


def same_format(kind: str, offered: Codec, answered: Codec) -> bool:
    """Does ``answered`` name the format ``offered`` names?

    Name, clock rate and channels (an audio rtpmap without channels means
    one, RFC 8866 section 6.6); for H.264 also the profile (profile-level-id
    without its level) and packetization-mode (RFC 6184 section 8.2.2); for
    VP9 the profile-id.
    Other fmtp parameters are preferences, not the format.
    """
    if offered.key != answered.key or offered.clock_rate != answered.clock_rate:
        return False
    if kind == "audio" and (offered.channels or 1) != (answered.channels or 1):
        return False
    if offered.key == "h264":
        a, b = h264_format(offered.fmtp), h264_format(answered.fmtp)
        return a is not None and b is not None and (_profile(a[0]), a[1]) == (_profile(b[0]), b[1])
    if offered.key == "vp9":
        return _params(offered.fmtp).get("profile-id", "0") == _params(answered.fmtp).get("profile-id", "0")
    return True


def offered_fmtp(kind: str, offered: Codec, fmtp: str | None) -> str | None:
    """The fmtp to answer ``offered`` with: ``fmtp`` (the stream's) when it
    names the same format, else the viewer's own."""
    candidate = Codec(offered.pt, offered.name, offered.clock_rate, offered.channels, fmtp)
    return fmtp if same_format(kind, offered, candidate) else offered.fmtp


def narrow_offer(offer_text: str, chosen: dict[str, int]) -> str:
    """The viewer's offer with only the chosen payload type (and its rtx)
    on each m-line of a chosen kind; the rest is unchanged.

    Janus ≥ 1.1.4 answers a viewer's offer with the first PT of the
    mountpoint's codec; with one PT left, that is the gateway's choice.
    """
    desc = sdp.parse(offer_text)
    changed = False
    for media in desc.media:
        pt = chosen.get(media.kind)
        if pt is None or media.rejected or str(pt) not in media.formats:
            continue
        keep = {pt: pt}
        for codec in media.codecs():
            if codec.key == "rtx" and _params(codec.fmtp).get("apt") == str(pt):
                keep[codec.pt] = codec.pt
        if len(keep) < len(media.formats):
            media.keep_codecs(keep)
            changed = True
    return str(desc) if changed else offer_text


def _offered_codecs(answer: sdp.SessionDescription, offer: sdp.SessionDescription,
                    ) -> Iterator[tuple[MediaSection, dict[int, Codec]]]:
    """Each accepted answer m-line with the codecs its offer m-line (same
    mid, else same index) offered, by payload type."""
    offered_by_mid = {m.mid: m for m in offer.media if m.mid is not None}
    for index, media in enumerate(answer.media):
        source = offered_by_mid.get(media.mid) if media.mid is not None else None
        if source is None and index < len(offer.media):
            source = offer.media[index]
        if source is not None and not media.rejected:
            yield media, {c.pt: c for c in source.codecs()}


def foreign_formats(answer: sdp.SessionDescription, offer: sdp.SessionDescription) -> list[str]:
    """Each payload type of ``answer`` that does not carry the format the
    viewer offered under it, described for an error message; [] if none."""
    wrong: list[str] = []
    for media, offered in _offered_codecs(answer, offer):
        for codec in media.codecs():
            if codec.key in _NOT_A_FORMAT:
                continue
            mine = offered.get(codec.pt)
            if mine is None:
                wrong.append(f"{media.kind} PT {codec.pt} ({codec.name}) was not offered")
            elif not same_format(media.kind, mine, codec):
                wrong.append(f"{media.kind} PT {codec.pt} is {codec.name} {codec.fmtp or ''}".rstrip()
                             + f", offered as {mine.name} {mine.fmtp or ''}".rstrip())
    return wrong


def mend_answer(answer_text: str, offer_text: str) -> str:
    """``answer_text`` with each payload type's fmtp made the viewer's own
    where the answer named another format under that PT (as Janus's
    Streaming plugin does: it writes the mountpoint's fmtp on whatever H.264
    PT it picked).  Unchanged text when nothing needed mending."""
    answer, offer = sdp.parse(answer_text), sdp.parse(offer_text)
    if not foreign_formats(answer, offer):
        return answer_text
    for media, offered in _offered_codecs(answer, offer):
        for codec in media.codecs():
            mine = offered.get(codec.pt)
            if mine is not None and codec.key not in _NOT_A_FORMAT \
                    and not same_format(media.kind, mine, codec):
                _set_fmtp(media, codec.pt, mine.fmtp)
    return str(answer)


def _set_fmtp(media: MediaSection, pt: int, fmtp: str | None) -> None:
    """Replace (or add after its rtpmap, or drop) the fmtp line of ``pt``."""
    out: list[sdp.Line] = []
    for ln in media.lines:
        attr = ln.attribute
        if attr and attr[0] == "fmtp" and (attr[1] or "").split(" ", 1)[0] == str(pt):
            continue
        out.append(ln)
        if fmtp and attr and attr[0] == "rtpmap" and (attr[1] or "").split(" ", 1)[0] == str(pt):
            out.append(sdp.Line("a", f"fmtp:{pt} {fmtp}"))
    media.lines = out
