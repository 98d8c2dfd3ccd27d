"""WHIP server checks, RFC 9725 (HTTP and SDP; media in media.py).

Most of RFC 9725's rules hold for WHEP too: they are written once in
``rules/`` and registered here, under RFC 9725's sections, a stretch at a
time between the checks only WHIP has (extra tracks, partial answers, an
active DTLS offer, simulcast), so that this module lists WHIP's checks in
the order they run.
"""

from __future__ import annotations

import httpx

from .. import offers
from ..context import Context, Session, describe, expect
from ..runner import MAY, MUST, SHOULD, Fail, Skip, check
from .protocol import WHIP_PROTOCOL, register
from .rules.negotiation import setup_roles

S442 = "4.4.2 Single MediaStream"
S443 = "4.4.3 No partially successful answers"
S48 = "4.8 Simulcast and scalable video coding"

W = {"spec": WHIP_PROTOCOL.spec, "phase": WHIP_PROTOCOL.phase, "needs": ("whip",)}

register(WHIP_PROTOCOL, through="sdp.max-bundle-offer")  # POST, Location, GET/OPTIONS/CORS, Links, BUNDLE


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


register(WHIP_PROTOCOL, through="sdp.setup-role")


@check("whip.sdp.setup-active-offer",
       title="An a=setup:active offer gets a passive answer, or 422/400",
       section=WHIP_PROTOCOL.section("dtls"), level=SHOULD, **W)
async def setup_active_offer(ctx: Context) -> str:
    offer = offers.set_setup(await ctx.offers.publisher(), "active")
    r, session = await ctx.post("whip", ctx.new_stream("active"), offer)
    if session is None:
        expect(r.status_code in (400, 422), f"answered {describe(r)}; expected a passive answer, or 422/400")
        return f"{r.status_code}: the server only takes actpass offers"
    roles = set(setup_roles(offers.parse(r.text)))
    expect(roles == {"passive"}, f"answered a=setup:active with a=setup {sorted(roles)}; expected passive")
    return "201 with a=setup:passive"


register(WHIP_PROTOCOL, through="sdp.full-ice")


@check("whip.simulcast.supported", title="Simulcast offers (rid 0/1/2, as OBS 32.1) are accepted",
       section=S48, level=MAY, **W)
async def simulcast_supported(ctx: Context) -> str:
    r = await _simulcast(ctx)
    if not offers.parse(r.text).media[-1].has("simulcast"):
        raise Skip("the server accepts simulcast offers but declines simulcast in its answer")
    return "simulcast accepted"


@check("whip.simulcast.answer", title="A simulcast answer follows RFC 8853 and keeps every layer",
       section=S48, level=MUST, **W)
async def simulcast_answer(ctx: Context) -> str:
    r = await _simulcast(ctx)
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


async def _simulcast(ctx: Context) -> httpx.Response:
    """The answer to one simulcast POST per run, shared by both simulcast
    checks; Skip when the server refused the offer."""
    async def build() -> tuple[httpx.Response, Session | None]:
        offer = offers.with_simulcast(await ctx.offers.publisher())
        r, session = await ctx.post("whip", ctx.new_stream("simulcast"), offer)
        if session is not None:
            await ctx.delete(session)
        return r, session
    r, session = await ctx.memo("whip.simulcast", build)
    if session is None:
        raise Skip(f"the server does not take simulcast offers ({describe(r)})")
    return r


# DELETE, PATCH, ETag, auth; and the redirect check, which runs in the final phase
register(WHIP_PROTOCOL)
