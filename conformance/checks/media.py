"""Media checks: does an aiortc publisher connect, and does an aiortc viewer
of that publisher decode frames?  Everything else in the suite is HTTP and
SDP; these two are the end-to-end proof that the answers are usable."""

from __future__ import annotations

from .. import offers
from ..context import MEDIA_TIMEOUT, Context
from ..runner import MUST, PHASE_WHEP, PHASE_WHIP_MEDIA, RFC9725, WHEP, Skip, check
from .common import live, media_viewer


@check("media.whip.ice-connects", title="An aiortc publisher's ICE and DTLS connect",
       spec=RFC9725, section="4.3 ICE support", level=MUST, phase=PHASE_WHIP_MEDIA, needs=("whip",))
async def whip_ice_connects(ctx: Context) -> str:
    state = await live(ctx)
    note = f"connected in {state.connect_time:.2f} s"
    if state.ready_after is not None and state.ready_after > 0.5:
        note += f"; viewers accepted {state.ready_after:.1f} s later"
    return note


@check("media.whep.frames", title="An aiortc viewer of that publisher decodes video frames",
       spec=WHEP, section="Playback Session Set Up / Server Accepts Client Offer", level=MUST,
       phase=PHASE_WHEP, needs=("whep",))
async def whep_frames(ctx: Context) -> str:
    viewer = await media_viewer(ctx)
    if viewer.session is None:
        raise Skip("no viewer session")
    took = await offers.wait_frames(viewer.counter, 1, MEDIA_TIMEOUT)
    await offers.wait_frames(viewer.counter, 10, MEDIA_TIMEOUT)
    size = f"{viewer.counter.width}x{viewer.counter.height}"
    return (f"first frame {took:.2f} s after asking, {viewer.counter.video_frames} frames {size} "
            f"({viewer.mode} mode)")
