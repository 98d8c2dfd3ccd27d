"""Client-habit profiles: what the clients people actually run send
(wish-facts.md, "What real clients do"), each played against the server.

These are not new requirements.  Each profile is a conformant (or common)
client behaviour the spec allows, and the check asks whether the server
copes: OBS's offer with no candidates and no PATCH, browsers' own payload
types, MediaMTX's per-candidate PATCH with ``If-Match: "*"``, Eyevinn's
raw token.  The level says how much it matters: MUST where the client is
plainly conformant (OBS, browsers), lower where it bends the rules.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from .. import offers
from ..context import LIVE_TIMEOUT, MEDIA_TIMEOUT, Context, Session, describe, expect
from ..runner import HABIT, MAY, MUST, PHASE_PROFILES, SHOULD, Fail, Skip, check
from .common import Viewer, live, patch_probe, start_publisher, start_viewer

OBS_TIMEOUT = 8.0  # OBS gives up on a WHIP connection after 8 s


# -- OBS -----------------------------------------------------------------------------


@dataclass
class ObsRun:
    stream: str
    response: httpx.Response
    session: Session | None
    offer: str
    connect_error: str | None = None
    connect_time: float | None = None


async def obs(ctx: Context) -> ObsRun:
    async def build() -> ObsRun:
        stream = ctx.new_stream("obs") if ctx.whip_templated else (ctx.config.stream or "fixed")
        response, session, pc = await start_publisher(ctx, stream, video_codec="video/H264",
                                                      transform=offers.obs_shaped)
        run = ObsRun(stream, response, session, offers.obs_shaped(pc.localDescription.sdp))
        if session is not None:
            try:
                run.connect_time = await offers.wait_connected(pc, OBS_TIMEOUT)
            except Fail as exc:
                run.connect_error = str(exc)
        return run

    return await ctx.memo("obs", build)


@check("profile.obs.publish", title="OBS: session-level ICE, no candidates, one H.264 codec, no PATCH: "
       "201 and ICE connects within OBS's 8 s", spec=HABIT, section="OBS 30-32 (RFC 9725 §4.3.2)",
       level=MUST, phase=PHASE_PROFILES, needs=("whip",))
async def obs_publish(ctx: Context) -> str:
    run = await obs(ctx)
    r = run.response
    expect(r.status_code == 201, f"OBS's offer was answered {describe(r)}; OBS needs exactly 201")
    expect(r.headers.get("location"), "no Location: OBS cannot stop the session")
    desc = offers.parse(r.text)
    video = next((m for m in desc.media if m.kind == "video"), None)
    expect(video is not None and not offers.rejected(desc, video), "the video m-line was rejected")
    assert video is not None
    codecs = [(c.pt, c.name.upper()) for c in video.codecs() if c.key not in ("rtx", "red", "ulpfec")]
    expect(codecs == [(96, "H264")], f"the answer's video codecs are {codecs}; OBS offered only 96 H264")
    expect(run.connect_error is None, f"no candidates were offered, so the server must learn OBS's "
                                      f"address from its checks: {run.connect_error}")
    return f"201, ICE connected in {run.connect_time:.2f} s without a candidate or a PATCH"


async def viewer_when_live(ctx: Context, stream: str, **kwargs: object) -> Viewer:
    """A viewer POST, repeated while the server answers 409 (the stream is not
    live yet: a publisher that just connected may not have sent media)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIVE_TIMEOUT
    while True:
        viewer = await start_viewer(ctx, stream, **kwargs)  # type: ignore[arg-type]
        if viewer.response.status_code != 409 or loop.time() > deadline:
            return viewer
        await viewer.pc.close()
        await asyncio.sleep(0.25)


@check("profile.obs.viewer-decodes", title="OBS: a WHEP viewer of the OBS-shaped stream decodes H.264",
       spec=HABIT, section="OBS 30-32", level=SHOULD, phase=PHASE_PROFILES, needs=("whip", "whep"))
async def obs_viewer(ctx: Context) -> str:
    if ctx.whip_templated and not ctx.whep_templated:
        raise Skip("the fixed --whep URL does not play the stream the OBS check publishes")
    run = await obs(ctx)
    if run.session is None or run.connect_error:
        raise Skip("the OBS-shaped publisher did not connect (see profile.obs.publish)")
    viewer = await viewer_when_live(ctx, run.stream, video_codec="video/H264")
    expect(viewer.session is not None, f"the H.264 viewer POST answered {describe(viewer.response)}")
    took = await offers.wait_frames(viewer.counter, 5, MEDIA_TIMEOUT)
    return f"{viewer.counter.video_frames} H.264 frames, the first after {took:.2f} s"


# -- browsers' payload types ---------------------------------------------------------------


@dataclass
class BrowserRun:
    viewer: Viewer
    pts: dict[str, int]
    frames_error: str | None = None


async def browser(ctx: Context, name: str) -> BrowserRun:
    async def build() -> BrowserRun:
        pts = offers.BROWSER_PAYLOAD_TYPES[name]
        stream = (await live(ctx)).stream
        viewer = await start_viewer(ctx, stream, transform=lambda o: offers.with_payload_types(o, pts))
        run = BrowserRun(viewer, pts)
        if viewer.session is not None:
            try:
                await offers.wait_frames(viewer.counter, 5, MEDIA_TIMEOUT)
            except Fail as exc:
                run.frames_error = str(exc)
        return run

    return await ctx.memo(f"browser.{name}", build)


def _browser_checks(name: str, label: str) -> None:
    pts = offers.BROWSER_PAYLOAD_TYPES[name]
    pt_text = f"Opus {pts['audio']}, VP8 {pts['video']}"

    @check(f"profile.{name}.whep-viewer",
           title=f"{label}'s payload types ({pt_text}): answered, frames decode",
           spec=HABIT, section=f"{label} WHEP player (WHEP §Server Accepts Client Offer)", level=MUST,
           phase=PHASE_PROFILES, needs=("whep",))
    async def viewer_check(ctx: Context) -> str:
        run = await browser(ctx, name)
        r = run.viewer.response
        if r.status_code == 406:
            raise Skip("the server answered with a counter-offer: the viewer's payload types do not apply")
        expect(r.status_code == 201, f"{label}'s offer was answered {describe(r)}")
        expect(run.frames_error is None, run.frames_error or "")
        return f"201, {run.viewer.counter.video_frames} frames decoded"

    @check(f"profile.{name}.payload-types", title=f"{label}: the answer reuses the viewer's payload types",
           spec=HABIT, section=f"{label} WHEP player (RFC 3264 §6.1)", level=SHOULD,
           phase=PHASE_PROFILES, needs=("whep",))
    async def pt_check(ctx: Context) -> str:
        run = await browser(ctx, name)
        if run.viewer.response.status_code != 201:
            raise Skip(f"no answer to look at ({run.viewer.response.status_code})")
        desc = offers.parse(run.viewer.response.text)
        got = {m.kind: [c.pt for c in m.codecs()] for m in offers.accepted(desc)}
        wrong = {k: v for k, v in got.items() if k in run.pts and v != [run.pts[k]]}
        expect(not wrong, f"answer payload types {got}; the viewer offered {run.pts}")
        return f"answer payload types {got}"


_browser_checks("chrome", "Chrome")
_browser_checks("firefox", "Firefox")
_browser_checks("safari", "Safari")


# -- MediaMTX's reader page ----------------------------------------------------------------


def _star_check(kind: str) -> None:
    where = "RFC 9725 §4.3.2" if kind == "whip" else "WHEP §Trickle ICE"

    @check(f"profile.mediamtx.{kind}-trickle-star",
           title='MediaMTX: one trickle PATCH per candidate with If-Match: "*": 204 each',
           spec=HABIT, section=f"MediaMTX reader page ({where})",
           level=SHOULD, phase=PHASE_PROFILES, needs=(kind,))
    async def star(ctx: Context) -> str:
        probe = await patch_probe(ctx, kind)  # type: ignore[arg-type]
        if not probe.trickle_supported:
            raise Skip("the server does not support trickle ICE")
        if not probe.star:
            raise Skip("our offer had no candidate to trickle")
        statuses = [r.status_code for r in probe.star]
        bad = [describe(r) for r in probe.star if r.status_code != 204]
        expect(not bad, f'trickles with If-Match: "*" and the current ufrag answered {bad}; expected 204 '
                        "(\"*\" matches the current ICE session; same ufrag means no restart)")
        return f"{len(statuses)} PATCHes, all 204"


_star_check("whip")
_star_check("whep")


@check("profile.mediamtx.datachannel", title="MediaMTX: a viewer offer with a data-channel m-line is "
       "answered and plays", spec=HABIT, section="MediaMTX reader page (WHEP §Server Accepts Client Offer)",
       level=SHOULD, phase=PHASE_PROFILES, needs=("whep",))
async def datachannel(ctx: Context) -> str:
    stream = (await live(ctx)).stream
    viewer = await start_viewer(ctx, stream, datachannel=True)
    r = viewer.response
    expect(viewer.session is not None, f"an offer with an application m-line was answered {describe(r)}")
    if r.status_code == 201:
        desc = offers.parse(r.text)
        av = [m.direction for m in offers.accepted(desc) if m.kind in ("audio", "video")]
        expect(av and all(d == "sendonly" for d in av), f"audio/video answered {av}")
        app = [m for m in desc.media if m.kind == "application"]
        state = "rejected" if app and offers.rejected(desc, app[0]) else "accepted"
    else:
        state = "counter-offer"
    took = await offers.wait_frames(viewer.counter, 5, MEDIA_TIMEOUT)
    return f"{r.status_code}, data channel m-line {state}, frames after {took:.2f} s"


# -- Eyevinn --------------------------------------------------------------------------------


@check("profile.eyevinn.raw-token-whep", title='Eyevinn webrtc-player: "Authorization: <token>" '
       'without "Bearer " is accepted', spec=HABIT, section="Eyevinn webrtc-player (WHEP §Bearer Token "
       "Authentication)", level=MAY, phase=PHASE_PROFILES, needs=("whep", "viewer_token"))
async def raw_token_whep(ctx: Context) -> str:
    stream = (await live(ctx)).stream
    r, session = await ctx.post("whep", stream, await ctx.offers.viewer(), auth=ctx.config.viewer_token)
    expect(session is not None, f"a raw token was answered {describe(r)}: Eyevinn's player cannot watch")
    return f"{r.status_code} with a raw token"


@check("profile.eyevinn.raw-token-whip", title='Raw "Authorization: <token>" (no "Bearer ") is accepted '
       "for publishing", spec=HABIT, section="Eyevinn-style clients (RFC 9725 §4.7.1)", level=MAY,
       phase=PHASE_PROFILES, needs=("whip", "token"))
async def raw_token_whip(ctx: Context) -> str:
    r, session = await ctx.post("whip", ctx.new_stream("rawtoken"), await ctx.offers.publisher(),
                                auth=ctx.config.token)
    expect(session is not None, f"a raw token was answered {describe(r)}")
    return f"{r.status_code} with a raw token"



