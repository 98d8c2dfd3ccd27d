"""SDP and trickle-ice-sdpfrag: parsing, checks and writing.

All SDP handling of the gateway lives here, so that a change to how we read
or write a line is made once.  The model keeps every line it was given, in
order, so ``str(parse(text))`` gives the same SDP back (with CRLF line ends);
the round-trip tests on real offers in ``tests/unit/test_sdp.py`` hold us to
that.  Nothing here knows about HTTP or Janus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from gateway import probes

MAX_SDP_BYTES = 64 * 1024
MAX_MEDIA_SECTIONS = 16
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f]")  # every control character but TAB
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f]")  # ... and but LF, between lines
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")
# ASCII digits only, and few of them: str.isdigit() also takes "²" or "٣",
# which int() then refuses or reads, and int() refuses over 4300 digits.
_PORT = re.compile(r"^[0-9]{1,5}$")
_PAYLOAD_TYPE = re.compile(r"^[0-9]{1,3}$")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # in the order ``direction`` prefers


class SdpError(ValueError):
    """The text is not an SDP we can read (RFC 8866 grammar, or a size limit)."""


class Line:
    """One ``<type>=<value>`` line; not changed once made (build a new one instead).

    ``attribute`` is split once, here: the bridge and the checks look
    attributes up by name over and over (a WHEP POST asked for some 200 of
    them per line list), and splitting on every look-up was most of the
    gateway's SDP time.
    """

    __slots__ = ("attribute", "type", "value")

    def __init__(self, type: str, value: str) -> None:
        self.type = type
        self.value = value
        # ``a=name:value`` as ``(name, value)``; None for other line types.
        self.attribute: tuple[str, str | None] | None = None
        if type == "a":
            name, sep, rest = value.partition(":")
            self.attribute = (name, rest if sep else None)

    def __str__(self) -> str:
        return f"{self.type}={self.value}"

    def __repr__(self) -> str:
        return f"Line(type={self.type!r}, value={self.value!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Line):
            return NotImplemented
        return self.type == other.type and self.value == other.value

    def __hash__(self) -> int:
        return hash((self.type, self.value))


def _attributes(lines: Iterable[Line], name: str) -> Iterator[str | None]:
    for line in lines:
        attr = line.attribute
        if attr is not None and attr[0] == name:
            yield attr[1]


def _first(lines: Iterable[Line], name: str) -> str | None:
    for line in lines:
        attr = line.attribute
        if attr is not None and attr[0] == name:
            return attr[1]
    return None


def _has(lines: Iterable[Line], name: str) -> bool:
    for line in lines:
        attr = line.attribute
        if attr is not None and attr[0] == name:
            return True
    return False


@dataclass(frozen=True)
class Codec:
    pt: int
    name: str
    clock_rate: int
    channels: int | None
    fmtp: str | None

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass
class MediaSection:
    kind: str
    port: int
    proto: str
    formats: list[str]
    lines: list[Line] = field(default_factory=list)  # everything after m=
    port_count: int | None = None  # "<port>/<number of ports>" (RFC 8866 section 5.14)

    @property
    def m_line(self) -> Line:
        port = self.port if self.port_count is None else f"{self.port}/{self.port_count}"
        return Line("m", f"{self.kind} {port} {self.proto} {' '.join(self.formats)}")

    def attributes(self, name: str) -> list[str | None]:
        return list(_attributes(self.lines, name))

    def attribute(self, name: str) -> str | None:
        return _first(self.lines, name)

    def has(self, name: str) -> bool:
        return _has(self.lines, name)

    @property
    def mid(self) -> str | None:
        return self.attribute("mid")

    @property
    def direction(self) -> str:
        # One pass over the lines; with several (a malformed m-line) the
        # first of _DIRECTIONS wins, wherever it stands.
        found = {a[0] for ln in self.lines if (a := ln.attribute) is not None and a[0] in _DIRECTIONS}
        for name in _DIRECTIONS:
            if name in found:
                return name
        return "sendrecv"  # RFC 8866 section 6.7: the default

    @property
    def rejected(self) -> bool:
        return self.port == 0 and not self.has("bundle-only")

    @property
    def candidates(self) -> list[str]:
        return [v for v in self.attributes("candidate") if v]

    @property
    def rids(self) -> list[str]:
        """Send rids (RFC 8851), in offer order."""
        rids = []
        for value in self.attributes("rid"):
            parts = (value or "").split()
            if len(parts) >= 2 and parts[1] == "send":
                rids.append(parts[0])
        return rids

    def codecs(self) -> list[Codec]:
        """The codecs of the m-line, in its format order; rtx/red/fec included."""
        rtpmap: dict[str, str] = {}
        fmtp: dict[str, str] = {}
        for line in self.lines:  # one pass: the bridge asks for them many times
            attr = line.attribute
            if attr is None:
                continue
            name = attr[0]
            if name == "rtpmap":
                pt, _, rest = (attr[1] or "").partition(" ")
                rtpmap[pt] = rest
            elif name == "fmtp":
                pt, _, rest = (attr[1] or "").partition(" ")
                fmtp[pt] = rest
        codecs = []
        for fmt in self.formats:
            if not _PAYLOAD_TYPE.match(fmt) or fmt not in rtpmap:
                continue
            parts = rtpmap[fmt].split("/")
            try:
                clock = int(parts[1]) if len(parts) > 1 else 0
                channels = int(parts[2]) if len(parts) > 2 else None
            except ValueError:
                continue
            codecs.append(Codec(int(fmt), parts[0], clock, channels, fmtp.get(fmt)))
        return codecs

    def keep_codecs(self, mapping: dict[int, int]) -> None:
        """Keep only the codecs in ``mapping`` (old PT -> new PT), renumbered,
        with their rtpmap, fmtp and rtcp-fb lines."""
        keep: list[Line] = []
        for ln in self.lines:
            attr = ln.attribute
            if attr and attr[0] in ("rtpmap", "fmtp", "rtcp-fb"):
                pt, _, rest = (attr[1] or "").partition(" ")
                if not pt.isdigit() or int(pt) not in mapping:
                    continue
                ln = Line("a", f"{attr[0]}:{mapping[int(pt)]} {rest}")
            keep.append(ln)
        self.lines = keep
        self.formats = [str(mapping[int(f)]) for f in self.formats if f.isdigit() and int(f) in mapping]

    def remove_attributes(self, *names: str) -> None:
        self.lines = [ln for ln in self.lines if not (ln.attribute and ln.attribute[0] in names)]

    def set_attribute(self, name: str, value: str | None) -> None:
        """Replace every ``a=name`` with one line at the first one's place (or append)."""
        text = name if value is None else f"{name}:{value}"
        out: list[Line] = []
        placed = False
        for ln in self.lines:
            if ln.attribute and ln.attribute[0] == name:
                if not placed:
                    out.append(Line("a", text))
                    placed = True
                continue
            out.append(ln)
        if not placed:
            out.append(Line("a", text))
        self.lines = out

    def __str__(self) -> str:
        return "\r\n".join(str(ln) for ln in [self.m_line, *self.lines])


@dataclass
class SessionDescription:
    session: list[Line]
    media: list[MediaSection]

    def attribute(self, name: str) -> str | None:
        return _first(self.session, name)

    def has(self, name: str) -> bool:
        return _has(self.session, name)

    def ice_credentials(self) -> tuple[str | None, str | None]:
        """ufrag/pwd of the BUNDLE transport: first m-line, else session level."""
        first = self.media[0] if self.media else None
        ufrag = (first.attribute("ice-ufrag") if first else None) or self.attribute("ice-ufrag")
        pwd = (first.attribute("ice-pwd") if first else None) or self.attribute("ice-pwd")
        return ufrag, pwd

    def fingerprint(self) -> str | None:
        first = self.media[0] if self.media else None
        return (first.attribute("fingerprint") if first else None) or self.attribute("fingerprint")

    def set_ice_credentials(self, ufrag: str, pwd: str) -> None:
        """Write new credentials wherever the description carries them."""
        for lines_owner in [self, *self.media]:
            if lines_owner is self:
                holder = self.session
                if _has(holder, "ice-ufrag"):
                    self.session = _replace(holder, {"ice-ufrag": ufrag, "ice-pwd": pwd})
            else:
                assert isinstance(lines_owner, MediaSection)
                if lines_owner.has("ice-ufrag"):
                    lines_owner.lines = _replace(lines_owner.lines, {"ice-ufrag": ufrag, "ice-pwd": pwd})

    @property
    def candidates(self) -> list[str]:
        return [c for m in self.media for c in m.candidates]

    @property
    def bundle_mids(self) -> list[str]:
        for value in _attributes(self.session, "group"):
            parts = (value or "").split()
            if parts and parts[0] == "BUNDLE":
                return parts[1:]
        return []

    def __str__(self) -> str:
        parts = [str(ln) for ln in self.session] + [str(m) for m in self.media]
        return "\r\n".join(parts) + "\r\n"


def _replace(lines: list[Line], values: dict[str, str]) -> list[Line]:
    out = []
    for ln in lines:
        attr = ln.attribute
        if attr and attr[0] in values:
            out.append(Line("a", f"{attr[0]}:{values[attr[0]]}"))
        else:
            out.append(ln)
    return out


def _split_lines(text: str, *, limit: int) -> list[Line]:
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise SdpError(f"SDP is larger than {limit} bytes")
    text = text.replace("\r\n", "\n")
    # One search of the whole text (a line break is not a control character
    # here): the line-by-line look, which names the line, only when it fails.
    clean = _CONTROL_IN_TEXT.search(text) is None
    lines: list[Line] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw == "":
            continue
        kind = raw[0]
        if raw[1:2] != "=" or not "a" <= kind <= "z":
            raise SdpError(f"line {number} is not of the form <type>=<value>: {raw[:60]!r}")
        if not clean and _CONTROL.search(raw):
            raise SdpError(f"line {number} holds a control character")
        lines.append(Line(kind, raw[2:]))
    return lines


def _parse_m_line(value: str) -> MediaSection:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"m-line needs <media> <port> <proto> <fmt ...>: {value[:60]!r}")
    kind, port_field, proto, *formats = parts
    port_text, slash, count_text = port_field.partition("/")
    if not _PORT.match(port_text) or int(port_text) > 65535:
        raise SdpError(f"m-line port is not a port number: {port_text[:20]!r}")
    if slash and (not _PORT.match(count_text) or int(count_text) == 0):
        raise SdpError(f"m-line number of ports is not a number: {count_text[:20]!r}")
    if not _TOKEN.match(kind) or not _TOKEN.match(proto.replace("/", "")):
        raise SdpError(f"m-line has an invalid media or proto token: {value[:60]!r}")
    return MediaSection(kind=kind, port=int(port_text), proto=proto, formats=formats,
                        port_count=int(count_text) if slash else None)


@probes.timed("sdp.parse")
def parse(text: str) -> SessionDescription:
    """Read a full SDP (RFC 8866).  Raises SdpError on anything we cannot trust."""
    lines = _split_lines(text, limit=MAX_SDP_BYTES)
    if not lines or str(lines[0]) != "v=0":
        raise SdpError("an SDP must start with v=0")
    # RFC 8866 section 9: o=, s= and t= belong to the session part, before any m=.
    session_types: set[str] = set()
    for ln in lines:
        if ln.type == "m":
            break
        session_types.add(ln.type)
    for required in ("o", "s", "t"):
        if required not in session_types:
            raise SdpError(f"the mandatory {required}= line is missing")
    if any(ln.type == "v" for ln in lines[1:]):
        raise SdpError("v= appears twice")
    session: list[Line] = []
    media: list[MediaSection] = []
    for ln in lines:
        if ln.type == "m":
            if len(media) >= MAX_MEDIA_SECTIONS:
                raise SdpError(f"more than {MAX_MEDIA_SECTIONS} media sections")
            media.append(_parse_m_line(ln.value))
        elif media:
            media[-1].lines.append(ln)
        else:
            session.append(ln)
    return SessionDescription(session=session, media=media)


# -- trickle-ice-sdpfrag (RFC 8840) -------------------------------------------


@dataclass
class SdpFragment:
    """What a WHIP/WHEP PATCH body says about ICE."""

    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_options: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)  # (mid, candidate)
    end_of_candidates: bool = False

    def candidates_for_ufrag(self, ufrag: str | None) -> list[str]:
        """Candidates that belong to the ICE session of ``ufrag``.

        A candidate line may name its ufrag (``... ufrag EsAw``); one naming
        another ufrag is for an older or newer ICE session and is dropped.
        """
        keep = []
        for _mid, cand in self.candidates:
            named = _candidate_extension(cand, "ufrag")
            if named is None or ufrag is None or named == ufrag:
                keep.append(cand)
        return keep


def _candidate_extension(candidate: str, name: str) -> str | None:
    """The value of one ``name value`` pair after the 8 fixed fields (RFC 8839 section 5.1).

    Only the pairs are searched: a foundation or an address that happens to
    read "ufrag" is not the ufrag extension.
    """
    parts = candidate.split()
    for i in range(8, len(parts) - 1, 2):
        if parts[i] == name:
            return parts[i + 1]
    return None


MAX_SDPFRAG_BYTES = 16 * 1024


def parse_fragment(text: str) -> SdpFragment:
    """Read an ``application/trickle-ice-sdpfrag`` body (RFC 8840 section 9)."""
    lines = _split_lines(text, limit=MAX_SDPFRAG_BYTES)
    frag = SdpFragment()
    mid: str | None = None
    for ln in lines:
        if ln.type == "m":
            _parse_m_line(ln.value)
            mid = None
            continue
        attr = ln.attribute
        if attr is None:
            continue
        name, value = attr
        if name == "mid":
            mid = value
        elif name == "ice-ufrag":
            frag.ice_ufrag = value
        elif name == "ice-pwd":
            frag.ice_pwd = value
        elif name == "ice-options":
            frag.ice_options = value
        elif name == "candidate":
            if not value or len(value.split()) < 8:
                raise SdpError(f"candidate line is incomplete: {(value or '')[:60]!r}")
            frag.candidates.append((mid, value))
        elif name == "end-of-candidates":
            frag.end_of_candidates = True
    # An empty value counts as missing: "a=ice-ufrag:x" + "a=ice-pwd:" is no restart.
    if bool(frag.ice_ufrag) != bool(frag.ice_pwd):
        raise SdpError("ice-ufrag and ice-pwd must come together")
    return frag


def write_fragment(
    *,
    ufrag: str,
    pwd: str,
    media: MediaSection,
    candidates: Iterable[str],
    ice_lite: bool = False,
    bundle_mids: Iterable[str] = (),
) -> str:
    """The server's side of an ICE restart (RFC 9725 section 4.3.3)."""
    out: list[str] = []
    if ice_lite:
        out.append("a=ice-lite")
    mids = list(bundle_mids)
    if mids:
        out.append("a=group:BUNDLE " + " ".join(mids))
    out.append(str(media.m_line))
    if media.mid is not None:
        out.append(f"a=mid:{media.mid}")
    out.append(f"a=ice-ufrag:{ufrag}")
    out.append(f"a=ice-pwd:{pwd}")
    out.extend(f"a=candidate:{c}" for c in candidates)
    out.append("a=end-of-candidates")
    return "\r\n".join(out) + "\r\n"


def after_ice_restart(offer: SessionDescription, fragment: SdpFragment) -> SessionDescription:
    """The offer as it stands after an ICE restart sent as an sdpfrag.

    New ufrag/pwd wherever the offer carried them; the old candidates are
    replaced by the fragment's (RFC 9725 section 4.3.3), which sit on the
    first m-line, the only one a BUNDLE transport reads.
    """
    assert fragment.ice_ufrag and fragment.ice_pwd
    restarted = parse(str(offer))
    restarted.set_ice_credentials(fragment.ice_ufrag, fragment.ice_pwd)
    for media in restarted.media:
        media.remove_attributes("candidate", "end-of-candidates")
    first = restarted.media[0]
    for candidate in fragment.candidates_for_ufrag(fragment.ice_ufrag):
        first.lines.append(Line("a", f"candidate:{candidate}"))
    if fragment.end_of_candidates:
        first.lines.append(Line("a", "end-of-candidates"))
    return restarted


def fragment_of(answer: SessionDescription) -> str:
    """An answer's ICE side as the sdpfrag a restart PATCH is answered with.

    Raises SdpError when the answer has no ICE credentials.
    """
    ufrag, pwd = answer.ice_credentials()
    if not ufrag or not pwd or not answer.media:
        raise SdpError("the answer has no ICE credentials")
    # A bundled answer repeats its candidates on every m-line; the fragment
    # describes the one transport, so each is written once, in order.
    candidates = list(dict.fromkeys(answer.candidates))
    return write_fragment(ufrag=ufrag, pwd=pwd, media=answer.media[0],
                          candidates=candidates, ice_lite=answer.has("ice-lite"),
                          bundle_mids=answer.bundle_mids)
