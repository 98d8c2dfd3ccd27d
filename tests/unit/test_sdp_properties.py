"""Properties of the SDP helpers that the other unit tests do not state.

tests/unit/test_sdp.py already checks that ``parse()``/``parse_fragment()``
raise nothing but SdpError on arbitrary and SDP-shaped text, and
tests/unit/test_sdp_bridge.py that ``bridge()``/``choose_codecs()`` raise only
BridgeError/SdpError on garbled viewer offers.  Stated here:

- a fragment the server writes (an ICE restart's answer) reads back as
  written, for any ICE credentials and candidates;
- ``parse_fragment`` gives each candidate the mid of the m-section it sits
  in (none before the first ``a=mid``), in order;
- ``choose_codecs`` only ever picks a codec the viewer offered, on the kind
  it was asked for;
- an empty ice-ufrag or ice-pwd is a malformed fragment (found by
  tests/integration/test_fuzz.py: it used to reach the ICE restart, a 500).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.sdp import model as sdp
from gateway.sdp.bridge import BridgeError, choose_codecs

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sdp"
VIEW_OFFERS = [(FIXTURES / f"{n}_view.sdp").read_text() for n in ("chrome", "firefox", "aiortc", "safari")]

ICE_CHAR = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/",
                   min_size=1, max_size=40)
TOKEN = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
ADDRESS = st.one_of(st.ip_addresses().map(str), st.sampled_from(["abcd.local", "x" * 300, "1.2.3"]))
CANDIDATE = st.builds(
    lambda f, c, t, p, a, port, typ, ext: " ".join([f, c, t, p, a, port, "typ", typ, *ext]),
    st.one_of(ICE_CHAR, TOKEN), st.sampled_from(["1", "2", "0", "256", "-1", "x"]),
    st.sampled_from(["udp", "UDP", "tcp", "x"]), st.integers(0, 2**32 + 5).map(str),
    ADDRESS, st.integers(-1, 70000).map(str), st.sampled_from(["host", "srflx", "prflx", "relay", "x"]),
    st.lists(st.one_of(st.sampled_from(["raddr", "rport", "generation", "ufrag", "tcptype"]), TOKEN),
             max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(ufrag=ICE_CHAR, pwd=ICE_CHAR, mid=st.one_of(st.none(), TOKEN), cands=st.lists(CANDIDATE, max_size=5),
       lite=st.booleans(), bundle=st.lists(TOKEN, max_size=3))
def test_write_fragment_reads_back(ufrag: str, pwd: str, mid: str | None, cands: list[str], lite: bool,
                                   bundle: list[str]) -> None:
    media = sdp.MediaSection("audio", 9, "UDP/TLS/RTP/SAVPF", ["111"],
                             [sdp.Line("a", f"mid:{mid}")] if mid is not None else [])
    text = sdp.write_fragment(ufrag=ufrag, pwd=pwd, media=media, candidates=cands, ice_lite=lite,
                              bundle_mids=bundle)
    assume(len(text.encode()) <= sdp.MAX_SDPFRAG_BYTES)
    frag = sdp.parse_fragment(text)
    assert (frag.ice_ufrag, frag.ice_pwd) == (ufrag, pwd)
    assert frag.candidates == [(mid, c) for c in cands]
    assert frag.end_of_candidates


@settings(max_examples=300, deadline=None)
@given(head=st.lists(CANDIDATE, max_size=3),
       sections=st.lists(st.tuples(st.booleans(), TOKEN, st.lists(CANDIDATE, max_size=3)), max_size=4))
def test_parse_fragment_gives_each_candidate_its_sections_mid(
        head: list[str], sections: list[tuple[bool, str, list[str]]]) -> None:
    """RFC 8840: a=mid names the m-section it follows; a new m-line starts
    a section without one (until its own a=mid)."""
    lines = [f"a=candidate:{c}" for c in head]
    expected: list[tuple[str | None, str]] = [(None, c) for c in head]
    for with_m_line, mid, cands in sections:
        if with_m_line:
            lines.append("m=audio 9 UDP/TLS/RTP/SAVPF 0")
        lines.append(f"a=mid:{mid}")
        lines += [f"a=candidate:{c}" for c in cands]
        expected += [(mid, c) for c in cands]
    text = "\r\n".join(lines) + "\r\n"
    assume(len(text.encode()) <= sdp.MAX_SDPFRAG_BYTES)
    assert sdp.parse_fragment(text).candidates == expected


@settings(max_examples=300, deadline=None)
@given(offer=st.sampled_from(VIEW_OFFERS),
       available=st.lists(st.tuples(st.sampled_from(["audio", "video"]),
                                    st.sampled_from(["opus", "vp8", "vp9", "h264", "av1", "pcmu", "g722",
                                                     "h265", "multiopus", "nonsense"]),
                                    st.one_of(st.none(), st.sampled_from(
                                        ["profile-level-id=42e01f;packetization-mode=1",
                                         "profile-level-id=42001f;packetization-mode=0",
                                         "profile-level-id=640c1f", "x"]))), max_size=4))
def test_choose_codecs_picks_only_what_the_viewer_offered(
        offer: str, available: list[tuple[str, str, str | None]]) -> None:
    try:
        chosen = choose_codecs(offer, available)
    except BridgeError:
        return
    parsed = sdp.parse(offer)
    assert chosen and set(chosen) <= {kind for kind, _, _ in available}
    for kind, choice in chosen.items():
        offered = {(c.pt, c.name.lower()) for m in parsed.media if m.kind == kind for c in m.codecs()}
        assert (choice.payload_type, choice.name.lower()) in offered
        assert choice.name.lower() in {name for k, name, _ in available if k == kind}


@pytest.mark.parametrize("text", ["a=ice-ufrag:x\r\na=ice-pwd:\r\n", "a=ice-ufrag:\r\na=ice-pwd:y\r\n"])
def test_fragment_with_an_empty_credential_is_an_sdp_error(text: str) -> None:
    with pytest.raises(sdp.SdpError, match="together"):
        sdp.parse_fragment(text)
