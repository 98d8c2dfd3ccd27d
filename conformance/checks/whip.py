"""WHIP server checks, RFC 9725 section by section (HTTP only; media in media.py)."""

from __future__ import annotations

from .. import offers
from ..context import Context, describe, expect
from ..runner import (
    MAY,
    MUST,
    PHASE_FINAL,
    PHASE_WHIP,
    RFC9725,
    SHOULD,
    Fail,
    Skip,
    check,
)
from . import rules

S41 = "4.1 HTTP usage"
S42 = "4.2 Ingest session setup"
S431 = "4.3.1 HTTP PATCH request usage"
S432 = "4.3.2 Trickle ICE"
S433 = "4.3.3 ICE restarts"
S441 = "4.4.1 SDP bundle"
S442 = "4.4.2 Single MediaStream"
S443 = "4.4.3 No partially successful answers"
S444 = "4.4.4 DTLS setup role"
S445 = "4.4.5 Trickle ICE and ICE restarts"
S45 = "4.5 Load balancing and redirections"
S46 = "4.6 STUN/TURN server configuration"
S471 = "4.7.1 Bearer token authentication"
S48 = "4.8 Simulcast and scalable video coding"
S49 = "4.9 Protocol extensions"
S5 = "5 Security considerations"

W = {"spec": RFC9725, "phase": PHASE_WHIP, "needs": ("whip",)}


@check("whip.post.created", title="POST an offer: 201, application/sdp answer, Location",
       section=S42, level=MUST, **W)
async def post_created(ctx: Context) -> str:
    return await rules.post_created(ctx, "whip")


@check("whip.post.answer-recvonly", title="The answer is recvonly", section=S42, level=MUST, **W)
async def answer_recvonly(ctx: Context) -> str:
    return await rules.answer_direction(ctx, "whip")


@check("whip.post.answer-candidates", title="The answer holds the server's candidates (it never trickles)",
       section=S432, level=MUST, **W)
async def answer_candidates(ctx: Context) -> str:
    return await rules.answer_candidates(ctx, "whip")


@check("whip.post.wrong-content-type", title="An offer not sent as application/sdp gets a 4xx",
       section=S42, level=MUST, **W)
async def wrong_content_type(ctx: Context) -> str:
    return await rules.wrong_content_type(ctx, "whip")


@check("whip.post.malformed-sdp", title="Malformed SDP gets a 4xx", section=S42, level=MUST, **W)
async def malformed_sdp(ctx: Context) -> str:
    return await rules.malformed_sdp(ctx, "whip")


@check("whip.post.offer-direction", title="A recvonly or inactive offer is an error",
       section=S42, level=MUST, **W)
async def offer_direction(ctx: Context) -> str:
    return await rules.forbidden_directions(ctx, "whip", ("recvonly", "inactive"))


@check("whip.post.location-form",
       title="Location is absolute or root-relative (what OBS, Eyevinn and MediaMTX resolve)",
       section=S42, level=SHOULD, **W)
async def location_form(ctx: Context) -> str:
    return await rules.location_form(ctx, "whip")


@check("whip.resource.entropy", title="Session URLs carry at least 128 random bits",
       section=S5, level=SHOULD, **W)
async def resource_entropy(ctx: Context) -> str:
    return await rules.entropy(ctx, "whip")


@check("whip.get.endpoint", title="GET on the endpoint: 2xx, no content", section=S41, level=MUST, **W)
async def get_endpoint(ctx: Context) -> str:
    return await rules.get_endpoint(ctx, "whip")


@check("whip.get.resource", title="GET on the session: 2xx, no content", section=S41, level=MUST, **W)
async def get_resource(ctx: Context) -> str:
    return await rules.get_resource(ctx, "whip")


@check("whip.options.accept-post", title="OPTIONS: 200 with Accept-Post: application/sdp",
       section=S42, level=SHOULD, **W)
async def options_accept_post(ctx: Context) -> str:
    return await rules.options_accept_post(ctx, "whip")


@check("whip.options.cors-preflight",
       title="CORS preflights (POST on the endpoint, PATCH/DELETE on the session) are answered",
       section=S42, level=MUST, **W)
async def cors_preflight(ctx: Context) -> str:
    return await rules.cors_preflight(ctx, "whip")


@check("whip.options.preflight-no-ice-servers", title="A CORS preflight gets no ice-server Links",
       section=S46, level=SHOULD, **W)
async def preflight_no_ice(ctx: Context) -> str:
    return await rules.preflight_without_ice_servers(ctx, "whip")


@check("whip.cors.expose-headers",
       title="A cross-origin POST exposes Location (and ETag, Link) to the browser",
       section=S42, level=SHOULD, **W)
async def cors_expose(ctx: Context) -> str:
    return await rules.cors_exposed_headers(ctx, "whip")


@check("whip.link.ice-server", title="ice-server Links are well formed (if any)", section=S46,
       level=MUST, **W)
async def link_ice_server(ctx: Context) -> str:
    return await rules.link_ice_servers(ctx, "whip")


@check("whip.link.extensions", title="Extension Links use urn:ietf:params:whip:ext: (if any)",
       section=S49, level=MUST, **W)
async def link_extensions(ctx: Context) -> str:
    return await rules.extension_links(ctx, "whip")


@check("whip.sdp.bundle", title="The answer BUNDLEs every m-line with rtcp-mux", section=S441,
       level=MUST, **W)
async def sdp_bundle(ctx: Context) -> str:
    return await rules.bundle_answer(ctx, "whip")


@check("whip.sdp.max-bundle-offer",
       title="An RFC-shaped max-bundle offer (bundle-only, rtcp-mux-only) is fully accepted",
       section=S441, level=MUST, **W)
async def sdp_max_bundle(ctx: Context) -> str:
    return await rules.max_bundle_offer(ctx, "whip")


@check("whip.sdp.extra-tracks",
       title="Two video tracks or two MediaStreams: 422/400, or accepted whole", section=S442,
       level=MUST, **W)
async def extra_tracks(ctx: Context) -> str:
    seen = []
    offer = await ctx.offers.publisher()
    for name, shape in (("two video tracks", offers.second_video_track),
                        ("two MediaStreams", offers.second_media_stream)):
        r, session = await ctx.post("whip", ctx.new_stream("tracks"), shape(offer))
        if session is None:
            expect(r.status_code in (400, 422), f"{name}: answered {describe(r)}; expected 422 or 400")
            seen.append(f"{name} -> {r.status_code}")
            continue
        desc = offers.parse(r.text)
        turned_down = [m.mid for m in desc.media if offers.rejected(desc, m)]
        expect(not turned_down, f"{name}: 201 with m-line(s) {turned_down} rejected: reject the whole "
                                "offer with 422/400 instead")
        seen.append(f"{name} -> 201, all accepted")
        await ctx.delete(session)
    return ", ".join(seen)


@check("whip.sdp.no-partial-answer",
       title="An m-line the server cannot take fails the whole POST (422/400), not just that m-line",
       section=S443, level=SHOULD, **W)
async def no_partial_answer(ctx: Context) -> str:
    offer = offers.unknown_audio_codec(await ctx.offers.publisher())
    r, session = await ctx.post("whip", ctx.new_stream("partial"), offer)
    if session is None:
        expect(r.status_code in (400, 422), f"answered {describe(r)}; expected 422 or 400")
        return f"{r.status_code} for audio in an unknown codec"
    desc = offers.parse(r.text)
    turned_down = [m.kind for m in desc.media if offers.rejected(desc, m)]
    expect(not turned_down, f"201 with the {turned_down} m-line rejected: a partially successful ingest")
    raise Fail("201 although the audio m-line offers only a codec no one knows")


@check("whip.sdp.setup-role", title="The answer's a=setup is active or passive", section=S444,
       level=MUST, **W)
async def setup_role(ctx: Context) -> str:
    return await rules.answer_setup_role(ctx, "whip")


@check("whip.sdp.setup-active-offer",
       title="An a=setup:active offer gets a passive answer, or 422/400", section=S444, level=SHOULD, **W)
async def setup_active_offer(ctx: Context) -> str:
    offer = offers.set_setup(await ctx.offers.publisher(), "active")
    r, session = await ctx.post("whip", ctx.new_stream("active"), offer)
    if session is None:
        expect(r.status_code in (400, 422), f"answered {describe(r)}; expected a passive answer, or 422/400")
        return f"{r.status_code}: the server only takes actpass offers"
    roles = set(rules._setup_roles(offers.parse(r.text)))
    expect(roles == {"passive"}, f"answered a=setup:active with a=setup {sorted(roles)}; expected passive")
    return "201 with a=setup:passive"


@check("whip.sdp.full-ice", title="The media server uses full ICE (not ICE-lite)", section=S445,
       level=SHOULD, **W)
async def full_ice(ctx: Context) -> str:
    return await rules.full_ice(ctx, "whip")


@check("whip.simulcast.supported", title="Simulcast offers (rid 0/1/2, as OBS 32.1) are accepted",
       section=S48, level=MAY, **W)
async def simulcast_supported(ctx: Context) -> str:
    r, session = await _simulcast(ctx)
    if session is None:
        raise Skip(f"the server does not take simulcast offers ({describe(r)})")
    if not offers.parse(r.text).media[-1].has("simulcast"):
        raise Skip("the server accepts simulcast offers but declines simulcast in its answer")
    return "simulcast accepted"


@check("whip.simulcast.answer", title="A simulcast answer follows RFC 8853 and keeps every layer",
       section=S48, level=MUST, **W)
async def simulcast_answer(ctx: Context) -> str:
    r, session = await _simulcast(ctx)
    if session is None:
        raise Skip(f"the server does not take simulcast offers ({describe(r)})")
    desc = offers.parse(r.text)
    video = next((m for m in desc.media if m.kind == "video"), None)
    expect(video is not None and not offers.rejected(desc, video), "the video m-line was rejected")
    assert video is not None
    value = video.attribute("simulcast")
    if value is None:
        return ("accepted without a=simulcast (simulcast declined, allowed by RFC 8853; "
                "OBS then sends one layer)")
    direction, _, streams = value.partition(" ")
    expect(direction == "recv", f"a=simulcast:{value}: the answer must say recv")
    layers = {alt.lstrip("~") for group in streams.split(";") for alt in group.split(",")}
    expect(layers == {"0", "1", "2"}, f"a=simulcast:{value} keeps layers {sorted(layers)}, not 0, 1 and 2 "
                                      "(OBS 32.1 checks every layer is kept)")
    recv_rids = {(v or "").split()[0] for v in video.attributes("rid") if len((v or "").split()) > 1
                 and (v or "").split()[1] == "recv"}
    expect(recv_rids >= {"0", "1", "2"}, f"a=rid ... recv lines name {sorted(recv_rids)}, not 0, 1 and 2")
    return f"a=simulcast:{value}"


async def _simulcast(ctx: Context):  # type: ignore[no-untyped-def]
    async def build():  # type: ignore[no-untyped-def]
        offer = offers.with_simulcast(await ctx.offers.publisher())
        r, session = await ctx.post("whip", ctx.new_stream("simulcast"), offer)
        if session is not None:
            await ctx.delete(session)
        return r, session
    return await ctx.memo("whip.simulcast", build)


@check("whip.delete", title="DELETE: 200, then the session is 404", section=S42, level=MUST, **W)
async def delete(ctx: Context) -> str:
    return await rules.delete(ctx, "whip")


@check("whip.delete.ignores-if-match", title="DELETE ignores If-Match", section=S431, level=MUST, **W)
async def delete_ignores_if_match(ctx: Context) -> str:
    return await rules.delete_ignores_if_match(ctx, "whip")


@check("whip.patch.if-match-required", title="PATCH without If-Match: 428", section=S431, level=MUST, **W)
async def patch_428(ctx: Context) -> str:
    return await rules.patch_if_match_required(ctx, "whip")


@check("whip.patch.stale-if-match", title="PATCH with a stale If-Match: 412", section=S431, level=MUST, **W)
async def patch_412(ctx: Context) -> str:
    return await rules.patch_stale_if_match(ctx, "whip")


@check("whip.patch.bad-request", title="PATCH with a wrong Content-Type or a malformed sdpfrag: 4xx",
       section=S431, level=MUST, **W)
async def patch_bad(ctx: Context) -> str:
    return await rules.patch_bad_request(ctx, "whip")


@check("whip.patch.trickle", title="Trickle PATCH: 204, no body, no ETag", section=S432, level=MUST, **W)
async def patch_trickle(ctx: Context) -> str:
    return await rules.patch_trickle(ctx, "whip")


@check("whip.patch.ice-restart",
       title='ICE restart (If-Match: "*"): 200 + sdpfrag + new ETag, or 422 when unsupported',
       section=S433, level=MUST, **W)
async def patch_restart(ctx: Context) -> str:
    return await rules.patch_ice_restart(ctx, "whip")


@check("whip.patch.unsupported-kind", title="The kind of PATCH a session does not support: 422",
       section=S431, level=MUST, **W)
async def patch_unsupported(ctx: Context) -> str:
    return await rules.patch_unsupported_kind(ctx, "whip")


@check("whip.patch.failed-restart-keeps-session",
       title="A refused ICE restart leaves the session and its ICE connection up", section=S433,
       level=MUST, **W)
async def failed_restart(ctx: Context) -> str:
    return await rules.failed_restart_keeps_session(ctx, "whip")


@check("whip.etag.strong", title="The 201 carries a strong ETag when ICE restarts are supported",
       section=S431, level=MUST, **W)
async def etag_strong(ctx: Context) -> str:
    return await rules.etag_strong(ctx, "whip")


@check("whip.auth.missing-token", title="No token: 401 with WWW-Authenticate: Bearer", section=S471,
       level=MUST, spec=RFC9725, phase=PHASE_WHIP, needs=("whip", "token"))
async def auth_missing(ctx: Context) -> str:
    return await rules.auth_missing(ctx, "whip")


@check("whip.auth.wrong-token", title="A wrong token: 401 or 403", section=S471, level=MUST,
       spec=RFC9725, phase=PHASE_WHIP, needs=("whip", "token"))
async def auth_wrong(ctx: Context) -> str:
    return await rules.auth_wrong(ctx, "whip")


@check("whip.redirects", title="POSTs are never redirected with 301/302 (307 only)", section=S45,
       level=MUST, spec=RFC9725, phase=PHASE_FINAL, needs=("whip",))
async def redirects(ctx: Context) -> str:
    return await rules.redirects(ctx, "whip")
