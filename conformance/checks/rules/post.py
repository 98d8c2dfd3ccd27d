"""POSTing an offer: the status, the answer's shape, what must be refused,
and the Location of the session it makes."""

from __future__ import annotations

import math
import re
import string
from urllib.parse import urlsplit

from gateway.sdp import model as sdp

from ... import offers
from ...context import SDP, Context, describe, expect
from ...runner import MUST, SHOULD
from ..common import (
    basic,
    created,
    fresh_session,
    is_4xx,
    media_type,
    offer_for,
    stream_for,
)
from ..protocol import Protocol, rule

UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MALFORMED = {
    "not SDP": "hello, I am not SDP\r\n",
    "truncated": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
    "broken m-line": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x RTP 96\r\n",
}


@rule("post.created", topic="setup", level=MUST, title={
    "whip": "POST an offer: 201, application/sdp answer, Location",
    "whep": "POST an offer: 201 with an application/sdp answer and Location (or a 406 counter-offer)"})
async def post_created(ctx: Context, p: Protocol) -> str:
    b = await basic(ctx, p.kind)
    r = b.response
    expect(r.status_code in p.created,
           f"POST of a valid offer answered {describe(r)}; expected " + " or ".join(map(str, p.created)))
    expect(media_type(r) == SDP, f"Content-Type is {r.headers.get('content-type')!r}, not {SDP}")
    expect(r.headers.get("location"), "no Location header")
    offers.parse(r.text, "the answer" if r.status_code == 201 else "the counter-offer")
    if r.status_code == 406:
        return "the server answered with a counter-offer (406): allowed by draft-03"
    return f"201, Location {r.headers['location']}"


@rule("post.answer-{answer}", title="The answer is {answer}", topic="direction", level=MUST)
async def answer_direction(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    dirs = [m.direction for m in offers.accepted(offers.parse(b.response.text))]
    expect(dirs, "every m-line of the answer is rejected")
    if b.response.status_code == 406:  # a WHEP counter-offer: the server is the offerer
        bad = [d for d in dirs if d in ("recvonly", "inactive")]
        expect(not bad, f"counter-offer directions {dirs}: recvonly and inactive MUST NOT be used")
        return f"counter-offer directions {dirs}"
    expect(all(d == p.answer for d in dirs), f"answer directions {dirs}; every one must be {p.answer}")
    return f"{p.answer} on {len(dirs)} m-line(s)"


@rule("post.answer-candidates", title="The answer holds the server's candidates (it never trickles)",
      topic="trickle", level=MUST)
async def answer_candidates(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    desc = offers.parse(b.response.text)
    cands = desc.candidates + _session_candidates(desc)
    expect(cands, "the answer carries no a=candidate: the server must gather all of its "
                  "candidates before answering, since it cannot trickle them later")
    return f"{len(cands)} candidate(s) in the answer"


def _session_candidates(desc: sdp.SessionDescription) -> list[str]:
    return [ln.attribute[1] or "" for ln in desc.session if ln.attribute and ln.attribute[0] == "candidate"]


@rule("post.wrong-content-type", title="An offer not sent as application/sdp gets a 4xx", topic="errors",
      level=MUST)
async def wrong_content_type(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "ctype")
    r, _ = await ctx.post(p.kind, stream, await offer_for(ctx, p.kind), content_type="text/plain")
    expect(is_4xx(r), f"an offer sent as text/plain was answered {describe(r)}; expected a 4xx")
    return f"text/plain -> {r.status_code}"


@rule("post.malformed-sdp", title="Malformed SDP gets a 4xx", topic="errors", level=MUST)
async def malformed_sdp(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "malformed")
    bodies = dict(MALFORMED)
    if p.empty_offer_is_malformed:
        bodies["empty body"] = ""
    seen = []
    for name, body in bodies.items():
        r, _ = await ctx.post(p.kind, stream, body)
        expect(is_4xx(r), f"{name}: answered {describe(r)}; expected a 4xx")
        seen.append(f"{name} -> {r.status_code}")
    return ", ".join(seen)


@rule("post.offer-direction", topic="direction", level={"whip": MUST, "whep": SHOULD}, title={
    "whip": "A recvonly or inactive offer is an error",
    "whep": "A sendonly or inactive viewer offer is refused"})
async def offer_direction(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "direction")
    offer = await offer_for(ctx, p.kind)
    seen = []
    for direction in p.refused_directions:
        r, _ = await ctx.post(p.kind, stream, offers.set_direction(offer, direction))
        expect(is_4xx(r), f"an offer with a={direction} was answered {describe(r)}; expected an error")
        seen.append(f"{direction} -> {r.status_code}")
    return ", ".join(seen)


@rule("post.location-form", topic="setup", level=SHOULD, title={
    "whip": "Location is absolute or root-relative (what OBS, Eyevinn and MediaMTX resolve)",
    "whep": "Location is absolute or root-relative (what Eyevinn's player and MediaMTX resolve)"})
async def location_form(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    loc = b.response.headers["location"]
    if loc.startswith(("http://", "https://")):
        return f"absolute: {loc}"
    expect(loc.startswith("/") and not loc.startswith("//"),
           f"Location {loc!r} is relative to the endpoint: OBS, Eyevinn's player and MediaMTX "
           "resolve only absolute or root-relative ones")
    return f"root-relative: {loc}"


# -- the randomness of session URLs -------------------------------------------------------


def _bits_per_char(chars: set[str]) -> float:
    if chars <= set(string.digits):
        return math.log2(10)
    if chars <= set(string.hexdigits.lower() + string.digits) or chars <= set(string.hexdigits.upper()):
        return 4.0
    if chars <= set(string.ascii_letters + string.digits):
        return math.log2(62)
    return 6.0  # base64 / base64url and anything richer: count it as 6 bits, no more


def apparent_bits(first: str, second: str) -> tuple[float, str]:
    """A heuristic for the randomness in a session URL: take the parts of two
    Locations that differ, and count what their alphabet and length could
    hold (a UUID counts 122 bits; sequential numbers count nothing)."""
    a, b = urlsplit(first), urlsplit(second)
    pa = a.path.split("/") + ([a.query] if a.query else [])
    pb = b.path.split("/") + ([b.query] if b.query else [])
    if len(pa) != len(pb):
        return 0.0, f"the two Locations have different shapes: {first} vs {second}"
    bits, parts = 0.0, []
    for x, y in zip(pa, pb, strict=True):
        if x == y:
            continue
        if UUID.match(x):
            bits += 122
            parts.append(f"UUID {x} (122 random bits at most)")
            continue
        if x.isdigit() and y.isdigit() and abs(int(x) - int(y)) < 10_000:
            parts.append(f"sequential-looking numbers {x}, {y}")
            continue
        common = 0
        while common < min(len(x), len(y)) and x[common] == y[common]:
            common += 1
        core = x[common:].replace("-", "") if set(x) <= set(string.hexdigits + "-") else x[common:]
        per = _bits_per_char(set(core))
        bits += len(core) * per
        parts.append(f"{x!r}: {len(core)} chars x {per:.2f} bits")
    return bits, "; ".join(parts) or "no part differs"


@rule("resource.entropy", title="Session URLs carry at least 128 random bits", topic="security",
      level=SHOULD)
async def entropy(ctx: Context, p: Protocol) -> str:
    locations = []
    stream = await stream_for(ctx, p.kind, "entropy")
    for _ in range(2):  # one after the other, so a fixed URL's one-publisher rule cannot interfere
        session = await fresh_session(ctx, p.kind, "entropy", stream)
        locations.append(session.location)
        await ctx.delete(session)
    expect(locations[0] != locations[1], f"two sessions got the same Location {locations[0]}")
    bits, how = apparent_bits(*locations)
    expect(bits >= 128, f"about {bits:.0f} bits of apparent randomness (< 128): {how}")
    return f"about {bits:.0f} bits ({how})"
