"""WHEP server checks, draft-ietf-wish-whep-03 by section name (the draft
numbers nothing).  The rules WHEP shares with WHIP live in ``rules.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from .. import offers
from ..context import (
    MEDIA_TIMEOUT,
    SDP,
    Context,
    describe,
    expect,
    http_date,
    retry_after_seconds,
)
from ..runner import MAY, MUST, PHASE_FINAL, PHASE_WHEP, SHOULD, WHEP, Fail, Skip, check
from . import rules
from .common import fresh_session, live

S_HTTP = "HTTP Usage"
S_DISCOVER = "WHEP Endpoint URL Discoverability"
S_ACCEPT = "Playback Session Set Up / Server Accepts Client Offer"
S_COUNTER = "Playback Session Set Up / Server Sends Counter-Offer"
S_ERRORS = "Playback Session Set Up / Error Conditions"
S_DIRECTION = "Playback Session Set Up / Media Direction Attributes"
S_SESSION = "Session Management"
S_TERMINATION = "Playback Session Termination"
S_PATCH = "ICE Support / HTTP PATCH Request Usage"
S_TRICKLE = "ICE Support / Trickle ICE"
S_RESTART = "ICE Support / ICE Restarts"
S_BUNDLE = "WebRTC Constraints / SDP Bundle"
S_FULL_ICE = "WebRTC Constraints / Trickle ICE and ICE Restarts"
S_REDIRECT = "Load Balancing and Redirections"
S_STUN = "STUN/TURN Server Configuration"
S_AUTH = "Authentication and Authorization / Bearer Token Authentication"
S_EXT = "Protocol Extensions"
S_SECURITY = "Security Considerations"

E = {"spec": WHEP, "phase": PHASE_WHEP, "needs": ("whep",)}


@check("whep.post.created", title="POST an offer: 201 with an application/sdp answer and Location "
       "(or a 406 counter-offer)", section=S_ACCEPT, level=MUST, **E)
async def post_created(ctx: Context) -> str:
    return await rules.post_created(ctx, "whep")


@check("whep.post.answer-sendonly", title="The answer is sendonly", section=S_DIRECTION, level=MUST, **E)
async def answer_sendonly(ctx: Context) -> str:
    return await rules.answer_direction(ctx, "whep")


@check("whep.post.answer-candidates", title="The answer holds the server's candidates (it never trickles)",
       section=S_TRICKLE, level=MUST, **E)
async def answer_candidates(ctx: Context) -> str:
    return await rules.answer_candidates(ctx, "whep")


@check("whep.post.wrong-content-type", title="An offer not sent as application/sdp gets a 4xx",
       section=S_ERRORS, level=MUST, **E)
async def wrong_content_type(ctx: Context) -> str:
    return await rules.wrong_content_type(ctx, "whep")


@check("whep.post.malformed-sdp", title="Malformed SDP gets a 4xx", section=S_ERRORS, level=MUST, **E)
async def malformed_sdp(ctx: Context) -> str:
    return await rules.malformed_sdp(ctx, "whep")


@check("whep.post.offer-direction", title="A sendonly or inactive viewer offer is refused",
       section=S_DIRECTION, level=SHOULD, **E)
async def offer_direction(ctx: Context) -> str:
    return await rules.forbidden_directions(ctx, "whep", ("sendonly", "inactive"))


@check("whep.post.location-form",
       title="Location is absolute or root-relative (what Eyevinn's player and MediaMTX resolve)",
       section=S_ACCEPT, level=SHOULD, **E)
async def location_form(ctx: Context) -> str:
    return await rules.location_form(ctx, "whep")


@check("whep.resource.entropy", title="Session URLs carry at least 128 random bits",
       section=S_SECURITY, level=SHOULD, **E)
async def resource_entropy(ctx: Context) -> str:
    return await rules.entropy(ctx, "whep")


@check("whep.get.endpoint", title="GET on the endpoint: 2xx, no content", section=S_HTTP, level=MUST, **E)
async def get_endpoint(ctx: Context) -> str:
    return await rules.get_endpoint(ctx, "whep")


@check("whep.get.resource", title="GET on the session: 2xx, no content", section=S_HTTP, level=MUST, **E)
async def get_resource(ctx: Context) -> str:
    return await rules.get_resource(ctx, "whep")


@check("whep.head.discoverability", title="HEAD on the endpoint: 200 with Content-Type: application/sdp",
       section=S_DISCOVER, level=SHOULD, **E)
async def head(ctx: Context) -> str:
    stream = (await live(ctx)).stream
    r = await ctx.request("HEAD", ctx.whep_url(stream), kind="whep")
    expect(r.status_code == 200, f"HEAD answered {describe(r)}; expected 200")
    expect(rules.media_type(r) == SDP, f"HEAD's Content-Type is {r.headers.get('content-type')!r}; "
                                       f"players look for {SDP}")
    return f"200, Content-Type: {r.headers['content-type']}"


@check("whep.options.accept-post", title="OPTIONS: 200 with Accept-Post: application/sdp",
       section=S_TERMINATION, level=SHOULD, **E)
async def options_accept_post(ctx: Context) -> str:
    return await rules.options_accept_post(ctx, "whep")


@check("whep.options.cors-preflight",
       title="CORS preflights (POST on the endpoint, PATCH/DELETE on the session) are answered",
       section=S_TERMINATION, level=MUST, **E)
async def cors_preflight(ctx: Context) -> str:
    return await rules.cors_preflight(ctx, "whep")


@check("whep.options.preflight-no-ice-servers", title="A CORS preflight gets no ice-server Links",
       section=S_STUN + " (RFC 9725 §4.6)", level=SHOULD, **E)
async def preflight_no_ice(ctx: Context) -> str:
    return await rules.preflight_without_ice_servers(ctx, "whep")


@check("whep.cors.expose-headers",
       title="A cross-origin POST exposes Location (and ETag, Link) to the browser",
       section=S_TERMINATION, level=SHOULD, **E)
async def cors_expose(ctx: Context) -> str:
    return await rules.cors_exposed_headers(ctx, "whep")


@check("whep.link.ice-server", title="ice-server Links are well formed (if any)", section=S_STUN,
       level=MUST, **E)
async def link_ice_server(ctx: Context) -> str:
    return await rules.link_ice_servers(ctx, "whep")


@check("whep.link.extensions", title="Extension Links use urn:ietf:params:whep:ext: (if any)",
       section=S_EXT, level=MUST, **E)
async def link_extensions(ctx: Context) -> str:
    return await rules.extension_links(ctx, "whep")


@check("whep.sdp.bundle", title="The answer BUNDLEs every m-line with rtcp-mux", section=S_BUNDLE,
       level=MUST, **E)
async def sdp_bundle(ctx: Context) -> str:
    return await rules.bundle_answer(ctx, "whep")


@check("whep.sdp.max-bundle-offer",
       title="A max-bundle viewer offer (bundle-only, rtcp-mux-only) is fully accepted",
       section=S_BUNDLE, level=MUST, **E)
async def sdp_max_bundle(ctx: Context) -> str:
    return await rules.max_bundle_offer(ctx, "whep")


@check("whep.sdp.setup-role", title="The answer's a=setup is active or passive (RFC 8842)",
       section=S_ACCEPT, level=MUST, **E)
async def setup_role(ctx: Context) -> str:
    return await rules.answer_setup_role(ctx, "whep")


@check("whep.sdp.full-ice", title="The media server uses full ICE (not ICE-lite)", section=S_FULL_ICE,
       level=SHOULD, **E)
async def full_ice(ctx: Context) -> str:
    return await rules.full_ice(ctx, "whep")


@check("whep.delete", title="DELETE: 200, then the session is 404", section=S_TERMINATION,
       level=MUST, **E)
async def delete(ctx: Context) -> str:
    return await rules.delete(ctx, "whep")


@check("whep.delete.ignores-if-match", title="DELETE ignores If-Match", section=S_PATCH, level=MUST, **E)
async def delete_ignores_if_match(ctx: Context) -> str:
    return await rules.delete_ignores_if_match(ctx, "whep")


@check("whep.patch.if-match-required", title="PATCH without If-Match: 428", section=S_PATCH, level=MUST, **E)
async def patch_428(ctx: Context) -> str:
    return await rules.patch_if_match_required(ctx, "whep")


@check("whep.patch.stale-if-match", title="PATCH with a stale If-Match: 412", section=S_PATCH,
       level=MUST, **E)
async def patch_412(ctx: Context) -> str:
    return await rules.patch_stale_if_match(ctx, "whep")


@check("whep.patch.bad-request", title="PATCH with a wrong Content-Type or a malformed sdpfrag: 4xx",
       section=S_PATCH, level=MUST, **E)
async def patch_bad(ctx: Context) -> str:
    return await rules.patch_bad_request(ctx, "whep")


@check("whep.patch.trickle", title="Trickle PATCH: 204, no body, no ETag", section=S_TRICKLE,
       level=MUST, **E)
async def patch_trickle(ctx: Context) -> str:
    return await rules.patch_trickle(ctx, "whep")


@check("whep.patch.ice-restart",
       title='ICE restart (If-Match: "*"): 200 + sdpfrag + new ETag, or 422 when unsupported',
       section=S_RESTART, level=MUST, **E)
async def patch_restart(ctx: Context) -> str:
    return await rules.patch_ice_restart(ctx, "whep")


@check("whep.patch.unsupported-kind", title="The kind of PATCH a session does not support: 422",
       section=S_PATCH, level=MUST, **E)
async def patch_unsupported(ctx: Context) -> str:
    return await rules.patch_unsupported_kind(ctx, "whep")


@check("whep.patch.failed-restart-keeps-session",
       title="A refused ICE restart leaves the session playing", section=S_RESTART, level=MUST, **E)
async def failed_restart(ctx: Context) -> str:
    return await rules.failed_restart_keeps_session(ctx, "whep")


@check("whep.etag.strong", title="The 201 carries a strong ETag when ICE restarts are supported",
       section=S_PATCH, level=MUST, **E)
async def etag_strong(ctx: Context) -> str:
    return await rules.etag_strong(ctx, "whep")


@check("whep.auth.missing-token", title="No token: 401 with WWW-Authenticate: Bearer", section=S_AUTH,
       level=MUST, spec=WHEP, phase=PHASE_WHEP, needs=("whep", "viewer_token"))
async def auth_missing(ctx: Context) -> str:
    return await rules.auth_missing(ctx, "whep")


@check("whep.auth.wrong-token", title="A wrong token: 401 or 403", section=S_AUTH, level=MUST,
       spec=WHEP, phase=PHASE_WHEP, needs=("whep", "viewer_token"))
async def auth_wrong(ctx: Context) -> str:
    return await rules.auth_wrong(ctx, "whep")


# -- counter-offer mode ---------------------------------------------------------------


@dataclass
class CounterOffer:
    response: httpx.Response
    bad_patch: httpx.Response | None = None
    patch: httpx.Response | None = None
    frames: str | None = None  # what happened to media, None when frames decoded
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


async def counter_offer(ctx: Context) -> CounterOffer:
    """An empty POST (the player asks for the server's offer), then the
    answer PATCHed as application/sdp, then media."""
    async def build() -> CounterOffer:
        stream = (await live(ctx)).stream
        r, session = await ctx.post("whep", stream, b"", content_type=SDP)
        result = CounterOffer(r)
        if r.status_code != 406 or session is None:
            if session is not None:
                await ctx.delete(session)
            return result
        try:
            offers.parse(r.text)
            pc, counter, answer = await offers.answerer(r.text)
        except Exception as exc:
            result.frames = f"aiortc cannot answer the counter-offer: {exc}"
            return result
        ctx.scope.pcs.append(pc)
        ctx.scope.counters.append(counter)
        result.bad_patch = await ctx.request("PATCH", session.location, kind="whep",
                                             content="v=0\r\nthis is not SDP\r\n", content_type=SDP)
        result.patch = await ctx.request("PATCH", session.location, kind="whep", content=answer,
                                         content_type=SDP)
        if result.patch.is_success:
            try:
                await offers.wait_frames(counter, 1, MEDIA_TIMEOUT)
            except Fail as exc:
                result.frames = str(exc)
        await ctx.delete(session)
        return result

    return await ctx.memo("whep.counter-offer", build)


@check("whep.counter-offer.supported", title="Counter-offer mode: an empty POST gets 406 with the "
       "server's offer", section=S_COUNTER, level=MAY, **E)
async def counter_offer_supported(ctx: Context) -> str:
    r = (await counter_offer(ctx)).response
    if r.status_code == 406 and r.content:
        return "406 with the server's offer"
    if r.status_code == 201 and r.content:
        raise Skip("an empty POST gets 201 with an offer: the pre-draft-03 server-offer convention")
    raise Skip(f"no counter-offer mode: an empty POST answered {describe(r)}")


@check("whep.counter-offer.exchange", title="Counter-offer: application/sdp offer + Location, the "
       "answer PATCHed as application/sdp gets 204, media flows", section=S_COUNTER, level=MUST, **E)
async def counter_offer_exchange(ctx: Context) -> str:
    co = await counter_offer(ctx)
    r = co.response
    if r.status_code != 406:
        raise Skip(f"the server does not use counter-offers (an empty POST answered {r.status_code})")
    expect(rules.media_type(r) == SDP, f"406 Content-Type {r.headers.get('content-type')!r}, not {SDP}")
    expect(r.headers.get("location"), "the 406 has no Location for the session")
    desc = offers.parse(r.text, "the counter-offer")
    dirs = [m.direction for m in offers.accepted(desc)]
    expect(not any(d in ("recvonly", "inactive") for d in dirs), f"counter-offer directions {dirs}")
    until = _param(r.headers.get("content-type", ""), "valid-until")
    if until is not None:
        when = http_date(until)
        expect(when is not None, f"valid-until={until!r} is not an HTTP-date")
        expect(when > co.received_at, f"valid-until={until!r} is already past")
    if co.patch is None or co.bad_patch is None:
        raise Fail(co.frames or "the counter-offer could not be answered")
    expect(rules.is_4xx(co.bad_patch),
           f"a malformed SDP answer was PATCHed and got {describe(co.bad_patch)}; expected a 4xx")
    expect(co.patch.status_code == 204, f"PATCHing the answer got {describe(co.patch)}; expected 204")
    expect(co.frames is None, f"after the exchange: {co.frames}")
    return "406 offer, PATCH answer 204, frames decoded" + (f", valid-until {until}" if until else "")


def _param(content_type: str, name: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


# -- no publisher ---------------------------------------------------------------------------


@check("whep.no-publisher.409", title="No live publisher: 409 with Retry-After (if the server needs one)",
       section=S_SESSION, level=MUST, spec=WHEP, phase=PHASE_WHEP, needs=("whep", "whip"))
async def no_publisher(ctx: Context) -> str:
    """A stream that just had a publisher and lost it: the endpoint surely
    exists, so anything but 409 (or 201, for a server that lets viewers
    wait) is a wrong answer, not an unknown stream."""
    await live(ctx)  # first make sure a published stream can be watched at all
    if ctx.whep_templated:
        stream = ctx.new_stream("idle")
    elif ctx.whip_templated:
        raise Skip("the fixed --whep URL plays a stream whose publisher this run cannot remove")
    else:
        for key in ("live", "whep.viewer", "whep.patch"):
            await ctx.forget(key)  # the fixed URL's only stream must lose its publisher
        stream = "fixed"
    published = await fresh_session(ctx, "whip", "idle", stream)
    ended = await ctx.delete(published)
    expect(ended.is_success, f"could not end the publisher: DELETE answered {describe(ended)}")
    r, session = await ctx.post("whep", stream, await ctx.offers.viewer())
    if session is not None:
        raise Skip(f"the server answers {r.status_code} without a live publisher: it does not require one")
    expect(r.status_code == 409, f"a viewer of a stream whose publisher just left got {describe(r)}; "
                                 "expected 409")
    value = r.headers.get("retry-after")
    expect(value is not None, "the 409 has no Retry-After")
    expect(retry_after_seconds(value) is not None,
           f"Retry-After {value!r} is neither seconds nor an HTTP-date")
    return f"409, Retry-After: {value}"


@check("whep.redirects", title="POSTs are never redirected with 301/302 (307 only)", section=S_REDIRECT,
       level=MUST, spec=WHEP, phase=PHASE_FINAL, needs=("whep",))
async def redirects(ctx: Context) -> str:
    return await rules.redirects(ctx, "whep")

