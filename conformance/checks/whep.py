"""WHEP server checks, draft-ietf-wish-whep-03 by section name (the draft
numbers nothing).

WHEP copies WHIP's resource model, so most of its rules are WHIP's: they
are written once in ``rules/`` and registered here under the draft's
sections, around the checks only WHEP has (HEAD discoverability, the 406
counter-offer, the 409 of a stream without a publisher), in run order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from gateway.sdp.formats import foreign_formats

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
from ..runner import MAY, MUST, PHASE_WHEP, SHOULD, WHEP, Fail, Skip, check
from .common import connected_publisher, fresh_session, is_4xx, live, media_type, wait_viewable
from .protocol import WHEP_PROTOCOL, register

S_DISCOVER = "WHEP Endpoint URL Discoverability"
S_COUNTER = "Playback Session Set Up / Server Sends Counter-Offer"
S_SESSION = "Session Management"
S_ACCEPT = "Playback Session Set Up / Server Accepts Client Offer"

E = {"spec": WHEP, "phase": PHASE_WHEP, "needs": ("whep",)}

register(WHEP_PROTOCOL, through="get.resource")  # POST, Location, GET


@check("whep.head.discoverability", title="HEAD on the endpoint: 200 with Content-Type: application/sdp",
       section=S_DISCOVER, level=SHOULD, **E)
async def head(ctx: Context) -> str:
    stream = (await live(ctx)).stream
    r = await ctx.request("HEAD", ctx.whep_url(stream), kind="whep")
    expect(r.status_code == 200, f"HEAD answered {describe(r)}; expected 200")
    expect(media_type(r) == SDP, f"HEAD's Content-Type is {r.headers.get('content-type')!r}; "
                                 f"players look for {SDP}")
    return f"200, Content-Type: {r.headers['content-type']}"


register(WHEP_PROTOCOL, through="auth.wrong-token")  # OPTIONS/CORS, Links, SDP, DELETE, PATCH, auth


# -- formats in the answer ----------------------------------------------------------------


@check("whep.answer.offered-formats", title="Each payload type of the answer carries the format the "
       "viewer offered there (H.264: its profile)", section=S_ACCEPT, level=MUST,
       spec=WHEP, phase=PHASE_WHEP, needs=("whep", "whip"))
async def offered_formats(ctx: Context) -> str:
    """RFC 3264 section 6.1 (an answer uses the offer's payload types for
    the formats it offered them for) and RFC 6184 section 8.2.2 (H.264's
    profile is part of the format).  libwebrtc matches H.264 by profile, so
    Safari, offered High 640c1f and constrained baseline 42e01f, can lose
    the codec when an answer puts another profile on its PT.  An aiortc
    H.264 publisher (42001f listed before 42e01f) on a stream of its own,
    then a Safari-shaped viewer offer."""
    if not (ctx.whip_templated and ctx.whep_templated):
        raise Skip("needs templated --whip and --whep URLs to publish an H.264 stream of its own")
    stream = ctx.new_stream("h264")
    try:
        publisher, _ = await connected_publisher(ctx, stream, video_codec="video/H264")
    except Fail as exc:
        raise Skip(f"the server does not take an H.264 publisher: {exc}") from None
    assert publisher.local_sdp is not None
    published = foreign_formats(offers.parse(publisher.remote_sdp, "the WHIP answer"),
                                offers.parse(publisher.local_sdp))
    if await wait_viewable(ctx, stream) is None:
        raise Fail("the H.264 stream never became watchable (every viewer POST got 409)")
    offer = offers.safari_shaped(await ctx.offers.viewer())
    r, viewer = await ctx.post("whep", stream, offer)
    if r.status_code == 406:
        raise Skip("the server answers with a counter-offer (406): the viewer writes the answer")
    expect(viewer is not None and r.status_code == 201,
           f"a Safari-shaped viewer offer (H.264 640c1f and 42e01f, VP8) answered {describe(r)}")
    answer = offers.parse(r.text, "the WHEP answer")
    wrong = foreign_formats(answer, offers.parse(offer))
    expect(not wrong, "the answer to a Safari-shaped offer names formats it did not offer there: "
                      + "; ".join(wrong))
    expect(not published, "the WHIP answer to the H.264 publisher names formats it did not offer "
                          "there: " + "; ".join(published))
    video = next((m for m in offers.accepted(answer) if m.kind == "video"), None)
    got = f"{video.codecs()[0].name} on PT {video.codecs()[0].pt}" if video and video.codecs() else "no video"
    return f"every payload type as offered ({got}; the publisher's answer too)"


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
    expect(media_type(r) == SDP, f"406 Content-Type {r.headers.get('content-type')!r}, not {SDP}")
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
    expect(is_4xx(co.bad_patch),
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


register(WHEP_PROTOCOL)  # the redirect check, which runs in the final phase
