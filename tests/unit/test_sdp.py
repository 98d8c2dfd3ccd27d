"""gateway.sdp.model against real offers, broken input and the RFC 9725 PATCH bodies.

The offers in ``tests/fixtures/sdp`` are what WHIP publishers and WHEP
players really send (see the README there for where each one comes from).
Grammar references are to RFC 8866 (SDP), RFC 8839 (ICE attributes),
RFC 8840 (trickle-ice-sdpfrag) and RFC 9725 (WHIP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sdp import model as sdp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sdp"
HEADER = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n"


def crlf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def load(name: str) -> str:
    with open(FIXTURES / name, encoding="utf-8", newline="") as f:  # keep CR as it is
        return f.read()


def offer(name: str) -> sdp.SessionDescription:
    return sdp.parse(load(name))


def pts(media: sdp.MediaSection, name: str) -> list[int]:
    return [c.pt for c in media.codecs() if c.key == name.lower()]


# -- what each real offer says -------------------------------------------------


@dataclass(frozen=True)
class Expected:
    kinds: tuple[str, ...]
    direction: str
    ufrag: str
    pwd: str
    fingerprint: str
    candidates: int
    codecs: dict[tuple[int, str], list[int]]  # (m-line index, codec name) -> payload types, in order
    session_level_ice: bool = False


EXPECTED: dict[str, Expected] = {
    "chrome_publish.sdp": Expected(
        ("audio", "video"), "sendonly", "w+Wd", "qOLQLpN0MKrTNq2cdx0lYUaH",
        "sha-256 B8:12:29:DD:7D:7E:99:18:7E:68:39:42:2F:6E:D6:4A:18:CA:EC:FB:AC:9C:B0:38:09:A9:ED:12:EF:B5:DA:A2",
        16,
        {(0, "opus"): [111], (0, "red"): [63], (0, "PCMU"): [0], (0, "telephone-event"): [110, 126],
         (1, "VP8"): [96], (1, "H264"): [102, 104, 108, 114, 116, 39], (1, "AV1"): [45], (1, "VP9"): [98, 100],
         (1, "rtx"): [97, 103, 107, 109, 115, 117, 40, 46, 99, 101, 119]}),
    "chrome_view.sdp": Expected(
        ("audio", "video"), "recvonly", "1bWe", "FMar0xcW9oEBnE8kUZe5b4cR",
        "sha-256 27:BD:D6:4D:51:86:3F:2F:D7:9D:9A:86:D1:40:32:11:15:E2:1D:6E:D2:EE:01:D5:5C:C6:71:5E:53:81:37:2B",
        16,
        {(0, "opus"): [111], (1, "VP8"): [96], (1, "AV1"): [45, 47], (1, "H265"): [], (1, "flexfec-03"): [49],
         (1, "VP9"): [98, 100, 35, 37],
         (1, "H264"): [102, 104, 108, 114, 116, 39, 41, 43]}),
    "aiortc_publish.sdp": Expected(
        ("audio", "video"), "sendonly", "gicN", "EhTt9fRC2CuxRiuogd7HT7",
        "sha-256 8F:51:1B:1E:BB:E6:0D:9C:A6:A2:89:66:E1:27:B6:B2:1F:11:30:2B:66:45:69:20:AD:5C:FA:E3:79:AC:93:07",
        4,
        {(0, "opus"): [96], (0, "G722"): [9], (0, "PCMU"): [0], (0, "PCMA"): [8],
         (1, "VP8"): [97], (1, "H264"): [99, 101], (1, "rtx"): [98, 100, 102]}),
    "aiortc_view.sdp": Expected(
        ("audio", "video"), "recvonly", "H1Ob", "YELwTTCPoiCN15dapbozWq",
        "sha-256 44:8A:BD:C7:0A:43:CC:69:CA:C9:94:D2:48:3F:7D:22:9A:7C:0E:20:CD:F5:07:A9:D6:88:C1:AA:3F:C9:CA:22",
        4,
        {(0, "opus"): [96], (1, "VP8"): [97], (1, "H264"): [99, 101]}),
    "firefox_publish.sdp": Expected(
        ("audio", "video"), "sendonly", "5d6c3aa5", "9d2a39dd668eb18a613bd10e2ea3d0a7",
        "sha-256 4E:03:21:F6:9E:D3:69:15:D2:20:39:0E:28:7D:45:ED:6C:D6:BA:F7:2F:EC:39:F6:C8:66:D4:E2:E5:11:83:20",
        3,
        {(0, "opus"): [109], (0, "G722"): [9], (0, "telephone-event"): [101],
         (1, "VP8"): [120], (1, "VP9"): [121], (1, "H264"): [126, 97, 105, 103], (1, "AV1"): [99],
         (1, "ulpfec"): [123], (1, "red"): [122]}),
    "firefox_view.sdp": Expected(
        ("audio", "video"), "recvonly", "32f352fd", "862f02f0bdf6bc3e170b70b3865fe808",
        "sha-256 0B:F1:86:DB:16:83:8A:1D:FA:7B:62:AD:5C:23:CD:86:82:A6:F9:FF:0E:BA:B6:E3:43:14:02:83:24:B8:A5:56",
        4,
        {(0, "opus"): [109], (1, "VP8"): [120], (1, "H264"): [126, 97, 105, 103]}),
    "safari_publish.sdp": Expected(
        ("audio", "video"), "sendonly", "K+8p", "wCypmYGGOdSAeP9e/9k40waf",
        "sha-256 DB:EF:08:97:62:7B:94:99:E5:A8:D9:FD:33:21:21:E4:E8:57:A1:46:67:D3:D9:8E:61:48:99:FD:77:47:B5:E1",
        8,
        {(0, "opus"): [111], (0, "ISAC"): [103], (0, "CN"): [105, 13],
         (1, "H264"): [96, 98, 100, 102], (1, "VP8"): [104], (1, "VP9"): [106], (1, "flexfec-03"): [35]}),
    "safari_view.sdp": Expected(
        ("video", "audio"), "recvonly", "A2ib", "Oi2rjafQhk3BoO0A/r7adlJN",
        "sha-256 77:45:DD:FB:AB:10:7F:B6:C6:63:FC:F9:3E:DD:7D:93:3C:B3:80:E3:54:72:CF:88:18:D6:F6:17:E9:63:5F:68",
        0,
        {(0, "H264"): [96, 98, 100, 102], (0, "VP8"): [104], (1, "opus"): [111]}),
    "obs_h264.sdp": Expected(
        ("audio", "video"), "sendonly", "0dgE", "KUlbjGcqAfIYYf00YkCmH8",
        "sha-256 92:AD:F4:C9:9D:1E:B0:D2:24:60:F7:68:B2:EF:F7:0F:8F:4A:92:0B:C4:57:6F:1B:49:F0:5B:64:72:3D:4E:B5",
        0, {(0, "opus"): [111], (1, "H264"): [96]}, session_level_ice=True),
    "obs_av1.sdp": Expected(
        ("audio", "video"), "sendonly", "3Q6m", "BX2sRCPUClpi4UzElL9qL3",
        "sha-256 80:A8:E9:BC:AB:8D:8A:2B:CA:C5:1B:92:8D:00:D0:38:58:8B:F8:0D:89:CA:F3:3F:29:BF:D1:80:17:A6:B0:1D",
        0, {(0, "opus"): [111], (1, "AV1"): [96]}, session_level_ice=True),
    "obs_hevc.sdp": Expected(
        ("audio", "video"), "sendonly", "HxFo", "mJo93B1lJPvKvwezA6Nzcf",
        "sha-256 71:C5:38:D1:58:54:EA:64:08:1B:93:87:99:E7:C6:C6:A2:9B:E5:DC:3D:8D:C0:E7:24:95:1D:70:19:C8:93:74",
        0, {(0, "opus"): [111], (1, "H265"): [96]}, session_level_ice=True),
}


def test_every_expected_fixture_is_there() -> None:
    present = {p.name for p in FIXTURES.glob("*.sdp")}
    assert set(EXPECTED) <= present, sorted(set(EXPECTED) - present)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_uses_crlf_throughout(name: str) -> None:
    """RFC 8866 section 5: lines end in CRLF; our fixtures keep the browsers' CRLF."""
    text = load(name)
    assert text.endswith("\r\n")
    assert text.count("\n") == text.count("\r\n") == text.count("\r")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.sdp")))
def test_round_trip(name: str) -> None:
    """str(parse(text)) gives the offer back line for line (CRLF line ends)."""
    text = load(name)
    assert str(sdp.parse(text)) == crlf(text)
    # and the LF-only form of the same offer reads the same
    assert str(sdp.parse(text.replace("\r\n", "\n"))) == crlf(text)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_what_parse_reads_from_real_offers(name: str) -> None:
    want = EXPECTED[name]
    desc = offer(name)
    assert tuple(m.kind for m in desc.media) == want.kinds
    assert [m.mid for m in desc.media] == ["0", "1"]
    assert desc.bundle_mids == ["0", "1"]
    assert [m.direction for m in desc.media] == [want.direction] * 2
    assert [m.proto for m in desc.media] == ["UDP/TLS/RTP/SAVPF"] * 2
    assert not any(m.rejected for m in desc.media)
    assert desc.ice_credentials() == (want.ufrag, want.pwd)
    assert desc.fingerprint() == want.fingerprint
    assert len(desc.candidates) == want.candidates
    for (index, codec), payload_types in want.codecs.items():
        assert pts(desc.media[index], codec) == payload_types, (index, codec)
    # where the ICE credentials sit: OBS (libdatachannel) at session level,
    # every browser and aiortc in each m-section (RFC 8839 section 5.4 allows both)
    at_session = desc.attribute("ice-ufrag") is not None
    in_media = [m.attribute("ice-ufrag") for m in desc.media]
    if want.session_level_ice:
        assert at_session and in_media == [None, None]
        assert desc.attribute("fingerprint") == want.fingerprint
    else:
        assert not at_session and in_media == [want.ufrag, want.ufrag]


def test_opus_is_read_with_its_clock_rate_channels_and_fmtp() -> None:
    opus = offer("chrome_publish.sdp").media[0].codecs()[0]
    assert opus == sdp.Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
    ff = offer("firefox_publish.sdp").media[0].codecs()[0]
    assert ff == sdp.Codec(109, "opus", 48000, 2, "maxplaybackrate=48000;stereo=1;useinbandfec=1")


@pytest.mark.parametrize("name,codec,fmtp", [
    ("obs_h264.sdp", "H264", "profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1"),
    ("obs_av1.sdp", "AV1", None),
    ("obs_hevc.sdp", "H265", None),
])
def test_obs_offers_exactly_one_video_codec(name: str, codec: str, fmtp: str | None) -> None:
    """OBS 30+ (libdatachannel): audio mid 0 Opus 111, video mid 1 with one codec on PT 96."""
    desc = offer(name)
    audio, video = desc.media
    assert audio.formats == ["111"] and video.formats == ["96"]
    assert video.codecs() == [sdp.Codec(96, codec, 90000, None, fmtp)]
    assert audio.codecs()[0].fmtp == "minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1"
    # no candidates at all, and no end-of-candidates: OBS never trickles
    assert desc.candidates == [] and not any(m.has("end-of-candidates") for m in desc.media)
    assert desc.attribute("setup") == "actpass" and audio.attribute("setup") is None
    assert desc.attribute("ice-options") == "ice2,trickle"
    # the lip-sync group sits next to BUNDLE and must not be taken for it
    groups = [attr[1] for attr in (ln.attribute for ln in desc.session) if attr and attr[0] == "group"]
    assert groups == ["BUNDLE 0 1", "LS 0 1"] and desc.bundle_mids == ["0", "1"]


def test_firefox_session_level_sendrecv_does_not_hide_media_direction() -> None:
    """Firefox writes a=sendrecv at session level; the media-level sendonly wins (RFC 8866 section 6.7)."""
    desc = offer("firefox_publish.sdp")
    assert desc.has("sendrecv")
    assert [m.direction for m in desc.media] == ["sendonly", "sendonly"]


def test_firefox_max_bundle_video_is_bundle_only_not_rejected() -> None:
    """RFC 8843 section 6: port 0 with a=bundle-only is a bundled m-section, not a rejected one."""
    video = offer("firefox_publish.sdp").media[1]
    assert video.port == 0 and video.has("bundle-only")
    assert not video.rejected
    video.remove_attributes("bundle-only")
    assert video.rejected


def test_firefox_view_candidates_use_mdns_names_and_rtcp_component() -> None:
    audio = offer("firefox_view.sdp").media[0]
    hosts = {c.split()[4] for c in audio.candidates}
    assert len(hosts) == 1 and hosts.pop().endswith(".local")
    assert sorted(c.split()[1] for c in audio.candidates) == ["1", "1", "2", "2"]
    assert audio.has("end-of-candidates")


def test_safari_h264_profiles() -> None:
    video = offer("safari_publish.sdp").media[1]
    fmtp = {c.pt: c.fmtp for c in video.codecs() if c.key == "h264"}
    assert "profile-level-id=640c1f" in fmtp[96] and "packetization-mode=1" in fmtp[96]
    assert "profile-level-id=42e01f" in fmtp[98] and "packetization-mode=1" in fmtp[98]
    assert "packetization-mode=0" in fmtp[100] and "packetization-mode=0" in fmtp[102]


def test_aiortc_offers_three_fingerprints_and_sha256_comes_first() -> None:
    audio = offer("aiortc_publish.sdp").media[0]
    assert [(v or "").split()[0] for v in audio.attributes("fingerprint")] == ["sha-256", "sha-384", "sha-512"]
    assert offer("aiortc_publish.sdp").fingerprint().startswith("sha-256 ")
    assert audio.has("end-of-candidates")


def test_chrome_publish_carries_ssrc_group_and_msid() -> None:
    video = offer("chrome_publish.sdp").media[1]
    assert len(video.attributes("ssrc-group")) == 1
    assert (video.attribute("ssrc-group") or "").startswith("FID ")
    stream = (video.attribute("msid") or "").split()[0]
    assert offer("chrome_publish.sdp").attribute("msid-semantic") == f" WMS {stream}"


# -- what parse() refuses ------------------------------------------------------


def _too_many_media() -> str:
    return HEADER + "".join(f"m=audio 9 RTP/AVP 0\r\na=mid:{i}\r\n" for i in range(sdp.MAX_MEDIA_SECTIONS + 1))


def _too_big() -> str:
    pad = "a=x-pad:" + "p" * 1000 + "\r\n"
    return HEADER + pad * (sdp.MAX_SDP_BYTES // len(pad) + 1)


BAD = {
    "empty": "",
    "blank lines only": "\r\n\r\n",
    "no v=0": "o=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    "v=1": HEADER.replace("v=0", "v=1"),
    "v= not first": "o=- 1 1 IN IP4 0.0.0.0\r\nv=0\r\ns=-\r\nt=0 0\r\n",
    "v= twice": HEADER + "v=0\r\n",
    "v= again in media": HEADER + AUDIO + "v=0\r\n",
    "missing o=": HEADER.replace("o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n", ""),
    "missing s=": HEADER.replace("s=-\r\n", ""),
    "missing t=": HEADER.replace("t=0 0\r\n", ""),
    "o= only inside a media section": "v=0\r\ns=-\r\nt=0 0\r\n" + AUDIO + "o=- 1 1 IN IP4 0.0.0.0\r\n",
    "line without =": HEADER + "a\r\n",
    "line of text": HEADER + "hello world\r\n",
    "upper-case type": HEADER + "A=sendonly\r\n",
    "two-letter type": HEADER + "ab=c\r\n",
    "NUL": HEADER + "a=mid:0\x00\r\n",
    "escape": HEADER + "a=tool:\x1b[31m\r\n",
    "bare CR inside a line": HEADER + "a=mid:0\rb=AS:1\r\n",
    "CR-only line ends": HEADER.replace("\r\n", "\r"),
    "port 65536": HEADER + "m=audio 65536 RTP/AVP 0\r\n",
    "port not numeric": HEADER + "m=audio nine RTP/AVP 0\r\n",
    "negative port": HEADER + "m=audio -9 RTP/AVP 0\r\n",
    "superscript-digit port": HEADER + "m=audio \u00b2 RTP/AVP 0\r\n",
    "arabic-indic-digit port": HEADER + "m=audio \u0663 RTP/AVP 0\r\n",
    "5000-digit port": HEADER + "m=audio " + "9" * 5000 + " RTP/AVP 0\r\n",
    "bad number of ports": HEADER + "m=audio 9/x RTP/AVP 0\r\n",
    "zero number of ports": HEADER + "m=audio 9/0 RTP/AVP 0\r\n",
    "m-line without formats": HEADER + "m=audio 9 RTP/AVP\r\n",
    "m-line with media only": HEADER + "m=audio\r\n",
    "empty m-line": HEADER + "m=\r\n",
    "m-line with bad media token": HEADER + "m=au(dio 9 RTP/AVP 0\r\n",
    "too many m-lines": _too_many_media(),
    "larger than MAX_SDP_BYTES": _too_big(),
}


@pytest.mark.parametrize("text", BAD.values(), ids=list(BAD))
def test_parse_rejects(text: str) -> None:
    """RFC 8866 section 9 grammar, plus our own limits; always SdpError, never another error."""
    with pytest.raises(sdp.SdpError):
        sdp.parse(text)


def test_limits_are_inclusive() -> None:
    ok = HEADER + "".join(f"m=audio 9 RTP/AVP 0\r\na=mid:{i}\r\n" for i in range(sdp.MAX_MEDIA_SECTIONS))
    assert len(sdp.parse(ok).media) == sdp.MAX_MEDIA_SECTIONS
    pad_line = "a=x-pad:"
    body = HEADER + pad_line + "p" * (sdp.MAX_SDP_BYTES - len(HEADER) - len(pad_line) - 2) + "\r\n"
    assert len(body.encode()) == sdp.MAX_SDP_BYTES
    assert len(sdp.parse(body).session) == 5
    with pytest.raises(sdp.SdpError):
        sdp.parse(body + "a")
    assert sdp.parse(HEADER + "m=audio 65535 RTP/AVP 0\r\n").media[0].port == 65535


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    pad_line = "s=" + "\u00e9" * ((sdp.MAX_SDP_BYTES // 2) + 10)
    assert len(pad_line) < sdp.MAX_SDP_BYTES < len(pad_line.encode())
    with pytest.raises(sdp.SdpError):
        sdp.parse("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n" + pad_line + "\r\nt=0 0\r\n")


def test_port_with_number_of_ports_round_trips() -> None:
    """RFC 8866 section 5.14: m=<media> <port>/<number of ports> <proto> <fmt> ..."""
    text = HEADER + "m=video 49170/2 RTP/AVP 31\r\n"
    desc = sdp.parse(text)
    assert (desc.media[0].port, desc.media[0].port_count) == (49170, 2)
    assert str(desc) == text


def test_codecs_skip_payload_types_that_are_not_ascii_numbers() -> None:
    desc = sdp.parse(HEADER + "m=audio 9 RTP/AVP \u00b2 111\r\na=rtpmap:\u00b2 x/1\r\na=rtpmap:111 opus/48000/2\r\n")
    assert [c.pt for c in desc.media[0].codecs()] == [111]


# -- trickle-ice-sdpfrag (RFC 8840, RFC 9725 section 4.3) ---------------------

RFC9725_TRICKLE = """a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=ice-ufrag:EsAw
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1
a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1
a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2
a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1
a=candidate:2154773085 1 tcp 1518214911 198.51.100.2 9 typ host tcptype active generation 0 ufrag EsAw network-id 2
a=end-of-candidates
"""

RFC9725_RESTART = """a=ice-options:trickle ice2
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=ice-ufrag:ysXw
a=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k
a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1
a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2
a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1
a=candidate:2154773085 1 tcp 1518214911 198.51.100.2 9 typ host tcptype active generation 0 ufrag EsAw network-id 2
"""

RFC9725_RESTART_ANSWER = """a=ice-lite
a=ice-options:trickle ice2
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=mid:0
a=ice-ufrag:289b31b754eaa438
a=ice-pwd:0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a
a=candidate:1 1 udp 2130706431 198.51.100.1 39132 typ host
a=end-of-candidates
"""


def test_rfc9725_trickle_example() -> None:
    """RFC 9725 section 4.3.2: a trickle PATCH carries only the first m-line of the bundle."""
    frag = sdp.parse_fragment(RFC9725_TRICKLE)
    assert (frag.ice_ufrag, frag.ice_pwd, frag.ice_options) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1", None)
    assert frag.end_of_candidates
    assert [mid for mid, _ in frag.candidates] == ["0"] * 4
    assert [c.split()[0] for _, c in frag.candidates] == ["1387637174", "3471623853", "473322822", "2154773085"]
    assert frag.candidates[2][1] == ("473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active "
                                     "generation 0 ufrag EsAw network-id 1")
    assert len(frag.candidates_for_ufrag("EsAw")) == 4
    assert frag.candidates_for_ufrag("zzzz") == []  # every one names EsAw
    assert len(frag.candidates_for_ufrag(None)) == 4
    # CRLF or LF: the same fragment
    assert sdp.parse_fragment(crlf(RFC9725_TRICKLE)) == frag


def test_rfc9725_ice_restart_example() -> None:
    """RFC 9725 section 4.3.3: new ufrag/pwd mean an ICE restart.

    The RFC's own example keeps "ufrag EsAw" (the old ufrag) on the candidates
    it sends with the new ufrag ysXw, so by RFC 8840 section 8 they belong to
    the previous ICE session and candidates_for_ufrag() keeps none of them.
    """
    frag = sdp.parse_fragment(RFC9725_RESTART)
    assert (frag.ice_ufrag, frag.ice_pwd) == ("ysXw", "vw5LmwG4y/e6dPP/zAP9Gp5k")
    assert frag.ice_options == "trickle ice2"
    assert not frag.end_of_candidates
    assert len(frag.candidates) == 4
    assert frag.candidates_for_ufrag("ysXw") == []
    assert len(frag.candidates_for_ufrag("EsAw")) == 4

    answer = sdp.parse_fragment(RFC9725_RESTART_ANSWER)
    assert (answer.ice_ufrag, answer.ice_pwd) == (
        "289b31b754eaa438", "0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a")
    assert answer.candidates == [("0", "1 1 udp 2130706431 198.51.100.1 39132 typ host")]
    assert answer.end_of_candidates
    # a candidate that names no ufrag belongs to whatever session is current
    assert answer.candidates_for_ufrag("anything") == ["1 1 udp 2130706431 198.51.100.1 39132 typ host"]


def test_candidates_for_ufrag_drops_only_those_naming_another_ufrag() -> None:
    frag = sdp.parse_fragment(
        "a=ice-ufrag:new1\r\na=ice-pwd:pppppppppppppppppppppp\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag new1\r\n"
        "a=candidate:2 1 udp 2122260223 192.0.2.2 61765 typ host generation 0 ufrag old0\r\n"
        "a=candidate:3 1 udp 1686052607 198.51.100.9 61766 typ srflx raddr 192.0.2.1 rport 61764\r\n"
        # a foundation that reads "ufrag" is not the ufrag extension (RFC 8839 section 5.1)
        "a=candidate:ufrag 1 udp 2122260223 192.0.2.4 61767 typ host\r\n"
        # nor is an extension *value* that reads "ufrag"
        "a=candidate:5 1 udp 2122260223 192.0.2.5 61768 typ host network-name ufrag ufrag new1\r\n")
    assert (frag.ice_ufrag, frag.ice_pwd) == ("new1", "pppppppppppppppppppppp")
    assert [c.split()[0] for c in frag.candidates_for_ufrag("new1")] == ["1", "3", "ufrag", "5"]
    assert [c.split()[0] for c in frag.candidates_for_ufrag("old0")] == ["2", "3", "ufrag"]


def test_fragment_reads_session_level_credentials() -> None:
    """RFC 8840 section 9: ufrag/pwd sit at the level the offer used (OBS: session level)."""
    frag = sdp.parse_fragment("a=ice-ufrag:Ab12\na=ice-pwd:0123456789abcdefghijkl\n"
                              "a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\n")
    assert (frag.ice_ufrag, frag.ice_pwd) == ("Ab12", "0123456789abcdefghijkl")
    assert frag.candidates == [(None, "1 1 udp 1 192.0.2.1 5000 typ host")]
    assert not frag.end_of_candidates


@pytest.mark.parametrize("text,why", [
    ("a=ice-ufrag:EsAw\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n", "ufrag without pwd"),
    ("a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n", "pwd without ufrag"),
    ("a=candidate:1 1 udp 1 192.0.2.1 5000 typ\r\n", "candidate with 7 fields"),
    ("a=candidate\r\n", "candidate without value"),
    ("m=audio 99999 UDP/TLS/RTP/SAVPF 111\r\n", "bad m-line"),
    ("a=mid:0\r\nnot sdp\r\n", "a line that is not <type>=<value>"),
    ("a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\x07\r\n", "control character"),
    ("a=x:" + "y" * sdp.MAX_SDPFRAG_BYTES + "\r\n", "larger than MAX_SDPFRAG_BYTES"),
])
def test_parse_fragment_rejects(text: str, why: str) -> None:
    with pytest.raises(sdp.SdpError):
        sdp.parse_fragment(text)


def test_empty_fragment_is_empty() -> None:
    assert sdp.parse_fragment("") == sdp.SdpFragment()


def test_write_fragment_parses_back() -> None:
    """RFC 9725 section 4.3.3: the server's 200 to an ICE restart is an sdpfrag like this one."""
    first = offer("obs_h264.sdp").media[0]
    cands = ["1 1 udp 2130706431 198.51.100.1 39132 typ host",
             "2 1 tcp 1518280447 198.51.100.1 9 typ host tcptype passive"]
    text = sdp.write_fragment(ufrag="289b31b754eaa438", pwd="0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a",
                              media=first, candidates=cands, ice_lite=True, bundle_mids=["0", "1"])
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")
    assert lines[:4] == ["a=ice-lite", "a=group:BUNDLE 0 1", "m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=mid:0"]
    frag = sdp.parse_fragment(text)
    assert (frag.ice_ufrag, frag.ice_pwd) == ("289b31b754eaa438", "0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a")
    assert frag.candidates == [("0", c) for c in cands]
    assert frag.end_of_candidates


def test_restart_fragment_lists_each_candidate_once() -> None:
    """RFC 9725 section 4.3.3: the 200 to an ICE restart carries the new
    candidates.  Janus (and the WHEP bridge) repeat the bundle's candidates
    on every m-line; the sdpfrag, which describes the one bundle transport,
    writes each of them once."""
    answer = offer("janus_streaming_opus_h264.sdp")
    assert len(answer.candidates) == 2  # the same candidate on both m-lines
    text = sdp.fragment_of(answer)
    lines = [ln for ln in text.split("\r\n") if ln.startswith("a=candidate:")]
    assert lines == ["a=candidate:1 1 udp 2015363327 127.0.0.2 31890 typ host"]


def test_write_fragment_without_lite_or_bundle_starts_at_the_m_line() -> None:
    first = offer("chrome_publish.sdp").media[0]
    text = sdp.write_fragment(ufrag="Ab12", pwd="0123456789abcdefghijkl", media=first, candidates=[])
    assert text.split("\r\n")[0] == "m=audio 56741 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126"
    frag = sdp.parse_fragment(text)
    assert (frag.ice_ufrag, frag.ice_pwd, frag.candidates, frag.end_of_candidates) == (
        "Ab12", "0123456789abcdefghijkl", [], True)


# -- editing ------------------------------------------------------------------


def test_set_ice_credentials_at_session_level_obs() -> None:
    desc = offer("obs_h264.sdp")
    before = str(desc)
    desc.set_ice_credentials("Zz9+", "0123456789abcdefghijkl")
    assert desc.ice_credentials() == ("Zz9+", "0123456789abcdefghijkl")
    assert desc.attribute("ice-ufrag") == "Zz9+" and desc.attribute("ice-pwd") == "0123456789abcdefghijkl"
    assert [m.attribute("ice-ufrag") for m in desc.media] == [None, None]  # not added where there was none
    after = str(desc)
    assert "0dgE" not in after and "KUlbjGcqAfIYYf00YkCmH8" not in after
    # the lines stay where they were; nothing else changes
    changed = [(a, b) for a, b in zip(before.split("\r\n"), after.split("\r\n")) if a != b]
    assert changed == [("a=ice-ufrag:0dgE", "a=ice-ufrag:Zz9+"),
                       ("a=ice-pwd:KUlbjGcqAfIYYf00YkCmH8", "a=ice-pwd:0123456789abcdefghijkl")]


def test_set_ice_credentials_at_media_level_chrome() -> None:
    desc = offer("chrome_publish.sdp")
    before = str(desc).split("\r\n")
    desc.set_ice_credentials("Yy8/", "abcdefghijklmnopqrstuvwx")
    after = str(desc).split("\r\n")
    assert len(before) == len(after)
    assert [m.attribute("ice-ufrag") for m in desc.media] == ["Yy8/", "Yy8/"]
    assert [m.attribute("ice-pwd") for m in desc.media] == ["abcdefghijklmnopqrstuvwx"] * 2
    assert desc.attribute("ice-ufrag") is None  # not added at session level
    assert after.count("a=ice-ufrag:Yy8/") == 2 and "a=ice-ufrag:w+Wd" not in after
    assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [
        i for i, line in enumerate(before) if line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))]


def test_remove_attributes() -> None:
    video = offer("chrome_publish.sdp").media[1]
    rtpmaps = len(video.attributes("rtpmap"))
    assert len(video.attributes("rtcp-fb")) == 50 and len(video.attributes("extmap")) == 11
    video.remove_attributes("rtcp-fb", "extmap", "not-there")
    assert video.attributes("rtcp-fb") == [] and video.attributes("extmap") == []
    assert len(video.attributes("rtpmap")) == rtpmaps == 23
    assert video.has("extmap-allow-mixed") is False  # it is a session-level attribute in Chrome
    assert video.mid == "1" and video.direction == "sendonly"


def test_remove_attributes_matches_whole_names_only() -> None:
    desc = offer("firefox_publish.sdp")
    video = desc.media[1]
    video.remove_attributes("extmap")
    assert video.has("extmap-allow-mixed")  # "extmap" is not a prefix match
    assert video.attributes("extmap") == []


def test_set_attribute() -> None:
    audio = offer("chrome_publish.sdp").media[0]
    index = [str(ln) for ln in audio.lines].index("a=setup:actpass")
    audio.set_attribute("setup", "passive")
    assert str(audio.lines[index]) == "a=setup:passive"
    assert audio.attributes("setup") == ["passive"]

    # several lines collapse into one, at the first one's place
    first_candidate = next(i for i, ln in enumerate(audio.lines) if str(ln).startswith("a=candidate:"))
    audio.set_attribute("candidate", "1 1 udp 2130706431 198.51.100.1 39132 typ host")
    assert audio.candidates == ["1 1 udp 2130706431 198.51.100.1 39132 typ host"]
    assert str(audio.lines[first_candidate]) == "a=candidate:1 1 udp 2130706431 198.51.100.1 39132 typ host"

    # a flag attribute that was absent is appended
    audio.set_attribute("rtcp-mux-only", None)
    assert str(audio.lines[-1]) == "a=rtcp-mux-only" and audio.has("rtcp-mux-only")

    # a direction change is visible through .direction
    audio.set_attribute("sendonly", None)
    audio.lines = [ln for ln in audio.lines if str(ln) != "a=sendonly"]
    audio.set_attribute("recvonly", None)
    assert audio.direction == "recvonly"

    # and the result still parses and round-trips
    desc = offer("chrome_publish.sdp")
    desc.media[0] = audio
    assert str(sdp.parse(str(desc))) == str(desc)


# -- property: nothing but SdpError escapes -------------------------------------

LINE_TYPES = st.sampled_from(list("vosicbtmrkza") + ["m", "m", "a", "a", "a"])
LINE = st.builds(lambda t, v: f"{t}={v}", LINE_TYPES, st.text(max_size=40))
# numbers as str.isdigit() sees them: ASCII, other scripts' digits, superscripts, very long runs
NUMBER = st.one_of(
    st.integers(-5, 70000).map(str),
    st.text(alphabet=st.characters(categories=("Nd", "No")), min_size=1, max_size=6),
    st.integers(4290, 4400).map(lambda n: "9" * n),
    st.from_regex(r"[0-9]{1,6}/[0-9x]{0,3}", fullmatch=True),
    st.text(max_size=8),
)
M_SECTION = st.builds(lambda k, p, fmt, rest: f"m={k} {p} RTP/AVP {fmt} {rest}\r\na=rtpmap:{fmt} x/{p}",
                      st.sampled_from(["audio", "video", "application", "a(b"]),
                      NUMBER, NUMBER, st.text(max_size=12))
BODY = st.lists(st.one_of(LINE, M_SECTION, st.text(max_size=30)), max_size=25).map("\r\n".join)


def _parse_or_sdp_error(text: str) -> None:
    try:
        desc = sdp.parse(text)
    except sdp.SdpError:
        return
    # what parse() accepts, it writes back in a form it reads the same way
    once = str(desc)
    assert str(sdp.parse(once)) == once
    for m in desc.media:
        m.codecs()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_parse_arbitrary_text_only_raises_sdp_error(text: str) -> None:
    _parse_or_sdp_error(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary().map(lambda b: b.decode("latin-1")))
def test_parse_arbitrary_bytes_only_raises_sdp_error(text: str) -> None:
    _parse_or_sdp_error(text)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_parse_sdp_shaped_text_only_raises_sdp_error(body: str) -> None:
    """Past the v=/o=/s=/t= checks, so the m-line and attribute code is reached too."""
    _parse_or_sdp_error(HEADER + body)
    _parse_or_sdp_error(HEADER + AUDIO + body)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), BODY))
def test_parse_fragment_only_raises_sdp_error(text: str) -> None:
    try:
        frag = sdp.parse_fragment(text)
    except sdp.SdpError:
        return
    frag.candidates_for_ufrag("EsAw")
