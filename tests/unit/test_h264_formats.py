"""H.264 across publishers and viewers (``gateway.sdp.formats``).

Every publisher offer (OBS, Chrome, Firefox, Safari, aiortc) against every
browser viewer offer (Chrome, Firefox, Safari): the WHEP answer must carry,
on each payload type, a format the viewer offered (RFC 3264 section 6.1,
RFC 6184 section 8.2.2), on both of the gateway's paths:

- bridged (Janus 1.1.2): ``gateway.sdp.bridge`` writes the viewer's answer
  from Janus's offer for a mountpoint variant with the viewer's PTs;
- native (Janus >= 1.1.4): Janus answers the viewer's offer itself with the
  first PT of the mountpoint's codec and the mountpoint's fmtp; the gateway
  narrows the offer to the PT it chose, and mends the answer.

What Janus does is modelled from its source (VideoRoom: the room's
``h264_profile`` picks the first non-mode-0 PT with that profile-level-id,
else the first H.264 PT; Streaming 1.4: the first PT of the codec, with the
mountpoint's fmtp).  ``tests/integration/test_whep.py`` checks it on real
Janus.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.sdp import model as sdp
from gateway.sdp.bridge import bridge, choose_codecs
from gateway.sdp.formats import (
    foreign_formats,
    h264_format,
    mend_answer,
    narrow_offer,
    room_h264_profile,
    same_format,
)
from gateway.sdp.model import Codec

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sdp"
PUBLISHERS = ["obs_h264", "chrome_publish", "firefox_publish", "safari_publish", "aiortc_publish"]
VIEWERS = ["chrome_view", "firefox_view", "safari_view"]


def _read(name: str) -> str:
    return (FIXTURES / f"{name}.sdp").read_bytes().decode()


def videoroom_h264(offer: sdp.SessionDescription, profile: str | None) -> Codec:
    """The publisher's H.264 codec VideoRoom takes for a room with ``h264_profile``."""
    video = next(m for m in offer.media if m.kind == "video")
    h264 = [c for c in video.codecs() if c.key == "h264"]
    if profile:
        for codec in h264:
            fmtp = codec.fmtp or ""
            if f"profile-level-id={profile}" in fmtp.lower() and "packetization-mode=0" not in fmtp:
                return codec
    return h264[0]


def mountpoint_fmtp(publisher: str) -> str:
    """The fmtp of the publisher's H.264 as the gateway gives it to the mountpoint."""
    offer = sdp.parse(_read(publisher))
    profile = room_h264_profile(offer)
    codec = videoroom_h264(offer, profile)
    if profile:  # Janus answers with exactly this, and the gateway reads its answer
        return f"profile-level-id={profile};packetization-mode=1"
    return codec.fmtp or ""


def janus_streaming_offer(audio_pt: int, video_pt: int, fmtp: str) -> str:
    """Janus 1.1.2's offer for a mountpoint variant (Opus + H.264) with these PTs."""
    desc = sdp.parse(_read("janus_streaming_opus_h264"))
    audio, video = desc.media
    audio.keep_codecs({111: audio_pt})
    video.keep_codecs({96: video_pt})
    for i, ln in enumerate(video.lines):
        if ln.attribute and ln.attribute[0] == "fmtp":
            video.lines[i] = sdp.Line("a", f"fmtp:{video_pt} {fmtp}")
    return str(desc)


def janus_native_answer(offer_text: str, fmtp: str) -> str:
    """Janus 1.4's Streaming answer, as far as formats go: per m-line the
    first PT of the mountpoint's codec in the offer, with the mountpoint's
    fmtp (its transport lines do not matter here)."""
    offer = sdp.parse(offer_text)
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    for media in offer.media:
        want = "opus" if media.kind == "audio" else "h264"
        codec = next(c for c in media.codecs() if c.key == want)
        rtpmap = f"{codec.pt} {codec.name}/{codec.clock_rate}" + (f"/{codec.channels}" if codec.channels else "")
        lines += [f"m={media.kind} 9 UDP/TLS/RTP/SAVPF {codec.pt}", f"a=mid:{media.mid}", "a=sendonly",
                  f"a=rtpmap:{rtpmap}"]
        if media.kind == "video":
            lines.append(f"a=fmtp:{codec.pt} {fmtp}")
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_every_publisher_is_asked_for_constrained_baseline(publisher: str) -> None:
    """Each of them offers 42e01f with packetization-mode 1, and it is what
    every browser offers; aiortc and Chrome list 42001f first, Safari 640c1f."""
    offer = sdp.parse(_read(publisher))
    assert room_h264_profile(offer) == "42e01f"
    assert h264_format(videoroom_h264(offer, "42e01f").fmtp) == ("42e01f", "1")


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_bridged_answer_carries_the_viewers_formats(publisher: str, viewer: str) -> None:
    fmtp = mountpoint_fmtp(publisher)
    offer = _read(viewer)
    choices = choose_codecs(offer, [("audio", "opus", None), ("video", "h264", fmtp)])
    assert set(choices) == {"audio", "video"}
    janus = janus_streaming_offer(choices["audio"].payload_type, choices["video"].payload_type, fmtp)
    answer = sdp.parse(bridge(janus, offer).viewer_answer)
    assert foreign_formats(answer, sdp.parse(offer)) == []
    video = next(m for m in answer.media if m.kind == "video" and not m.rejected)
    assert h264_format(video.codecs()[0].fmtp) == ("42e01f", "1")


@pytest.mark.parametrize("viewer", VIEWERS)
@pytest.mark.parametrize("publisher", PUBLISHERS)
def test_native_answer_carries_the_viewers_formats(publisher: str, viewer: str) -> None:
    fmtp = mountpoint_fmtp(publisher)
    offer = _read(viewer)
    choices = choose_codecs(offer, [("audio", "opus", None), ("video", "h264", fmtp)])
    narrowed = narrow_offer(offer, {k: c.payload_type for k, c in choices.items()})
    answer = janus_native_answer(narrowed, fmtp)
    assert foreign_formats(sdp.parse(answer), sdp.parse(offer)) == []  # no mending needed
    assert mend_answer(answer, offer) == answer


def test_native_answer_without_narrowing_is_mended() -> None:
    """Janus 1.4 on Safari's full offer takes PT 96 (High 640c1f) and writes
    the mountpoint's 42e01f on it; the mended answer says what Safari offered."""
    offer = _read("safari_view")
    answer = janus_native_answer(offer, "profile-level-id=42e01f;packetization-mode=1")
    wrong = foreign_formats(sdp.parse(answer), sdp.parse(offer))
    assert wrong and "PT 96" in wrong[0]
    mended = mend_answer(answer, offer)
    assert foreign_formats(sdp.parse(mended), sdp.parse(offer)) == []
    video = next(m for m in sdp.parse(mended).media if m.kind == "video")
    assert video.codecs()[0].fmtp == "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f"


def test_narrow_offer_keeps_the_chosen_pt_and_its_rtx() -> None:
    offer = _read("chrome_view")
    narrowed = sdp.parse(narrow_offer(offer, {"video": 108}))
    video = next(m for m in narrowed.media if m.kind == "video")
    assert [(c.pt, c.key) for c in video.codecs()] == [(108, "h264"), (109, "rtx")]
    audio = next(m for m in narrowed.media if m.kind == "audio")
    assert audio.formats == next(m for m in sdp.parse(offer).media if m.kind == "audio").formats
    assert narrow_offer(offer, {}) == offer


@pytest.mark.parametrize("offered,answered,same", [
    ("profile-level-id=42e01f;packetization-mode=1", "packetization-mode=1;profile-level-id=42E01F", True),
    ("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
     "profile-level-id=42e034;packetization-mode=1", True),  # another level, same profile
    ("profile-level-id=42e01f;packetization-mode=1", "profile-level-id=42001f;packetization-mode=1", False),
    ("profile-level-id=42e01f;packetization-mode=1", "profile-level-id=42e01f", False),  # mode 0
    ("profile-level-id=640c1f;packetization-mode=1", "profile-level-id=42e01f;packetization-mode=1", False),
])
def test_same_h264_format(offered: str, answered: str, same: bool) -> None:
    """RFC 6184 section 8.2.2: profile (not level) and packetization-mode."""
    assert same_format("video", Codec(98, "H264", 90000, None, offered),
                       Codec(98, "H264", 90000, None, answered)) is same


def test_no_constrained_baseline_no_profile() -> None:
    offer = sdp.parse(_read("chrome_publish"))
    video = next(m for m in offer.media if m.kind == "video")
    video.keep_codecs({102: 102})  # 42001f only: nothing to ask for, Janus takes its first H.264
    assert room_h264_profile(offer) is None


@pytest.mark.parametrize("viewer", VIEWERS)
def test_bridged_answer_for_a_baseline_only_publisher(viewer: str) -> None:
    """A publisher with 42001f only: the mountpoint carries Baseline, which a
    viewer's 42e01f PT is chosen for (same profile_idc and mode); the answer
    then names the viewer's own format on it, not Janus's 42001f."""
    fmtp = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
    offer = _read(viewer)
    choices = choose_codecs(offer, [("audio", "opus", None), ("video", "h264", fmtp)])
    janus = janus_streaming_offer(choices["audio"].payload_type, choices["video"].payload_type, fmtp)
    answer = sdp.parse(bridge(janus, offer).viewer_answer)
    assert foreign_formats(answer, sdp.parse(offer)) == []


def test_native_answer_without_narrowing_for_chrome_is_foreign() -> None:
    """Why the offer is narrowed: on Chrome's full offer Janus 1.4 takes PT
    102 (42001f) and writes the mountpoint's 42e01f on it."""
    offer = _read("chrome_view")
    answer = janus_native_answer(offer, "profile-level-id=42e01f;packetization-mode=1")
    assert foreign_formats(sdp.parse(answer), sdp.parse(offer)) == [(
        "video PT 102 is H264 profile-level-id=42e01f;packetization-mode=1, offered as H264 "
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f")]
