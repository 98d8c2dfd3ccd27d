"""Offer bridging (``gateway.sdp.bridge``) on real offers.

Janus's offers (``janus_streaming_*.sdp``) were captured from Janus 1.1.2's
Streaming plugin (``watch`` on an RTP mountpoint: Opus 111 + VP8 96, Opus
111 + H.264 96 42e01f mode 1, and VP8 again with ``ice_lite = true``).  The
viewers' offers are the real and reconstructed ones in
``tests/fixtures/sdp/*_view.sdp`` plus aiortc offers made here in several
layouts (video-only, video before audio, H.264 only).  Every rule of
``/work/shared/whep-bridging.md`` is checked on the written answers, and a
Hypothesis test feeds garbled viewer offers.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sdp import model as sdp
from gateway.sdp.model import MediaSection, SessionDescription, SdpError
from gateway.sdp.bridge import (
    NEVER_EXTMAP,
    BridgeError,
    Bridged,
    CodecChoice,
    bridge,
    choose_codecs,
    map_trickle_candidates,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sdp"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def _read(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode()


JANUS = {
    "vp8": _read("janus_streaming_opus_vp8.sdp"),
    "h264": _read("janus_streaming_opus_h264.sdp"),
    "icelite": _read("janus_streaming_icelite.sdp"),
}
JANUS_MEDIA = {
    "vp8": [("audio", "opus", None), ("video", "vp8", None)],
    "icelite": [("audio", "opus", None), ("video", "vp8", None)],
    "h264": [("audio", "opus", None), ("video", "h264", "profile-level-id=42e01f;packetization-mode=1")],
}
FILE_VIEWERS = {name: _read(f"{name}_view.sdp") for name in ("chrome", "firefox", "safari", "aiortc")}


# -- aiortc viewer offers made here ------------------------------------------


async def _aiortc_offer(layout: str, h264_only: bool = False) -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: nothing leaves the host
    try:
        for letter in layout:
            kind = {"a": "audio", "v": "video"}[letter]
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            if h264_only and kind == "video":
                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType in ("video/H264", "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def _make_aiortc_offers() -> dict[str, str]:
    async def all_offers() -> dict[str, str]:
        return {
            "aiortc_av": await _aiortc_offer("av"),
            "aiortc_v": await _aiortc_offer("v"),
            "aiortc_va": await _aiortc_offer("va"),
            "aiortc_av_h264": await _aiortc_offer("av", h264_only=True),
        }
    return asyncio.run(all_offers())


@pytest.fixture(scope="module")
def aiortc_offers() -> dict[str, str]:
    return _make_aiortc_offers()


@pytest.fixture(scope="module")
def viewers(aiortc_offers: dict[str, str]) -> dict[str, str]:
    return {**FILE_VIEWERS, **aiortc_offers}


VIEWER_NAMES = [*FILE_VIEWERS, "aiortc_av", "aiortc_v", "aiortc_va", "aiortc_av_h264"]
# Which (Janus offer, viewer) pairs have a common video codec.  aiortc_av_h264
# offers H.264 only, so VP8 streams give it audio only.
NO_VIDEO = {("vp8", "aiortc_av_h264"), ("icelite", "aiortc_av_h264")}
COMBOS = [(j, v) for j in JANUS for v in VIEWER_NAMES]


# -- helpers ---------------------------------------------------------------------


def attrs(media: MediaSection | SessionDescription, name: str) -> list[str]:
    lines = media.lines if isinstance(media, MediaSection) else media.session
    return [a[1] or "" for ln in lines if (a := ln.attribute) and a[0] == name]


def has(media: MediaSection | SessionDescription, name: str) -> bool:
    lines = media.lines if isinstance(media, MediaSection) else media.session
    return any((a := ln.attribute) and a[0] == name for ln in lines)


def accepted(desc: SessionDescription) -> list[MediaSection]:
    return [m for m in desc.media if m.port != 0]


def extmaps(media: MediaSection) -> set[tuple[int, str]]:
    out = set()
    for value in attrs(media, "extmap"):
        ident, uri = value.split()[:2]
        out.add((int(ident.split("/")[0]), uri))
    return out


def rtcp_fb(media: MediaSection, pt: int) -> set[str]:
    out = set()
    for value in attrs(media, "rtcp-fb"):
        fmt, _, kind = value.partition(" ")
        if fmt in (str(pt), "*"):
            out.add(kind)
    return out


def rtx_pt(media: MediaSection, pt: int) -> int | None:
    for c in media.codecs():
        if c.key == "rtx" and (c.fmtp or "").replace(" ", "") == f"apt={pt}":
            return c.pt
    return None


def viewer_media_by_mid(offer: SessionDescription, mid: str) -> MediaSection:
    return next(m for m in offer.media if m.mid == mid)


def fingerprints(desc: SessionDescription, media: MediaSection) -> list[str]:
    return attrs(media, "fingerprint") or attrs(desc, "fingerprint")


def run(janus: str, viewer_name: str, viewers: dict[str, str]) -> tuple[Bridged, SessionDescription, SessionDescription]:
    result = bridge(JANUS[janus], viewers[viewer_name])
    return result, sdp.parse(result.viewer_answer), sdp.parse(result.janus_answer)


def _drop_media(text: str, kind: str) -> str:
    """The offer without its m-sections of ``kind`` (and without them in BUNDLE)."""
    desc = sdp.parse(text)
    gone = {m.mid for m in desc.media if m.kind == kind}
    desc.media = [m for m in desc.media if m.kind != kind]
    for i, ln in enumerate(desc.session):
        if ln.value.startswith("group:BUNDLE"):
            mids = [x for x in ln.value.split()[1:] if x not in gone]
            desc.session[i] = sdp.Line("a", "group:BUNDLE " + " ".join(mids))
    return str(desc)


def _keep_only_pts(text: str, kind: str, pts: set[int]) -> str:
    """The offer with only these payload types on its ``kind`` m-line."""
    desc = sdp.parse(text)
    for m in desc.media:
        if m.kind != kind:
            continue
        m.keep_codecs({pt: pt for pt in pts})
    return str(desc)


# -- round trip and the shape of both answers --------------------------------


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_both_answers_parse_round_trip_and_mirror_their_offers(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    ov, oj = sdp.parse(viewers[viewer]), sdp.parse(JANUS[janus])
    for text in (result.viewer_answer, result.janus_answer):
        assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
        assert str(sdp.parse(text)) == text
    # An answer has the offer's m-lines, in its order, with its mids (RFC 3264 section 6).
    assert [(m.kind, m.mid) for m in av.media] == [(m.kind, m.mid) for m in ov.media]
    assert [(m.kind, m.mid) for m in aj.media] == [(m.kind, m.mid) for m in oj.media]
    assert len(accepted(av)) == len(accepted(aj)) == len(result.viewer_mids)
    for jmid, vmid in result.viewer_mids.items():
        assert viewer_media_by_mid(av, vmid).kind == viewer_media_by_mid(aj, jmid).kind


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_directions_setup_and_rtcp_mux(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    _, av, aj = run(janus, viewer, viewers)
    for m in accepted(av):
        assert m.direction == "sendonly"
        assert attrs(m, "setup") == ["passive"]  # Janus is the DTLS server
        assert has(m, "rtcp-mux")
    for m in accepted(aj):
        assert m.direction == "recvonly"
        assert attrs(m, "setup") == ["active"]  # the viewer is the DTLS client
        assert has(m, "rtcp-mux")
    for m in [*av.media, *aj.media]:
        if m.port == 0:
            assert m.direction == "inactive"


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_bundle_groups_and_tags(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    assert av.bundle_mids == [m.mid for m in accepted(av)]
    assert aj.bundle_mids == [m.mid for m in accepted(aj)]
    assert result.viewer_bundle_mid == av.bundle_mids[0]
    assert result.janus_bundle_mid == aj.bundle_mids[0]
    assert set(result.viewer_mids) == set(aj.bundle_mids)
    assert set(result.viewer_mids.values()) == set(av.bundle_mids)


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_payload_types_viewer_in_av_janus_in_aj(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    ov, oj = sdp.parse(viewers[viewer]), sdp.parse(JANUS[janus])
    choices = choose_codecs(viewers[viewer], JANUS_MEDIA[janus])
    for jmid, vmid in result.viewer_mids.items():
        a_v, a_j = viewer_media_by_mid(av, vmid), viewer_media_by_mid(aj, jmid)
        o_j = viewer_media_by_mid(oj, jmid)
        janus_codec = o_j.codecs()[0]
        v_codec, j_codec = a_v.codecs()[0], a_j.codecs()[0]
        # The viewer's PT in A_v: the same one choose_codecs() tells the gateway to carry.
        assert v_codec.pt == choices[a_v.kind].payload_type
        assert int(a_v.formats[0]) == v_codec.pt
        assert v_codec.pt in {c.pt for c in viewer_media_by_mid(ov, vmid).codecs()}
        # Janus's PT in A_j.
        assert j_codec.pt == janus_codec.pt
        assert v_codec.key == j_codec.key == janus_codec.key
        assert (v_codec.clock_rate, v_codec.channels) == (janus_codec.clock_rate, janus_codec.channels)


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_rtx_only_when_both_sides_use_the_same_rtx_pt(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    ov, oj = sdp.parse(viewers[viewer]), sdp.parse(JANUS[janus])
    for jmid, vmid in result.viewer_mids.items():
        a_v, a_j = viewer_media_by_mid(av, vmid), viewer_media_by_mid(aj, jmid)
        v_pt, j_pt = a_v.codecs()[0].pt, a_j.codecs()[0].pt
        janus_rtx = rtx_pt(viewer_media_by_mid(oj, jmid), j_pt)
        viewer_rtx = rtx_pt(viewer_media_by_mid(ov, vmid), v_pt)
        kept = janus_rtx is not None and janus_rtx == viewer_rtx
        assert rtx_pt(a_v, v_pt) == (viewer_rtx if kept else None)
        assert rtx_pt(a_j, j_pt) == (janus_rtx if kept else None)
        assert len(a_v.formats) == len(a_j.formats) == (2 if kept else 1)
        # The rtx SSRC (second of ssrc-group:FID) is announced only with rtx.
        groups = attrs(viewer_media_by_mid(oj, jmid), "ssrc-group")
        if groups:
            rtx_ssrc = groups[0].split()[2]
            announced = {v.split()[0] for v in attrs(a_v, "ssrc")}
            assert (rtx_ssrc in announced) == kept
            assert bool(attrs(a_v, "ssrc-group")) == kept


def test_rtx_kept_for_chrome_dropped_for_aiortc_and_firefox(viewers: dict[str, str]) -> None:
    _, chrome, _ = run("vp8", "chrome", viewers)
    assert viewer_media_by_mid(chrome, "1").formats == ["96", "97"]
    _, aiortc, _ = run("vp8", "aiortc", viewers)
    assert viewer_media_by_mid(aiortc, "1").formats == ["97"]  # aiortc: VP8 97, rtx 98 vs Janus 97
    _, firefox, aj = run("vp8", "firefox", viewers)
    assert viewer_media_by_mid(firefox, "1").formats == ["120"]  # Firefox: rtx 124
    assert viewer_media_by_mid(aj, "v").formats == ["96"]


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_rtcp_fb_is_the_intersection_without_orphan_transport_cc(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    ov, oj = sdp.parse(viewers[viewer]), sdp.parse(JANUS[janus])
    for jmid, vmid in result.viewer_mids.items():
        a_v, a_j = viewer_media_by_mid(av, vmid), viewer_media_by_mid(aj, jmid)
        v_pt, j_pt = a_v.codecs()[0].pt, a_j.codecs()[0].pt
        expected = rtcp_fb(viewer_media_by_mid(ov, vmid), v_pt) & rtcp_fb(viewer_media_by_mid(oj, jmid), j_pt)
        if not any(uri == TRANSPORT_CC for _, uri in extmaps(a_v)):
            expected.discard("transport-cc")
        assert rtcp_fb(a_v, v_pt) == expected
        assert rtcp_fb(a_j, j_pt) == expected
    # Janus's offers list transport-cc but carry no transport-wide-cc extension.
    assert "transport-cc" not in result.viewer_answer
    assert "transport-cc" not in result.janus_answer


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_extmap_same_id_and_uri_on_both_sides_and_never_mid_or_rid(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, aj = run(janus, viewer, viewers)
    ov, oj = sdp.parse(viewers[viewer]), sdp.parse(JANUS[janus])
    for text in (result.viewer_answer, result.janus_answer):
        for uri in NEVER_EXTMAP:
            assert uri not in text
        assert "sdes:mid" not in text and "rtp-stream-id" not in text
    for jmid, vmid in result.viewer_mids.items():
        a_v, a_j = viewer_media_by_mid(av, vmid), viewer_media_by_mid(aj, jmid)
        both = extmaps(viewer_media_by_mid(ov, vmid)) & extmaps(viewer_media_by_mid(oj, jmid))
        assert extmaps(a_v) == extmaps(a_j) == {e for e in both if e[1] not in NEVER_EXTMAP}


def test_abs_send_time_survives_for_chrome_not_for_aiortc(viewers: dict[str, str]) -> None:
    _, chrome, _ = run("vp8", "chrome", viewers)
    assert extmaps(viewer_media_by_mid(chrome, "1")) == {
        (2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")}
    _, aiortc, _ = run("vp8", "aiortc", viewers)  # aiortc: abs-send-time is id 3, Janus's 2
    assert extmaps(viewer_media_by_mid(aiortc, "1")) == set()


def test_transport_cc_survives_only_with_its_extension(viewers: dict[str, str]) -> None:
    with_ext = JANUS["vp8"].replace(
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n"
        f"a=extmap:3 {TRANSPORT_CC}\r\n")
    assert with_ext != JANUS["vp8"]
    result = bridge(with_ext, viewers["chrome"])  # Chrome: transport-wide-cc is id 3 too
    video = viewer_media_by_mid(sdp.parse(result.viewer_answer), "1")
    assert (3, TRANSPORT_CC) in extmaps(video)
    assert "transport-cc" in rtcp_fb(video, 96)
    assert "transport-cc" in rtcp_fb(viewer_media_by_mid(sdp.parse(result.janus_answer), "v"), 96)
    other_id = with_ext.replace(f"a=extmap:3 {TRANSPORT_CC}", f"a=extmap:9 {TRANSPORT_CC}")
    result = bridge(other_id, viewers["chrome"])
    video = viewer_media_by_mid(sdp.parse(result.viewer_answer), "1")
    assert extmaps(video) == {(2, "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")}
    assert "transport-cc" not in rtcp_fb(video, 96)


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_janus_transport_in_av(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, av, _ = run(janus, viewer, viewers)
    oj = sdp.parse(JANUS[janus])
    ufrag, pwd = oj.ice_credentials()
    janus_fp = oj.fingerprint()
    for jmid, vmid in result.viewer_mids.items():
        a_v, o_j = viewer_media_by_mid(av, vmid), viewer_media_by_mid(oj, jmid)
        assert attrs(a_v, "ice-ufrag") == [ufrag] and attrs(a_v, "ice-pwd") == [pwd]
        assert attrs(a_v, "fingerprint") == [janus_fp]
        assert janus_fp and janus_fp.startswith("sha-256 ")
        assert attrs(a_v, "msid") == attrs(o_j, "msid")
        assert set(attrs(a_v, "ssrc")) <= set(attrs(o_j, "ssrc"))
        assert attrs(a_v, "ssrc")[0] == attrs(o_j, "ssrc")[0]  # the media SSRC is always there
        assert a_v.candidates == o_j.candidates and a_v.candidates
        assert attrs(a_v, "end-of-candidates") == [""] or has(a_v, "end-of-candidates")
        assert a_v.lines[-1] == sdp.Line("a", "end-of-candidates")


@pytest.mark.parametrize("janus,viewer", COMBOS)
def test_viewer_transport_in_aj_also_at_session_level(janus: str, viewer: str, viewers: dict[str, str]) -> None:
    result, _, aj = run(janus, viewer, viewers)
    ov = sdp.parse(viewers[viewer])
    tag = viewer_media_by_mid(ov, result.viewer_bundle_mid)
    ufrag = (attrs(tag, "ice-ufrag") or attrs(ov, "ice-ufrag"))[0]
    pwd = (attrs(tag, "ice-pwd") or attrs(ov, "ice-pwd"))[0]
    offered_fps = fingerprints(ov, tag)
    sha256 = [f for f in offered_fps if f.lower().startswith("sha-256 ")]
    fp = sha256[0] if sha256 else offered_fps[0]
    # Janus 1.1.2 reads them from the session or the first m-line only.
    assert attrs(aj, "ice-ufrag") == [ufrag] and attrs(aj, "ice-pwd") == [pwd]
    assert attrs(aj, "fingerprint") == [fp]
    for m in accepted(aj):
        assert attrs(m, "ice-ufrag") == [ufrag] and attrs(m, "ice-pwd") == [pwd]
        assert attrs(m, "fingerprint") == [fp]
        assert m.candidates == tag.candidates
        assert has(m, "end-of-candidates") == any(has(x, "end-of-candidates") for x in ov.media)


def test_viewer_fingerprint_sha256_picked_among_several_else_the_offered_one(viewers: dict[str, str]) -> None:
    aiortc = viewers["aiortc"]  # sha-256, sha-384 and sha-512
    _, _, aj = run("vp8", "aiortc", viewers)
    assert attrs(aj, "fingerprint")[0].startswith("sha-256 ")
    only_384 = "\r\n".join(ln for ln in aiortc.split("\r\n")
                           if not ln.startswith(("a=fingerprint:sha-256", "a=fingerprint:sha-512")))
    aj = sdp.parse(bridge(JANUS["vp8"], only_384).janus_answer)
    assert attrs(aj, "fingerprint")[0].startswith("sha-384 ")
    assert all(attrs(m, "fingerprint")[0].startswith("sha-384 ") for m in accepted(aj))


def test_end_of_candidates_in_aj_only_if_the_viewer_had_it(viewers: dict[str, str]) -> None:
    _, _, aj = run("vp8", "aiortc", viewers)  # aiortc gathers everything: has it
    assert all(has(m, "end-of-candidates") for m in accepted(aj))
    _, _, aj = run("vp8", "chrome", viewers)  # this Chrome offer does not
    assert not any(has(m, "end-of-candidates") for m in aj.media)
    _, _, aj = run("vp8", "safari", viewers)  # trickles: no candidates at all
    assert not any(m.candidates or has(m, "end-of-candidates") for m in aj.media)


def test_ice_lite_passed_on_only_when_janus_is_lite(viewers: dict[str, str]) -> None:
    for viewer in ("chrome", "aiortc"):
        _, av, aj = run("icelite", viewer, viewers)
        assert has(av, "ice-lite")
        assert not has(aj, "ice-lite")
        _, av, _ = run("vp8", viewer, viewers)
        assert not has(av, "ice-lite")


def test_extmap_allow_mixed_only_if_both(viewers: dict[str, str]) -> None:
    for viewer, expected in (("chrome", True), ("firefox", True), ("safari", True), ("aiortc", False)):
        _, av, aj = run("vp8", viewer, viewers)
        assert has(av, "extmap-allow-mixed") == expected, viewer
        assert has(aj, "extmap-allow-mixed") == expected, viewer
    no_mixed = JANUS["vp8"].replace("a=extmap-allow-mixed\r\n", "")
    result = bridge(no_mixed, viewers["chrome"])
    assert "extmap-allow-mixed" not in result.viewer_answer + result.janus_answer


def test_fmtp_janus_first_in_av_viewer_in_aj(viewers: dict[str, str]) -> None:
    result, av, aj = run("h264", "chrome", viewers)
    video_v, video_j = viewer_media_by_mid(av, "1"), viewer_media_by_mid(aj, "v")
    assert video_v.codecs()[0].fmtp == "profile-level-id=42e01f;packetization-mode=1"  # Janus's
    assert video_j.codecs()[0].fmtp == (
        "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")  # Chrome's PT 108
    assert video_v.codecs()[0].pt == 108
    audio_v = viewer_media_by_mid(av, "0")
    assert audio_v.codecs()[0].fmtp == "minptime=10;useinbandfec=1"  # Janus has none: the viewer's


# -- layouts: video-only, video before audio, unmatched m-lines ----------------


def test_video_only_viewer(viewers: dict[str, str]) -> None:
    for offer in (viewers["aiortc_v"], _drop_media(viewers["chrome"], "audio")):
        choices = choose_codecs(offer, JANUS_MEDIA["vp8"])
        assert set(choices) == {"video"}
        result = bridge(JANUS["vp8"], offer)
        av, aj = sdp.parse(result.viewer_answer), sdp.parse(result.janus_answer)
        assert [m.kind for m in av.media] == ["video"]
        audio_j, video_j = aj.media
        assert (audio_j.port, audio_j.direction, audio_j.mid) == (0, "inactive", "a")
        assert video_j.port != 0 and video_j.direction == "recvonly"
        assert aj.bundle_mids == ["v"] and result.janus_bundle_mid == "v"
        assert result.viewer_mids == {"v": av.media[0].mid}
        # The first m-line of A_j is rejected: the credentials must be at session level.
        assert attrs(aj, "ice-ufrag") and attrs(aj, "ice-pwd") and attrs(aj, "fingerprint")


@pytest.mark.parametrize("viewer", ["aiortc_va", "safari"])
def test_video_before_audio(viewer: str, viewers: dict[str, str]) -> None:
    janus = "h264" if viewer == "safari" else "vp8"
    result, av, aj = run(janus, viewer, viewers)
    assert [m.kind for m in av.media] == ["video", "audio"]
    assert [m.kind for m in aj.media] == ["audio", "video"]
    assert result.viewer_mids == {"v": "0", "a": "1"}
    assert av.bundle_mids == ["0", "1"] and aj.bundle_mids == ["a", "v"]
    assert result.viewer_bundle_mid == "0" and result.janus_bundle_mid == "a"
    assert av.media[0].codecs()[0].clock_rate == 90000 and av.media[1].codecs()[0].key == "opus"


def test_unmatched_viewer_m_lines_get_port_0_and_inactive(viewers: dict[str, str]) -> None:
    chrome = viewers["chrome"]
    extra = chrome.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2 3") + (
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=recvonly\r\n"
        "a=rtpmap:96 VP8/90000\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:3\r\n"
        "a=sctp-port:5000\r\n")
    result = bridge(JANUS["vp8"], extra)
    av = sdp.parse(result.viewer_answer)
    assert [(m.kind, m.port != 0) for m in av.media] == [
        ("audio", True), ("video", True), ("video", False), ("application", False)]
    for m in av.media[2:]:
        assert m.port == 0 and m.direction == "inactive" and m.mid in ("2", "3")
        assert not m.candidates
    assert av.bundle_mids == ["0", "1"]


def test_viewer_m_line_without_common_codec_is_rejected_other_kinds_served(viewers: dict[str, str]) -> None:
    # Safari's H.264 High (640c1f) only, against a 42e01f mountpoint.
    high_only = _keep_only_pts(viewers["safari"], "video", {96, 97, 100, 101})
    choices = choose_codecs(high_only, JANUS_MEDIA["h264"])
    assert set(choices) == {"audio"}
    result = bridge(JANUS["h264"], high_only)
    av, aj = sdp.parse(result.viewer_answer), sdp.parse(result.janus_answer)
    assert (av.media[0].kind, av.media[0].port, av.media[0].direction) == ("video", 0, "inactive")
    assert (aj.media[1].kind, aj.media[1].port, aj.media[1].direction) == ("video", 0, "inactive")
    assert result.viewer_mids == {"a": "1"}
    # The same viewer without audio has nothing we can send.
    video_high = _drop_media(high_only, "audio")
    with pytest.raises(BridgeError):
        choose_codecs(video_high, JANUS_MEDIA["h264"])
    with pytest.raises(BridgeError, match="codec"):
        bridge(JANUS["h264"], video_high)


def test_vp8_stream_for_h264_only_viewer_gives_audio_only(viewers: dict[str, str]) -> None:
    assert set(choose_codecs(viewers["aiortc_av_h264"], JANUS_MEDIA["vp8"])) == {"audio"}
    result, av, _ = run("vp8", "aiortc_av_h264", viewers)
    assert [m.port != 0 for m in av.media] == [True, False]


# -- choose_codecs ----------------------------------------------------------------


def test_choose_codecs_on_real_offers(viewers: dict[str, str]) -> None:
    vp8, h264 = JANUS_MEDIA["vp8"], JANUS_MEDIA["h264"]
    assert choose_codecs(viewers["chrome"], vp8) == {
        "audio": CodecChoice("audio", "opus", 48000, 2, 111, "minptime=10;useinbandfec=1"),
        "video": CodecChoice("video", "VP8", 90000, None, 96, None),
    }
    # Firefox's PTs differ: the gateway must make a variant carrying 109/120.
    firefox = choose_codecs(viewers["firefox"], vp8)
    assert firefox["audio"].payload_type == 109 and firefox["video"].payload_type == 120
    assert firefox["audio"].fmtp == "maxplaybackrate=48000;stereo=1;useinbandfec=1"
    assert choose_codecs(viewers["firefox"], h264)["video"].payload_type == 126  # 42e01f mode 1
    aiortc = choose_codecs(viewers["aiortc"], vp8)
    assert (aiortc["audio"].payload_type, aiortc["video"].payload_type) == (96, 97)
    # aiortc lists 42001f (99) before 42e01f (101): the exact profile-level-id wins.
    assert choose_codecs(viewers["aiortc"], h264)["video"].payload_type == 101
    # Chrome: 102 is 42001f mode 1, 108 is 42e01f mode 1; 104/114 are mode 0.
    assert choose_codecs(viewers["chrome"], h264)["video"].payload_type == 108
    # Safari: 96 is High 640c1f, 98 is 42e01f mode 1, 102 is 42e01f mode 0.
    safari = choose_codecs(viewers["safari"], h264)
    assert safari["video"] == CodecChoice(
        "video", "H264", 90000, None, 98, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")
    assert choose_codecs(viewers["safari"], vp8)["video"].payload_type == 104


def test_firefox_bridged_against_a_111_96_mountpoint_names_firefox_pts(viewers: dict[str, str]) -> None:
    # Without a variant, A_v still names Firefox's PTs (the gateway avoids this
    # case with choose_codecs + a variant; the answer must still be correct).
    result, av, aj = run("vp8", "firefox", viewers)
    assert [m.formats for m in av.media] == [["109"], ["120"]]
    assert [m.formats for m in aj.media] == [["111"], ["96"]]
    # Firefox's video m-line is bundle-only (port 0 in the offer) and still served.
    assert av.media[1].port != 0


def test_firefox_on_its_variant(viewers: dict[str, str]) -> None:
    """A variant mountpoint carries 109/120; Janus then offers rtx 121 (video PT + 1)."""
    variant = (JANUS["vp8"].replace("111", "109").replace(" 96 97", " 120 121")
               .replace(":96 ", ":120 ").replace(":97 ", ":121 ").replace("apt=96", "apt=120"))
    assert choose_codecs(viewers["firefox"], JANUS_MEDIA["vp8"])["video"].payload_type == 120
    result = bridge(variant, viewers["firefox"])
    av, aj = sdp.parse(result.viewer_answer), sdp.parse(result.janus_answer)
    assert [m.formats for m in av.media] == [["109"], ["120"]]  # Firefox's rtx is 124, not 121
    assert [m.formats for m in aj.media] == [["109"], ["120"]]


def test_h264_profile_and_packetization_mode_must_match(viewers: dict[str, str]) -> None:
    chrome = viewers["chrome"]
    mode0 = _keep_only_pts(chrome, "video", {104, 114})  # 42001f / 42e01f, packetization-mode 0
    assert set(choose_codecs(mode0, JANUS_MEDIA["h264"])) == {"audio"}
    main = _keep_only_pts(chrome, "video", {116})  # Main 4d001f
    assert set(choose_codecs(main, JANUS_MEDIA["h264"])) == {"audio"}
    baseline = _keep_only_pts(chrome, "video", {102})  # 42001f mode 1: same profile_idc 0x42
    assert choose_codecs(baseline, JANUS_MEDIA["h264"])["video"].payload_type == 102
    assert sdp.parse(bridge(JANUS["h264"], baseline).viewer_answer).media[1].formats == ["102"]


def test_choose_codecs_kinds_and_errors(viewers: dict[str, str]) -> None:
    assert set(choose_codecs(viewers["chrome"], [("video", "vp8", None)])) == {"video"}
    with pytest.raises(BridgeError, match="none of the stream"):
        choose_codecs(viewers["chrome"], [("video", "h265", None)])
    with pytest.raises(BridgeError):
        choose_codecs(viewers["chrome"], [("video", "nonsense", None)])
    with pytest.raises(SdpError):
        choose_codecs("not sdp", JANUS_MEDIA["vp8"])


@pytest.mark.parametrize("publish", ["chrome_publish.sdp", "aiortc_publish.sdp"])
def test_sendonly_offers_are_refused_with_a_direction_message(publish: str) -> None:
    offer = _read(publish)
    with pytest.raises(BridgeError, match="direction"):
        choose_codecs(offer, JANUS_MEDIA["vp8"])
    with pytest.raises(BridgeError, match="direction"):
        bridge(JANUS["vp8"], offer)


def test_inactive_offer_is_refused(viewers: dict[str, str]) -> None:
    inactive = viewers["chrome"].replace("a=recvonly", "a=inactive")
    with pytest.raises(BridgeError, match="direction"):
        choose_codecs(inactive, JANUS_MEDIA["vp8"])
    with pytest.raises(BridgeError, match="direction"):
        bridge(JANUS["vp8"], inactive)
    # One recvonly m-line is enough.
    one = viewers["chrome"].replace("a=recvonly", "a=inactive", 1)
    assert set(choose_codecs(one, JANUS_MEDIA["vp8"])) == {"video"}


def test_sendrecv_viewer_is_served_sendonly(viewers: dict[str, str]) -> None:
    sendrecv = viewers["chrome"].replace("a=recvonly", "a=sendrecv")
    av = sdp.parse(bridge(JANUS["vp8"], sendrecv).viewer_answer)
    assert [m.direction for m in av.media] == ["sendonly", "sendonly"]


def test_media_outside_bundle_is_refused(viewers: dict[str, str]) -> None:
    no_bundle = viewers["chrome"].replace("a=group:BUNDLE 0 1\r\n", "")
    with pytest.raises(BridgeError, match="BUNDLE"):
        bridge(JANUS["vp8"], no_bundle)
    # One medium needs no BUNDLE group.
    bridge(JANUS["vp8"], _drop_media(no_bundle, "audio"))


def test_duplicate_viewer_mids_are_sdp_errors(viewers: dict[str, str]) -> None:
    twice = viewers["chrome"].replace("a=mid:1", "a=mid:0")
    with pytest.raises(SdpError, match="mid"):
        bridge(JANUS["vp8"], twice)
    with pytest.raises(SdpError, match="mid"):
        choose_codecs(twice, JANUS_MEDIA["vp8"])


def test_missing_viewer_credentials_are_sdp_errors(viewers: dict[str, str]) -> None:
    chrome = viewers["chrome"]
    no_ufrag = "\r\n".join(ln for ln in chrome.split("\r\n") if not ln.startswith("a=ice-"))
    with pytest.raises(SdpError, match="ice-ufrag"):
        bridge(JANUS["vp8"], no_ufrag)
    no_fp = "\r\n".join(ln for ln in chrome.split("\r\n") if not ln.startswith("a=fingerprint"))
    with pytest.raises(SdpError, match="fingerprint"):
        bridge(JANUS["vp8"], no_fp)


# -- trickle ------------------------------------------------------------------


def test_map_trickle_candidates_keeps_the_tag_mid_only(viewers: dict[str, str]) -> None:
    result = bridge(JANUS["vp8"], viewers["chrome"])
    frag = sdp.parse_fragment(
        "a=ice-ufrag:1bWe\r\na=ice-pwd:FMar0xcW9oEBnE8kUZe5b4cR\r\n"
        "a=candidate:1 1 udp 1 192.0.2.9 1000 typ host\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
        "a=candidate:2 1 udp 2 192.0.2.9 2000 typ host\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:1\r\n"
        "a=candidate:3 1 udp 3 192.0.2.9 3000 typ host\r\n")
    kept = map_trickle_candidates(frag.candidates, result)
    assert kept == ["1 1 udp 1 192.0.2.9 1000 typ host", "2 1 udp 2 192.0.2.9 2000 typ host"]
    video_only = bridge(JANUS["vp8"], _drop_media(viewers["chrome"], "audio"))
    assert video_only.viewer_bundle_mid == "1"
    assert map_trickle_candidates(frag.candidates, video_only) == [
        "1 1 udp 1 192.0.2.9 1000 typ host", "3 1 udp 3 192.0.2.9 3000 typ host"]


# -- garbage in -----------------------------------------------------------------

_BASE_OFFERS = [FILE_VIEWERS["chrome"], FILE_VIEWERS["firefox"], FILE_VIEWERS["aiortc"], FILE_VIEWERS["safari"]]
_JUNK = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=40)


@st.composite
def mutated_offers(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(_BASE_OFFERS)).split("\r\n")
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["delete", "duplicate", "replace_value", "swap", "insert", "truncate",
                                   "number"]))
        if len(lines) < 6:
            break
        # Mostly below the v=/o=/s=/t= head, which parse() guards on its own.
        i = draw(st.integers(0 if draw(st.integers(0, 9)) == 0 else 4, len(lines) - 1))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "replace_value":
            head, sep, _ = lines[i].partition(":")
            lines[i] = head + sep + draw(_JUNK) if sep else lines[i][:2] + draw(_JUNK)
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(["a=", "m=", "a=rtpmap:", "a=fmtp:", "a=extmap:", "a=rtcp-fb:",
                                                  "a=mid:", "a=group:BUNDLE", "a=sendonly", "a=inactive"]))
                         + draw(_JUNK))
        elif op == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, max(0, len(lines[i]) - 1)))]
        else:  # a number changed: PTs, ports, extmap ids
            lines[i] = re.sub(r"\d+", lambda m: str(draw(st.integers(0, 70000))), lines[i], count=1)
    return "\r\n".join(lines)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offer=mutated_offers(), janus=st.sampled_from(sorted(JANUS)))
def test_garbled_viewer_offers_raise_only_bridge_or_sdp_errors(offer: str, janus: str) -> None:
    try:
        result = bridge(JANUS[janus], offer)
    except (BridgeError, SdpError):
        pass
    else:
        av, aj = sdp.parse(result.viewer_answer), sdp.parse(result.janus_answer)
        assert str(av) == result.viewer_answer and str(aj) == result.janus_answer
        assert accepted(av) and accepted(aj)
        assert "sdes:mid" not in result.viewer_answer + result.janus_answer
    try:
        choose_codecs(offer, JANUS_MEDIA[janus])
    except (BridgeError, SdpError):
        pass
