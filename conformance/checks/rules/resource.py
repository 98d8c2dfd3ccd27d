"""The session resource over its life: DELETE, and PATCH with its ETag
rules (RFC 9725 section 4.3, which WHEP copies).

Every PATCH rule reads the one PATCH probe of its protocol
(``common.patch_probe``): the PATCHes are made once, in order, on one
connected session, and each rule judges the answers it is about.
"""

from __future__ import annotations

import re
import secrets
from http import HTTPStatus

import httpx

from gateway.sdp import model as sdp

from ... import offers
from ...context import SDPFRAG, Context, describe, expect
from ...runner import MUST, SHOULD, Fail, Skip
from ..common import PatchProbe, fresh_session, is_4xx, media_type, patch_probe
from ..protocol import Protocol, rule

STRONG_ETAG = re.compile(r'^"[\x21\x23-\x7e\x80-\xff]*"$')


# -- DELETE ---------------------------------------------------------------------------------


@rule("delete", title="DELETE: 200, then the session is 404", topic="termination", level=MUST)
async def delete(ctx: Context, p: Protocol) -> str:
    session = await fresh_session(ctx, p.kind, "delete")
    r = await ctx.delete(session)
    expect(r.is_success, f"DELETE answered {describe(r)}; expected 200")
    after = await ctx.request("GET", session.location, kind=p.kind)
    expect(after.status_code in (404, 410), f"GET after DELETE answered {describe(after)}; expected 404")
    again = await ctx.request("DELETE", session.location, kind=p.kind)
    expect(again.status_code in (404, 410), f"a second DELETE answered {describe(again)}; expected 404")
    note = "" if r.status_code == 200 else f" (the spec's examples use 200, got {r.status_code})"
    return f"DELETE {r.status_code}, then GET {after.status_code}, DELETE {again.status_code}{note}"


@rule("delete.ignores-if-match", title="DELETE ignores If-Match", topic="patch", level=MUST)
async def delete_ignores_if_match(ctx: Context, p: Protocol) -> str:
    session = await fresh_session(ctx, p.kind, "delete-etag")
    r = await ctx.delete(session, headers={"If-Match": f'"conformance-stale-{secrets.token_hex(4)}"'})
    expect(r.is_success, f"DELETE with a stale If-Match answered {describe(r)}: the ETag must be "
                         "ignored when no ICE session has to match")
    return f"{r.status_code} despite a stale If-Match"


# -- PATCH: If-Match ---------------------------------------------------------------------------


async def _patchable(ctx: Context, p: Protocol) -> PatchProbe:
    """The PATCH probe, or Skip when the session takes no kind of PATCH:
    then no If-Match rule can be seen at work."""
    probe = await patch_probe(ctx, p.kind)
    if not probe.trickle_supported and not probe.restart_supported:
        raise Skip(f"the session supports neither trickle ICE nor ICE restarts (trickle PATCH "
                   f"answered {probe.trickle.status_code}, restart {probe.restart.status_code})")
    return probe


def _expect_precondition(probe: PatchProbe, r: httpx.Response, status: int, sent: str) -> None:
    """``r``, the answer to a PATCH ``sent`` so, must be ``status`` (428 or
    412).  A session without trickle ICE may instead refuse our
    trickle-shaped body with 422 before it looks at If-Match."""
    ok = r.status_code == status or (not probe.trickle_supported and r.status_code == 422)
    expect(ok, f"a PATCH {sent} answered {describe(r)}; expected {status} {HTTPStatus(status).phrase}")


@rule("patch.if-match-required", title="PATCH without If-Match: 428", topic="patch", level=MUST)
async def patch_if_match_required(ctx: Context, p: Protocol) -> str:
    probe = await _patchable(ctx, p)
    _expect_precondition(probe, probe.no_if_match, 428, "without If-Match")
    return f"{probe.no_if_match.status_code} without If-Match"


@rule("patch.stale-if-match", title="PATCH with a stale If-Match: 412", topic="patch", level=MUST)
async def patch_stale_if_match(ctx: Context, p: Protocol) -> str:
    probe = await _patchable(ctx, p)
    r = probe.stale
    _expect_precondition(probe, r, 412, "with a stale If-Match")
    if probe.old_etag_after_restart is not None:
        old = probe.old_etag_after_restart
        expect(old.status_code == 412, f"after an ICE restart, the previous ETag was accepted "
                                       f"({describe(old)}); it names a past ICE session: expected 412")
        return f"{r.status_code} for a made-up ETag, {old.status_code} for the pre-restart one"
    return f"{r.status_code} for a stale ETag"


# -- PATCH: trickle and ICE restarts ----------------------------------------------------------


@rule("patch.bad-request", title="PATCH with a wrong Content-Type or a malformed sdpfrag: 4xx",
      topic="patch", level=MUST)
async def patch_bad_request(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
    expect(is_4xx(probe.bad_type), f"a PATCH sent as text/plain answered {describe(probe.bad_type)}; "
                                   "expected a 4xx")
    expect(is_4xx(probe.malformed), f"a malformed sdpfrag answered {describe(probe.malformed)}; "
                                    "expected a 4xx")
    return f"text/plain -> {probe.bad_type.status_code}, malformed -> {probe.malformed.status_code}"


@rule("patch.trickle", title="Trickle PATCH: 204, no body, no ETag", topic="trickle", level=MUST)
async def patch_trickle(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
    r = probe.trickle
    if not probe.trickle_supported:
        raise Skip(f"the server does not support trickle ICE (the PATCH answered {r.status_code})")
    expect(r.status_code == 204, f"a trickle PATCH answered {describe(r)}; expected 204 No Content")
    expect(not r.content, f"the 204 carries {len(r.content)} bytes of body")
    expect("etag" not in r.headers, "a trickle's 204 MUST NOT carry an ETag")
    return "204, no body, no ETag"


@rule("patch.ice-restart", topic="restart", level=MUST,
      title='ICE restart (If-Match: "*"): 200 + sdpfrag + new ETag, or 422 when unsupported')
async def patch_ice_restart(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
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


@rule("patch.unsupported-kind", title="The kind of PATCH a session does not support: 422",
      topic="patch", level=MUST)
async def patch_unsupported_kind(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
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


@rule("patch.failed-restart-keeps-session", topic="restart", level=MUST, title={
    "whip": "A refused ICE restart leaves the session and its ICE connection up",
    "whep": "A refused ICE restart leaves the session playing"})
async def failed_restart_keeps_session(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
    if probe.restart_supported:
        raise Skip("the ICE restart succeeded; nothing failed")
    alive = probe.alive_after_restart
    assert alive is not None
    expect(alive.is_success, f"after the refused restart the session is gone: GET answered {describe(alive)}")
    expect(probe.media_after_restart is None, f"after the refused restart: {probe.media_after_restart}")
    return "the session and its media went on after the refused restart"


@rule("etag.strong", title="The 201 carries a strong ETag when ICE restarts are supported",
      topic="patch", level=MUST)
async def etag_strong(ctx: Context, p: Protocol) -> str:
    probe = await patch_probe(ctx, p.kind)
    etag = probe.etag
    if etag is None:
        expect(not probe.restart_supported,
               "the server supports ICE restarts but its 201 carries no ETag")
        return "no ETag: optional, since the server does not support ICE restarts"
    expect(STRONG_ETAG.match(etag), f"ETag {etag} is not a strong entity-tag (a quoted string, no W/)")
    return f"strong ETag {etag}"


@rule("patch.quoted-wildcard", topic="restart", level=SHOULD,
      title='If-Match: "*" (quoted, as RFC 9725 section 4.3.3 prints it) is taken as the wildcard')
async def patch_quoted_wildcard(ctx: Context, p: Protocol) -> str:
    """RFC 9110 spells the wildcard ``*``, but RFC 9725's ICE-restart
    example sends ``If-Match: "*"``, and clients (and READMEs) copy it.  A
    server never issues ``"*"`` as its own ETag, so refusing it (412) only
    breaks those clients.  Judged on a trickle PATCH."""
    probe = await patch_probe(ctx, p.kind)
    r = probe.quoted_star
    assert r is not None
    if not probe.trickle_supported:
        raise Skip(f"the server does not support trickle ICE (a trickle PATCH answered "
                   f"{probe.trickle.status_code})")
    expect(r.status_code == probe.trickle.status_code,
           f'a trickle PATCH with If-Match: "*" answered {describe(r)}, one with the ETag '
           f"{probe.trickle.status_code}")
    return f'{r.status_code} for If-Match: "*", as for the ETag'


@rule("patch.ice-restart.candidates-once", topic="restart", level=SHOULD,
      title="The ICE-restart answer lists each candidate once")
async def restart_candidates_once(ctx: Context, p: Protocol) -> str:
    """RFC 9725 section 4.3.3: the 200 carries the new set of candidates of
    the one (bundled) transport; a candidate line twice is the same
    candidate announced twice (RFC 8839 section 5.1 names it by its fields)."""
    probe = await patch_probe(ctx, p.kind)
    if not probe.restart_supported:
        raise Skip("the server does not support ICE restarts")
    assert probe.restart is not None
    lines = [ln.strip() for ln in probe.restart.text.splitlines() if ln.startswith("a=candidate:")]
    twice = sorted({ln for ln in lines if lines.count(ln) > 1})
    expect(not twice, f"{len(twice)} candidate line(s) appear more than once: {twice[:2]}")
    return f"{len(lines)} candidate(s), each once"
