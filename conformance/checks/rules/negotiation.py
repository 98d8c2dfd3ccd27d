"""What WebRTC asks of the answer beyond its direction: BUNDLE with
rtcp-mux, a DTLS role, full ICE."""

from __future__ import annotations

from gateway.sdp import model as sdp

from ... import offers
from ...context import Context, describe, expect
from ...runner import MUST, SHOULD
from ..common import created, offer_for, stream_for
from ..protocol import Protocol, rule


@rule("sdp.bundle", title="The answer BUNDLEs every m-line with rtcp-mux", topic="bundle", level=MUST)
async def bundle_answer(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    desc = offers.parse(b.response.text)
    mids = [m.mid for m in offers.accepted(desc)]
    group = desc.bundle_mids
    expect(group, "the answer has no a=group:BUNDLE")
    missing = [m for m in mids if m not in group]
    expect(not missing, f"m-lines {missing} are not in the BUNDLE group {group}")
    no_mux = [m.mid for m in offers.accepted(desc) if not m.has("rtcp-mux")]
    expect(not no_mux, f"m-lines {no_mux} lack a=rtcp-mux")
    return f"BUNDLE {' '.join(group)}, rtcp-mux on every m-line"


@rule("sdp.max-bundle-offer", topic="bundle", level=MUST, title={
    "whip": "An RFC-shaped max-bundle offer (bundle-only, rtcp-mux-only) is fully accepted",
    "whep": "A max-bundle viewer offer (bundle-only, rtcp-mux-only) is fully accepted"})
async def max_bundle_offer(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "maxbundle")
    offer = offers.max_bundle(await offer_for(ctx, p.kind))
    r, session = await ctx.post(p.kind, stream, offer)
    expect(session is not None, f"an offer shaped like RFC 9725's example (max-bundle: bundle-only "
                                f"m-lines on port 0, rtcp-mux-only) was answered {describe(r)}")
    desc = offers.parse(r.text)
    turned_down = [m.mid for m in desc.media if offers.rejected(desc, m)]
    expect(not turned_down, f"the answer rejects the bundle-only m-line(s) {turned_down}")
    return f"{r.status_code}, all {len(desc.media)} m-lines accepted"


def setup_roles(desc: sdp.SessionDescription) -> list[str]:
    """The a=setup of every accepted m-line (or the session's)."""
    return [m.attribute("setup") or desc.attribute("setup") or "" for m in offers.accepted(desc)]


@rule("sdp.setup-role", topic="dtls", level=MUST, title={
    "whip": "The answer's a=setup is active or passive",
    "whep": "The answer's a=setup is active or passive (RFC 8842)"})
async def answer_setup_role(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    roles = setup_roles(offers.parse(b.response.text))
    if b.response.status_code == 406:
        expect(all(r == "actpass" for r in roles), f"counter-offer a=setup {roles}; an offer uses actpass")
        return "counter-offer: setup actpass"
    expect(all(r in ("active", "passive") for r in roles),
           f"answer a=setup {roles}: an answer must pick active or passive (RFC 8842)")
    return f"setup {', '.join(sorted(set(roles)))}"


@rule("sdp.full-ice", title="The media server uses full ICE (not ICE-lite)", topic="ice-lite", level=SHOULD)
async def full_ice(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    desc = offers.parse(b.response.text)
    lite = desc.has("ice-lite") or any(m.has("ice-lite") for m in desc.media)
    expect(not lite, "the media server is ICE-lite: allowed only when every client can reach its "
                     "address directly (a public IP, no NAT in front)")
    return "full ICE"
