"""Building blocks several checks share: publishers, viewers, the basic POST
of each protocol, and the PATCH probe.

The expensive ones are memoised in the context (``ctx.memo``), so a run
starts one live publisher, one media viewer and one PATCH probe per
protocol, however many checks look at them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from aiortc import RTCPeerConnection

from gateway.clients.whep import FrameCounter

from .. import offers
from ..context import (
    LIVE_TIMEOUT,
    MEDIA_TIMEOUT,
    SDP,
    SDPFRAG,
    Context,
    Kind,
    Session,
    describe,
)
from ..runner import Fail, Skip

Transform = Callable[[str], str]


# -- publishers -------------------------------------------------------------------


async def start_publisher(ctx: Context, stream: str, *, video_codec: str = "video/VP8",
                          transform: Transform | None = None,
                          auth: str | None = "default") -> tuple[httpx.Response, Session | None,
                                                                  RTCPeerConnection]:
    """POST an aiortc publisher's offer (optionally reshaped) and, on 201,
    apply the answer so ICE starts.  The peer connection belongs to the
    current scope either way."""
    pc = await offers.publisher(video_codec)
    ctx.scope.pcs.append(pc)
    offer = pc.localDescription.sdp
    body = transform(offer) if transform else offer
    response, session = await ctx.post("whip", stream, body, local_sdp=body, pc=pc, auth=auth)
    if session is not None:
        await offers.apply_answer(pc, session.remote_sdp)
    return response, session, pc


async def connected_publisher(ctx: Context, stream: str, **kwargs: object) -> tuple[Session, float]:
    """A publisher whose ICE is connected; returns it and the seconds that took."""
    response, session, pc = await start_publisher(ctx, stream, **kwargs)  # type: ignore[arg-type]
    if session is None:
        raise Fail(f"publishing failed: POST answered {describe(response)}")
    took = await offers.wait_connected(pc, MEDIA_TIMEOUT)
    return session, took


@dataclass
class Live:
    """The stream the WHEP checks watch, with the publisher the suite runs on it."""

    stream: str
    session: Session | None  # None: someone else publishes it (no --whip)
    connect_time: float | None = None
    ready_after: float | None = None  # seconds until a viewer POST stopped getting 409


async def live(ctx: Context) -> Live:
    """A stream with a publisher sending media (one per run, rebuilt if a
    later WHIP check on a fixed URL had to end it)."""
    async def build() -> Live:
        if not ctx.config.whip:
            if ctx.whep_templated and not ctx.config.stream:
                raise Skip("no --whip to publish with and no --stream naming a live stream to watch")
            return Live(ctx.config.stream or "", None)
        stream = ctx.config.stream or ctx.new_stream("live")
        session, took = await connected_publisher(ctx, stream)
        state = Live(stream, session, connect_time=took)
        if ctx.config.whep:
            state.ready_after = await wait_viewable(ctx, stream)
        return state

    return await ctx.memo("live", build)


async def wait_viewable(ctx: Context, stream: str) -> float | None:
    """A server may count a stream live only once media arrives: POST a
    viewer offer until it stops getting 409 (bounded), then DELETE it."""
    offer = await ctx.offers.viewer()
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        response, session = await ctx.post("whep", stream, offer)
        if session is not None:
            await ctx.delete(session)
        if response.status_code != 409:
            return loop.time() - start
        if loop.time() - start > LIVE_TIMEOUT:
            return None
        await asyncio.sleep(0.25)


# -- viewers ----------------------------------------------------------------------


@dataclass
class Viewer:
    response: httpx.Response  # the POST's
    session: Session | None
    pc: RTCPeerConnection
    counter: FrameCounter
    offer: str
    mode: str = "offer"  # "offer" (201) or "counter-offer" (406, answered by PATCH)
    patch: httpx.Response | None = None  # the PATCH carrying our answer, in counter-offer mode


async def start_viewer(ctx: Context, stream: str, *, transform: Transform | None = None,
                       video_codec: str | None = None, datachannel: bool = False,
                       auth: str | None = "default") -> Viewer:
    """POST an aiortc viewer's offer; apply a 201's answer, or answer a 406
    counter-offer by PATCH, as a draft-03 player does."""
    pc, counter = await offers.viewer(video_codec=video_codec, datachannel=datachannel)
    ctx.scope.pcs.append(pc)
    ctx.scope.counters.append(counter)
    offer = pc.localDescription.sdp
    body = transform(offer) if transform else offer
    response, session = await ctx.post("whep", stream, body, local_sdp=body, auth=auth)
    viewer = Viewer(response, session, pc, counter, body)
    if session is None:
        return viewer
    if response.status_code == 201:
        await offers.apply_answer(pc, session.remote_sdp)
        return viewer
    # 406: aiortc cannot roll its offer back; answer on a fresh connection
    await pc.close()
    pc, counter, answer = await offers.answerer(session.remote_sdp)
    ctx.scope.pcs.append(pc)
    ctx.scope.counters.append(counter)
    session.local_sdp = answer
    viewer.pc, viewer.counter, viewer.mode = pc, counter, "counter-offer"
    viewer.patch = await ctx.request("PATCH", session.location, kind="whep", content=answer,
                                     content_type=SDP)
    return viewer


async def connected_viewer(ctx: Context, stream: str, **kwargs: object) -> Viewer:
    viewer = await start_viewer(ctx, stream, **kwargs)  # type: ignore[arg-type]
    if viewer.session is None:
        raise Fail(f"the viewer POST answered {describe(viewer.response)}")
    if viewer.patch is not None and not viewer.patch.is_success:
        raise Fail(f"PATCHing the answer to the counter-offer got {describe(viewer.patch)}")
    return viewer


async def media_viewer(ctx: Context) -> Viewer:
    """One viewer of the live stream with media flowing, shared by the media
    and extension checks."""
    async def build() -> Viewer:
        state = await live(ctx)
        return await connected_viewer(ctx, state.stream)

    return await ctx.memo("whep.viewer", build)


# -- the basic POST ---------------------------------------------------------------


@dataclass
class Basic:
    """The suite's plainest POST of each protocol, kept for the checks that
    only read the response; its session is DELETEd at once."""

    kind: Kind
    stream: str
    response: httpx.Response
    session: Session | None
    offer: str
    delete: httpx.Response | None = None


async def stream_for(ctx: Context, kind: Kind, tag: str) -> str:
    """Where a check POSTs: WHIP, a fresh stream; WHEP, the live one (so a
    4xx is about what the check sent, not about a missing publisher)."""
    return ctx.new_stream(tag) if kind == "whip" else (await live(ctx)).stream


async def offer_for(ctx: Context, kind: Kind) -> str:
    """The plain (cached, never connected) offer of a publisher or a viewer."""
    return await ctx.offers.publisher() if kind == "whip" else await ctx.offers.viewer()


def media_type(response: httpx.Response) -> str:
    """The Content-Type without parameters, lower-cased."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def is_4xx(response: httpx.Response) -> bool:
    return 400 <= response.status_code < 500


async def basic(ctx: Context, kind: Kind) -> Basic:
    async def build() -> Basic:
        stream = await stream_for(ctx, kind, "basic")
        offer = await offer_for(ctx, kind)
        response, session = await ctx.post(kind, stream, offer, local_sdp=offer)
        result = Basic(kind, stream, response, session, offer)
        if session is not None:
            result.delete = await ctx.delete(session)
        return result

    return await ctx.memo(f"{kind}.basic", build)


async def created(ctx: Context, kind: Kind) -> Basic:
    """The basic POST, or Skip when it did not create a session (the check
    that owns that POST reports why)."""
    b = await basic(ctx, kind)
    if b.session is None:
        raise Skip(f"needs a {kind.upper()} session, but the POST answered {describe(b.response)}")
    return b


async def fresh_session(ctx: Context, kind: Kind, tag: str, stream: str | None = None) -> Session:
    """A session of its own for a check that changes or deletes it (never
    connected), on ``stream`` or where ``stream_for`` POSTs."""
    stream = stream or await stream_for(ctx, kind, tag)
    offer = await offer_for(ctx, kind)
    response, session = await ctx.post(kind, stream, offer, local_sdp=offer)
    if session is None:
        raise Skip(f"could not create a {kind.upper()} session: POST answered {describe(response)}")
    return session


# -- the PATCH probe ----------------------------------------------------------------


@dataclass
class PatchProbe:
    """Every PATCH the checks of RFC 9725 section 4.3 (and WHEP's copy of it)
    look at, made in order on one connected session."""

    kind: Kind
    session: Session
    etag: str | None
    no_if_match: httpx.Response
    stale: httpx.Response
    bad_type: httpx.Response
    malformed: httpx.Response
    trickle: httpx.Response
    star: list[httpx.Response] = field(default_factory=list)
    quoted_star: httpx.Response | None = None  # a trickle with If-Match: "*" (RFC 9725's own spelling)
    restart: httpx.Response | None = None
    restart_ufrag: str | None = None
    old_etag_after_restart: httpx.Response | None = None
    alive_after_restart: httpx.Response | None = None
    media_after_restart: str | None = None  # what happened to media after a refused restart

    @property
    def trickle_supported(self) -> bool:
        return self.trickle.status_code not in (405, 422, 501)

    @property
    def restart_supported(self) -> bool:
        return self.restart is not None and self.restart.status_code == 200


async def patch_probe(ctx: Context, kind: Kind) -> PatchProbe:
    async def build() -> PatchProbe:
        counter: FrameCounter | None = None
        if kind == "whip":
            session, _ = await connected_publisher(ctx, ctx.new_stream("patch"))
            pc = session.pc
        else:
            viewer = await connected_viewer(ctx, (await live(ctx)).stream)
            assert viewer.session is not None
            session, pc, counter = viewer.session, viewer.pc, viewer.counter
            await offers.wait_frames(counter, 1, MEDIA_TIMEOUT)
        assert session.local_sdp is not None and pc is not None
        local = session.local_sdp
        etag = session.etag
        frag = offers.fragment(local)

        async def patch(body: str, if_match: str | None, content_type: str = SDPFRAG) -> httpx.Response:
            headers = {"If-Match": if_match} if if_match else None
            return await ctx.request("PATCH", session.location, kind=kind, content=body,
                                     content_type=content_type, headers=headers)

        probe = PatchProbe(
            kind, session, etag,
            no_if_match=await patch(frag, None),
            stale=await patch(frag, f'"conformance-stale-{secrets.token_hex(4)}"'),
            bad_type=await patch(frag, etag or "*", "text/plain"),
            malformed=await patch("this is not an sdp fragment\r\n", etag or "*"),
            trickle=await patch(frag, etag or "*"),
        )
        for cand in offers.candidates_of(local)[:2]:  # MediaMTX: one PATCH per candidate
            probe.star.append(await patch(offers.fragment(local, candidates=[cand], end=False), "*"))
        probe.quoted_star = await patch(offers.fragment(local, end=False), '"*"')
        restart, probe.restart_ufrag, restart_pwd = offers.restart_fragment(local)
        frames_before = counter.video_frames if counter else 0
        probe.restart = await patch(restart, "*")
        if probe.restart.status_code == 200:
            if etag:  # the old ETag names a past ICE session now
                again = offers.fragment(local, ufrag=probe.restart_ufrag, pwd=restart_pwd)
                probe.old_etag_after_restart = await patch(again, etag)
        else:
            probe.alive_after_restart = await ctx.request("GET", session.location, kind=kind)
            probe.media_after_restart = await _media_continues(pc, counter, frames_before)
        await ctx.delete(session)
        return probe

    return await ctx.memo(f"{kind}.patch", build)


async def _media_continues(pc: RTCPeerConnection, counter: FrameCounter | None,
                           frames_before: int) -> str | None:
    """After a refused ICE restart the old ICE session must go on (section
    4.3.3): the publisher stays connected; the viewer keeps decoding.
    Returns what went wrong, or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while loop.time() < deadline:
        if pc.connectionState != "connected":
            return f"the peer connection went {pc.connectionState}"
        if counter is not None and counter.video_frames > frames_before + 10:
            return None
        await asyncio.sleep(0.1)
    if counter is not None:
        return (f"video stopped: {counter.video_frames - frames_before} frames decoded "
                "in the 3 s after the refused restart")
    return None
