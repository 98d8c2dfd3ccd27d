"""The rules WHIP (RFC 9725) and WHEP (draft-03) share, written once.

WHEP copies WHIP's resource model almost word for word: POST an offer,
201 + Location, GET/OPTIONS, PATCH with ETags, DELETE.  Each function here
tests one such rule for either protocol; ``whip.py`` and ``whep.py``
register it under each spec's own section and level.  The differences that
matter (the answer is recvonly vs sendonly, WHEP's 406 counter-offer, the
stream a viewer must POST to) are handled here, in the open.
"""

from __future__ import annotations

import math
import re
import secrets
import string
from urllib.parse import urlsplit

import httpx

from gateway import sdp

from .. import offers
from ..context import SDP, SDPFRAG, Context, Kind, Session, describe, expect
from ..runner import Fail, Skip
from .common import Basic, basic, created, fresh_session, live, patch_probe

ORIGIN = "https://conformance.invalid"
STRONG_ETAG = re.compile(r'^"[\x21\x23-\x7e\x80-\xff]*"$')
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def media_type(response: httpx.Response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


async def stream_for(ctx: Context, kind: Kind, tag: str) -> str:
    """Where a check POSTs: WHIP, a fresh stream; WHEP, the live one (so a
    4xx is about what the check sent, not about a missing publisher)."""
    return ctx.new_stream(tag) if kind == "whip" else (await live(ctx)).stream


async def offer_for(ctx: Context, kind: Kind) -> str:
    return await ctx.offers.publisher() if kind == "whip" else await ctx.offers.viewer()


def is_4xx(response: httpx.Response) -> bool:
    return 400 <= response.status_code < 500


# -- POST ---------------------------------------------------------------------------


async def post_created(ctx: Context, kind: Kind) -> str:
    b = await basic(ctx, kind)
    r = b.response
    allowed = (201,) if kind == "whip" else (201, 406)
    expect(r.status_code in allowed,
           f"POST of a valid offer answered {describe(r)}; expected " + " or ".join(map(str, allowed)))
    expect(media_type(r) == SDP, f"Content-Type is {r.headers.get('content-type')!r}, not {SDP}")
    expect(r.headers.get("location"), "no Location header")
    offers.parse(r.text, "the answer" if r.status_code == 201 else "the counter-offer")
    if r.status_code == 406:
        return "the server answered with a counter-offer (406): allowed by draft-03"
    return f"201, Location {r.headers['location']}"


def _directions(desc: sdp.SessionDescription) -> list[str]:
    return [m.direction for m in offers.accepted(desc)]


async def answer_direction(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    desc = offers.parse(b.response.text)
    dirs = _directions(desc)
    expect(dirs, "every m-line of the answer is rejected")
    if kind == "whip":
        expect(all(d == "recvonly" for d in dirs), f"answer directions {dirs}; every one must be recvonly")
        return f"recvonly on {len(dirs)} m-line(s)"
    if b.response.status_code == 201:
        expect(all(d == "sendonly" for d in dirs), f"answer directions {dirs}; every one must be sendonly")
        return f"sendonly on {len(dirs)} m-line(s)"
    bad = [d for d in dirs if d in ("recvonly", "inactive")]
    expect(not bad, f"counter-offer directions {dirs}: recvonly and inactive MUST NOT be used")
    return f"counter-offer directions {dirs}"


async def answer_candidates(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    desc = offers.parse(b.response.text)
    cands = desc.candidates + [v for v in _session_candidates(desc)]
    expect(cands, "the answer carries no a=candidate: the server must gather all of its "
                  "candidates before answering, since it cannot trickle them later")
    return f"{len(cands)} candidate(s) in the answer"


def _session_candidates(desc: sdp.SessionDescription) -> list[str]:
    return [ln.attribute[1] or "" for ln in desc.session if ln.attribute and ln.attribute[0] == "candidate"]


async def wrong_content_type(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "ctype")
    r, _ = await ctx.post(kind, stream, await offer_for(ctx, kind), content_type="text/plain")
    expect(is_4xx(r), f"an offer sent as text/plain was answered {describe(r)}; expected a 4xx")
    return f"text/plain -> {r.status_code}"


MALFORMED = {
    "not SDP": "hello, I am not SDP\r\n",
    "truncated": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
    "broken m-line": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x RTP 96\r\n",
}


async def malformed_sdp(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "malformed")
    bodies = dict(MALFORMED)
    if kind == "whip":  # an empty WHEP POST is the counter-offer convention, not an error
        bodies["empty body"] = ""
    seen = []
    for name, body in bodies.items():
        r, _ = await ctx.post(kind, stream, body)
        expect(is_4xx(r), f"{name}: answered {describe(r)}; expected a 4xx")
        seen.append(f"{name} -> {r.status_code}")
    return ", ".join(seen)


async def forbidden_directions(ctx: Context, kind: Kind, directions: tuple[str, ...]) -> str:
    stream = await stream_for(ctx, kind, "direction")
    offer = await offer_for(ctx, kind)
    seen = []
    for direction in directions:
        r, _ = await ctx.post(kind, stream, offers.set_direction(offer, direction))
        expect(is_4xx(r), f"an offer with a={direction} was answered {describe(r)}; expected an error")
        seen.append(f"{direction} -> {r.status_code}")
    return ", ".join(seen)


async def location_form(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    loc = b.response.headers["location"]
    if loc.startswith(("http://", "https://")):
        return f"absolute: {loc}"
    expect(loc.startswith("/") and not loc.startswith("//"),
           f"Location {loc!r} is relative to the endpoint: OBS, Eyevinn's player and MediaMTX "
           "resolve only absolute or root-relative ones")
    return f"root-relative: {loc}"


# -- resource URLs --------------------------------------------------------------------


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
    pa = [s for s in a.path.split("/")] + ([a.query] if a.query else [])
    pb = [s for s in b.path.split("/")] + ([b.query] if b.query else [])
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


async def entropy(ctx: Context, kind: Kind) -> str:
    locations = []
    stream = await stream_for(ctx, kind, "entropy")
    for _ in range(2):  # one after the other, so a fixed URL's one-publisher rule cannot interfere
        session = await fresh_session(ctx, kind, "entropy", stream)
        locations.append(session.location)
        await ctx.delete(session)
    expect(locations[0] != locations[1], f"two sessions got the same Location {locations[0]}")
    bits, how = apparent_bits(*locations)
    expect(bits >= 128, f"about {bits:.0f} bits of apparent randomness (< 128): {how}")
    return f"about {bits:.0f} bits ({how})"


# -- GET, HEAD, OPTIONS ------------------------------------------------------------------


async def get_endpoint(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "get")
    url = ctx.whip_url(stream) if kind == "whip" else ctx.whep_url(stream)
    r = await ctx.request("GET", url, kind=kind)
    expect(r.is_success, f"GET on the endpoint answered {describe(r)}; expected 2xx")
    expect(not r.content, f"GET on the endpoint returned {len(r.content)} bytes; expected no content")
    return f"{r.status_code}, no content"


async def get_resource(ctx: Context, kind: Kind) -> str:
    session = await fresh_session(ctx, kind, "getres")
    r = await ctx.request("GET", session.location, kind=kind)
    expect(r.is_success, f"GET on the session answered {describe(r)}; expected 2xx")
    expect(not r.content, f"GET on the session returned {len(r.content)} bytes; expected no content")
    return f"{r.status_code}, no content"


async def options_accept_post(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "options")
    url = ctx.whip_url(stream) if kind == "whip" else ctx.whep_url(stream)
    r = await ctx.request("OPTIONS", url, kind=kind)
    expect(r.status_code == 200, f"OPTIONS answered {describe(r)}; expected 200")
    accept = [v.split(";")[0].strip().lower() for v in r.headers.get("accept-post", "").split(",")]
    expect(SDP in accept, f"Accept-Post is {r.headers.get('accept-post')!r}; expected {SDP}")
    return f"200, Accept-Post: {r.headers['accept-post']}"


async def _preflight(ctx: Context, url: str, kind: Kind, method: str, request_headers: str) -> httpx.Response:
    """A browser's CORS preflight: no credentials, ever (Fetch)."""
    return await ctx.request("OPTIONS", url, kind=kind, auth=None, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": request_headers})


async def endpoint_preflight(ctx: Context, kind: Kind) -> httpx.Response:
    async def build() -> httpx.Response:
        stream = await stream_for(ctx, kind, "preflight")
        url = ctx.whip_url(stream) if kind == "whip" else ctx.whep_url(stream)
        return await _preflight(ctx, url, kind, "POST", "authorization, content-type")
    return await ctx.memo(f"{kind}.preflight", build)


def _listed(value: str | None, wanted: str) -> bool:
    items = {v.strip().lower() for v in (value or "").split(",")}
    return wanted.lower() in items or "*" in items


def _allows_origin(r: httpx.Response) -> bool:
    return r.headers.get("access-control-allow-origin") in ("*", ORIGIN)


async def cors_preflight(ctx: Context, kind: Kind) -> str:
    r = await endpoint_preflight(ctx, kind)
    expect(r.is_success, f"CORS preflight for POST answered {describe(r)}; expected 200")
    expect(_allows_origin(r), "the preflight has no Access-Control-Allow-Origin for the origin "
                              f"(got {r.headers.get('access-control-allow-origin')!r})")
    methods = r.headers.get("access-control-allow-methods")
    expect(methods is None or _listed(methods, "POST"),
           f"Access-Control-Allow-Methods {methods!r} lacks POST")
    allow_headers = r.headers.get("access-control-allow-headers", "")
    expect(_listed(allow_headers, "content-type"),
           f"Access-Control-Allow-Headers {allow_headers!r} lacks Content-Type")
    if ctx.token_for(kind):  # "*" does not cover Authorization (Fetch)
        items = {v.strip().lower() for v in allow_headers.split(",")}
        expect("authorization" in items,
               f"Access-Control-Allow-Headers {allow_headers!r} lacks Authorization, which a browser "
               "client needs for the bearer token")
    session = await fresh_session(ctx, kind, "preflight")
    seen = [f"POST -> {r.status_code}"]
    for method, headers in (("PATCH", "content-type, if-match"), ("DELETE", "")):
        rr = await _preflight(ctx, session.location, kind, method, headers or "authorization")
        expect(rr.is_success and _allows_origin(rr),
               f"CORS preflight for {method} on the session answered {describe(rr)} "
               f"(Access-Control-Allow-Origin {rr.headers.get('access-control-allow-origin')!r})")
        m = rr.headers.get("access-control-allow-methods")
        expect(m is None or _listed(m, method), f"{method} preflight: Allow-Methods {m!r} lacks {method}")
        if method == "PATCH":
            h = rr.headers.get("access-control-allow-headers")
            expect(_listed(h, "if-match"), f"PATCH preflight: Allow-Headers {h!r} lacks If-Match")
        seen.append(f"{method} -> {rr.status_code}")
    return ", ".join(seen)


def ice_server_links(response: httpx.Response, base: str) -> list[dict[str, str]]:
    from gateway.clients.whep import parse_links

    return [link for link in parse_links(response.headers.get_list("link"), base)
            if "ice-server" in link.get("rel", "").split()]


async def preflight_without_ice_servers(ctx: Context, kind: Kind) -> str:
    r = await endpoint_preflight(ctx, kind)
    links = ice_server_links(r, str(r.url))
    expect(not links, f"the CORS preflight carries {len(links)} ice-server Link(s); preflights "
                      "should not (TURN credentials may be costly to mint)")
    return "no ice-server Link on the preflight"


async def cors_exposed_headers(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "cors")
    r, session = await ctx.post(kind, stream, await offer_for(ctx, kind), headers={"Origin": ORIGIN})
    if session is None:
        raise Skip(f"the POST with an Origin answered {describe(r)}")
    expect(_allows_origin(r), "a cross-origin POST got no Access-Control-Allow-Origin: browsers "
                              "cannot read the answer")
    exposed = r.headers.get("access-control-expose-headers", "")
    needed = ["location"] + [h for h in ("etag", "link") if h in r.headers]
    missing = [h for h in needed if not _listed(exposed, h)]
    expect(not missing, f"Access-Control-Expose-Headers {exposed!r} lacks {missing}: a browser "
                        "client cannot read them")
    return f"exposes {', '.join(needed)}"


# -- Link headers ------------------------------------------------------------------------


async def link_ice_servers(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    links = ice_server_links(b.response, str(b.response.url))
    if not links:
        raise Skip("the server advertises no STUN/TURN servers (Link rel=ice-server)")
    for link in links:
        url = link["url"]
        expect(url.startswith(ICE_SCHEMES), f"ice-server Link target {url!r} is not a stun:/turn: URI")
        ctype = link.get("credential-type", "password")
        expect(ctype == "password", f"credential-type {ctype!r} on {url}: only \"password\" is defined")
        if url.startswith(("turn:", "turns:")):
            expect(link.get("username") and link.get("credential"),
                   f"TURN server {url} comes without username/credential")
    return f"{len(links)} ice-server Link(s), well formed"


async def extension_links(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    if b.response.status_code != 201:
        raise Skip("extensions are advertised on a 201; the server answered with a counter-offer")
    prefix = f"urn:ietf:params:{kind}:"
    found = []
    for link in b.session.links if b.session else []:
        for rel in link.get("rel", "").split():
            if rel.startswith(prefix):
                expect(rel.startswith(prefix + "ext:"),
                       f"Link rel {rel!r}: extension URNs start with {prefix}ext:")
                expect(link["url"].startswith(("http://", "https://")),
                       f"Link {rel} has no usable URL: {link['url']!r}")
                found.append(rel)
    if not found:
        raise Skip(f"the server advertises no {kind.upper()} extensions")
    return ", ".join(found)


# -- DELETE --------------------------------------------------------------------------------


async def delete(ctx: Context, kind: Kind) -> str:
    session = await fresh_session(ctx, kind, "delete")
    r = await ctx.delete(session)
    expect(r.is_success, f"DELETE answered {describe(r)}; expected 200")
    after = await ctx.request("GET", session.location, kind=kind)
    expect(after.status_code in (404, 410), f"GET after DELETE answered {describe(after)}; expected 404")
    again = await ctx.request("DELETE", session.location, kind=kind)
    expect(again.status_code in (404, 410), f"a second DELETE answered {describe(again)}; expected 404")
    note = "" if r.status_code == 200 else f" (the spec's examples use 200, got {r.status_code})"
    return f"DELETE {r.status_code}, then GET {after.status_code}, DELETE {again.status_code}{note}"


async def delete_ignores_if_match(ctx: Context, kind: Kind) -> str:
    session = await fresh_session(ctx, kind, "delete-etag")
    r = await ctx.delete(session, headers={"If-Match": f'"conformance-stale-{secrets.token_hex(4)}"'})
    expect(r.is_success, f"DELETE with a stale If-Match answered {describe(r)}: the ETag must be "
                         "ignored when no ICE session has to match")
    return f"{r.status_code} despite a stale If-Match"


# -- SDP: bundle, DTLS role, ICE lite ----------------------------------------------------------


async def bundle_answer(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    desc = offers.parse(b.response.text)
    mids = [m.mid for m in offers.accepted(desc)]
    group = desc.bundle_mids
    expect(group, "the answer has no a=group:BUNDLE")
    missing = [m for m in mids if m not in group]
    expect(not missing, f"m-lines {missing} are not in the BUNDLE group {group}")
    no_mux = [m.mid for m in offers.accepted(desc) if not m.has("rtcp-mux")]
    expect(not no_mux, f"m-lines {no_mux} lack a=rtcp-mux")
    return f"BUNDLE {' '.join(group)}, rtcp-mux on every m-line"


async def max_bundle_offer(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "maxbundle")
    offer = offers.max_bundle(await offer_for(ctx, kind))
    r, session = await ctx.post(kind, stream, offer)
    expect(session is not None, f"an offer shaped like RFC 9725's example (max-bundle: bundle-only "
                                f"m-lines on port 0, rtcp-mux-only) was answered {describe(r)}")
    desc = offers.parse(r.text)
    turned_down = [m.mid for m in desc.media if offers.rejected(desc, m)]
    expect(not turned_down, f"the answer rejects the bundle-only m-line(s) {turned_down}")
    return f"{r.status_code}, all {len(desc.media)} m-lines accepted"


def _setup_roles(desc: sdp.SessionDescription) -> list[str]:
    roles = [m.attribute("setup") or desc.attribute("setup") or "" for m in offers.accepted(desc)]
    return roles


async def answer_setup_role(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    desc = offers.parse(b.response.text)
    roles = _setup_roles(desc)
    if b.response.status_code == 406:
        expect(all(r == "actpass" for r in roles), f"counter-offer a=setup {roles}; an offer uses actpass")
        return "counter-offer: setup actpass"
    expect(all(r in ("active", "passive") for r in roles),
           f"answer a=setup {roles}: an answer must pick active or passive (RFC 8842)")
    return f"setup {', '.join(sorted(set(roles)))}"


async def full_ice(ctx: Context, kind: Kind) -> str:
    b = await created(ctx, kind)
    desc = offers.parse(b.response.text)
    lite = desc.has("ice-lite") or any(m.has("ice-lite") for m in desc.media)
    expect(not lite, "the media server is ICE-lite: allowed only when every client can reach its "
                     "address directly (a public IP, no NAT in front)")
    return "full ICE"


# -- PATCH -------------------------------------------------------------------------------------


def _patch_unsupported(probe) -> None:  # type: ignore[no-untyped-def]
    if not probe.trickle_supported and not probe.restart_supported:
        raise Skip(f"the session supports neither trickle ICE nor ICE restarts (trickle PATCH "
                   f"answered {probe.trickle.status_code}, restart {probe.restart.status_code})")


async def patch_if_match_required(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    _patch_unsupported(probe)
    r = probe.no_if_match
    ok = r.status_code == 428 or (not probe.trickle_supported and r.status_code == 422)
    expect(ok, f"a PATCH without If-Match answered {describe(r)}; expected 428 Precondition Required")
    return f"{r.status_code} without If-Match"


async def patch_stale_if_match(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    _patch_unsupported(probe)
    r = probe.stale
    ok = r.status_code == 412 or (not probe.trickle_supported and r.status_code == 422)
    expect(ok, f"a PATCH with a stale If-Match answered {describe(r)}; expected 412 Precondition Failed")
    if probe.old_etag_after_restart is not None:
        old = probe.old_etag_after_restart
        expect(old.status_code == 412, f"after an ICE restart, the previous ETag was accepted "
                                       f"({describe(old)}); it names a past ICE session: expected 412")
        return f"{r.status_code} for a made-up ETag, {old.status_code} for the pre-restart one"
    return f"{r.status_code} for a stale ETag"


async def patch_bad_request(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    expect(is_4xx(probe.bad_type), f"a PATCH sent as text/plain answered {describe(probe.bad_type)}; "
                                   "expected a 4xx")
    expect(is_4xx(probe.malformed), f"a malformed sdpfrag answered {describe(probe.malformed)}; "
                                    "expected a 4xx")
    return f"text/plain -> {probe.bad_type.status_code}, malformed -> {probe.malformed.status_code}"


async def patch_trickle(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    r = probe.trickle
    if not probe.trickle_supported:
        raise Skip(f"the server does not support trickle ICE (the PATCH answered {r.status_code})")
    expect(r.status_code == 204, f"a trickle PATCH answered {describe(r)}; expected 204 No Content")
    expect(not r.content, f"the 204 carries {len(r.content)} bytes of body")
    expect("etag" not in r.headers, "a trickle's 204 MUST NOT carry an ETag")
    return "204, no body, no ETag"


async def patch_ice_restart(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    r = probe.restart
    assert r is not None
    if r.status_code == 422:
        return "ICE restarts not supported: 422, as required (both are conformant)"
    expect(r.status_code == 200, f"an ICE restart (new ufrag/pwd, If-Match \"*\") answered {describe(r)}; "
                                 "expected 200 with an sdpfrag, or 422 when restarts are unsupported")
    expect(media_type(r) == SDPFRAG, f"the 200 has Content-Type {r.headers.get('content-type')!r}")
    new_etag = r.headers.get("etag")
    expect(new_etag, "the 200 carries no ETag for the new ICE session")
    expect(new_etag != probe.etag, f"the new ETag {new_etag} is the old one")
    expect(STRONG_ETAG.match(new_etag or ""), f"the new ETag {new_etag} is not a strong entity-tag")
    try:
        frag = sdp.parse_fragment(r.text)
    except sdp.SdpError as exc:
        raise Fail(f"the restart answer is not a valid sdpfrag: {exc}") from None
    expect(frag.ice_ufrag and frag.ice_pwd, "the restart answer lacks ice-ufrag/ice-pwd")
    answer = offers.parse(probe.session.remote_sdp)
    expect(frag.ice_ufrag != answer.ice_credentials()[0], "the restart answer keeps the old ice-ufrag")
    m_lines = [ln for ln in r.text.splitlines() if ln.startswith("m=")]
    expect(len(m_lines) <= 1, f"the restart answer has {len(m_lines)} m-lines; with max-bundle it carries "
                              "only the first m-line of the bundle")
    lines = {ln.strip() for ln in r.text.splitlines()}
    answer_lite = answer.has("ice-lite") or any(m.has("ice-lite") for m in answer.media)
    expect(answer_lite == ("a=ice-lite" in lines),
           f"the answer {'is' if answer_lite else 'is not'} ice-lite but the restart fragment "
           f"{'is not' if answer_lite else 'is'}: both must carry the same ice-lite/ice-options")
    return (f"ICE restart supported: 200, new ufrag {frag.ice_ufrag}, new ETag {new_etag}, "
            f"{len(frag.candidates)} candidate(s)")


async def patch_unsupported_kind(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    assert probe.restart is not None
    trickle, restart = probe.trickle.status_code, probe.restart.status_code
    if probe.trickle_supported and probe.restart_supported:
        raise Skip("the server supports both trickle ICE and ICE restarts: no PATCH kind is unsupported")
    if not probe.trickle_supported and not probe.restart_supported:
        raise Skip(f"the server supports neither kind of PATCH (trickle {trickle}, restart {restart})")
    if probe.trickle_supported:
        expect(restart == 422, f"trickle works but an ICE restart answered {describe(probe.restart)}; "
                               "the unsupported kind MUST get 422")
        return "restart unsupported -> 422"
    expect(trickle == 422, f"restarts work but a trickle answered {describe(probe.trickle)}; "
                           "the unsupported kind MUST get 422")
    return "trickle unsupported -> 422"


async def failed_restart_keeps_session(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    if probe.restart_supported:
        raise Skip("the ICE restart succeeded; nothing failed")
    alive = probe.alive_after_restart
    assert alive is not None
    expect(alive.is_success, f"after the refused restart the session is gone: GET answered {describe(alive)}")
    expect(probe.media_after_restart is None, f"after the refused restart: {probe.media_after_restart}")
    return "the session and its media went on after the refused restart"


async def etag_strong(ctx: Context, kind: Kind) -> str:
    probe = await patch_probe(ctx, kind)
    etag = probe.etag
    if etag is None:
        expect(not probe.restart_supported,
               "the server supports ICE restarts but its 201 carries no ETag")
        return "no ETag: optional, since the server does not support ICE restarts"
    expect(STRONG_ETAG.match(etag), f"ETag {etag} is not a strong entity-tag (a quoted string, no W/)")
    return f"strong ETag {etag}"


# -- auth --------------------------------------------------------------------------------------


async def auth_missing(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "noauth")
    r, _ = await ctx.post(kind, stream, await offer_for(ctx, kind), auth=None)
    expect(r.status_code == 401, f"a POST without Authorization answered {describe(r)}; expected 401")
    challenge = r.headers.get("www-authenticate", "")
    expect(challenge.lower().startswith("bearer"),
           f"the 401 carries WWW-Authenticate {challenge!r}; expected a Bearer challenge (RFC 6750)")
    return f"401, WWW-Authenticate: {challenge}"


async def auth_wrong(ctx: Context, kind: Kind) -> str:
    stream = await stream_for(ctx, kind, "badauth")
    r, _ = await ctx.post(kind, stream, await offer_for(ctx, kind),
                          auth=f"Bearer conformance-wrong-{secrets.token_hex(6)}")
    expect(r.status_code in (401, 403),
           f"a POST with a wrong token answered {describe(r)}; expected 401 or 403")
    return f"{r.status_code} for a wrong token"


# -- redirects ---------------------------------------------------------------------------------


async def redirects(ctx: Context, kind: Kind) -> str:
    base = ctx.config.whip if kind == "whip" else ctx.config.whep
    assert base is not None
    host = urlsplit(base).netloc
    mine = [(m, u, s) for m, u, s in ctx.redirects if urlsplit(u).netloc == host]
    bad = [f"{m} {u} -> {s}" for m, u, s in mine if s in (301, 302, 303)]
    expect(not bad, f"redirects that turn POST into GET: {bad}; use 307")
    if not ctx.posts[kind]:
        raise Skip("no POST was made in this run")
    if not mine:
        return f"no redirect in {ctx.posts[kind]} POSTs"
    return f"{len(mine)} redirect(s), all 307/308"


__all__ = ["Basic", "Session"]
