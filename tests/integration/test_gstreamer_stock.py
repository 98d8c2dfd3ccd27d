"""GStreamer's ``simple-whip-client`` exactly as Debian 12 installs it.

``tests/integration/test_gstreamer.py`` gets the client past its start-up
abort with a preloaded stand-in library; a user has no such thing.  This
test runs the stock binary with the stock environment and asks only what a
user would: does the stream go live?  On Debian 12 it does not: the client
links libsoup 2.4, the nice plugin pulls in libsoup 3 through gupnp-igd, and
libsoup aborts the process ("libsoup2 symbols detected").  Debian 12 has no
other GStreamer WHIP publisher (no ``whipsink``/``whipclientsink``: the Rust
plugins are not packaged).  Hence a strict xfail wherever that library clash
is present; where it is not, the test must pass.

Debian 13 (trixie) and sid ship a newer client (0.0~git20240308) built
against libsoup 3.  ``deploy/whip-client-sid.sh`` installs sid's into a
chroot, and the second test publishes with it, unchanged, and has a viewer
decode the stream: that is the GStreamer path for users on Debian 13 or
later (or in such a chroot on Debian 12).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import httpx
import pytest

from gateway.clients.whep import play
from tests.conftest import GatewayFactory
from tests.integration.test_gstreamer import (
    AUDIO_OPUS, KEY, VIDEO_VP8, WHIP_CLIENT, WhipClientProcess, _soup_clash,
)
from tests.integration.test_whip import stream_state, wait_stream

SID_CHROOT = os.environ.get("WHIP_GATEWAY_WHIP_CLIENT_SID", "/var/cache/whip-gateway/whip-client-sid")

pytestmark = pytest.mark.skipif(
    not os.access(WHIP_CLIENT, os.X_OK),
    reason=f"{WHIP_CLIENT} is missing (Debian package simple-whip-client)",
)


class ClientAborted(Exception):
    """The stock client died before the stream went live."""


@pytest.mark.xfail(_soup_clash(), strict=True, raises=ClientAborted,
                   reason="Debian 12's simple-whip-client aborts at start: it links libsoup 2.4 "
                   "and the nice plugin pulls in libsoup 3 (gupnp-igd)")
async def test_stock_simple_whip_client_goes_live(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(stream_keys={"stock": KEY})
    env = dict(os.environ)  # what a user's shell has: no preload, no stand-in
    env.pop("LD_LIBRARY_PATH", None)
    env.pop("LD_PRELOAD", None)
    client = await WhipClientProcess.start(env, "-u", gw.whip("stock"), "-t", KEY,
                                           "-A", AUDIO_OPUS, "-V", VIDEO_VP8)
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            state = await stream_state(http, gw, "stock")
            if state is not None and state["live"]:
                break
            if client.proc.returncode is not None:
                await asyncio.wait_for(client.reader, 5) if client.reader else None
                what = client.context("whip-client exited before going live")
                assert "libsoup" in client.log, what  # any other death is a real failure
                raise ClientAborted(what)
            assert asyncio.get_running_loop().time() < deadline, client.context("never went live")
            await asyncio.sleep(0.2)
        await client.stop(signal.SIGINT)
    finally:
        await client.kill()
    await wait_stream(http, gw, "stock", live=None, timeout=15)


@pytest.mark.skipif(not os.access(f"{SID_CHROOT}/usr/bin/whip-client", os.X_OK),
                    reason="no sid simple-whip-client chroot; run deploy/whip-client-sid.sh")
async def test_trixie_and_sid_simple_whip_client_goes_live(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(stream_keys={"trixie": KEY})
    proc = await asyncio.create_subprocess_exec(
        shutil.which("chroot") or "/usr/sbin/chroot", SID_CHROOT, "/usr/bin/whip-client", "-u", gw.whip("trixie"), "-t", KEY,
        "-A", AUDIO_OPUS, "-V", VIDEO_VP8,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "GST_DEBUG": "1"})
    try:
        await wait_stream(http, gw, "trixie", live=True, timeout=20)
        viewer, session, counter = await play(gw.whep("trixie"))
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while counter.video_frames < 30:
                assert asyncio.get_running_loop().time() < deadline, counter.video_frames
                await asyncio.sleep(0.2)
            assert (counter.width, counter.height) == (320, 240)
        finally:
            await session.delete()
            await viewer.close()
            await session.aclose()
        proc.send_signal(signal.SIGINT)  # the client DELETEs its resource on SIGINT
        await asyncio.wait_for(proc.wait(), 15)
        await wait_stream(http, gw, "trixie", live=None, timeout=5)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
