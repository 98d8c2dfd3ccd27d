"""Firefox (Debian's ESR, over Marionette) against Chromium, through the
gateway's own pages: Firefox publishes on /publish/NAME and Chromium plays
/watch/NAME, then the other way round.

Firefox offline has no OpenH264, so the gateway runs with
``video_codecs = "vp8"`` and both directions carry VP8.  What is asserted is
what the watcher sees: decoded frames (``inbound-rtp`` ``framesDecoded``),
a video size, ``currentTime`` advancing, and the page's live badge and
viewer count that come from the server-sent events.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, AsyncIterator

import httpx
import pytest

from tests.browser.firefox import FIREFOX, Firefox, non_loopback_address
from tests.browser.test_pages import (  # noqa: F401  (chromium is a fixture)
    CHROMIUM, DIAGNOSE_JS, STATS_JS, Browser, _in_private_netns, chromium, start_page_publisher, stop_player,
    until, wait_frames, wait_publisher_live, wait_viewers,
)
from tests.conftest import GatewayFactory, RunningGateway
from tests.integration.test_whip import wait_stream

pytest.importorskip("marionette_driver", reason="pip install marionette-driver")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _in_private_netns(), reason="needs the private network namespace (root)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not os.path.exists(FIREFOX), reason=f"no Firefox at {FIREFOX} (firefox-esr)"),
]

# The watch page's getStats() summary, or null until 30 video frames were decoded.
THIRTY_FRAMES = ("const done = arguments[arguments.length - 1];"
                 f"({STATS_JS})().then(s => done((s.video || {{}}).framesDecoded >= 30 ? s : null),"
                 " e => done(String(e)));")


@pytest.fixture
async def firefox() -> AsyncIterator[Firefox]:
    with non_loopback_address():
        browser = await asyncio.to_thread(Firefox)
        try:
            yield browser
        finally:
            await asyncio.to_thread(browser.close)


@pytest.fixture
async def vp8_gateway(start_gateway: GatewayFactory) -> RunningGateway:
    return await start_gateway(video_codecs="vp8", public_listing="details")  # viewer counts


async def ff(browser: Firefox, script: str, *args: Any) -> Any:
    return await asyncio.to_thread(browser.js, script, *args)


async def ff_until(browser: Firefox, script: str, what: str, timeout: float = 25.0,
                   is_async: bool = False) -> Any:
    """Poll a Firefox script until it returns something truthy (Marionette has no page events)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        call = browser.js_async if is_async else browser.js
        last = await asyncio.to_thread(call, script)
        if last:
            return last
        await asyncio.sleep(0.25)
    try:
        page = await asyncio.to_thread(browser.js, f"return ({DIAGNOSE_JS})();")
    except Exception as exc:  # the dump is best effort
        page = repr(exc)
    raise AssertionError(f"Firefox: {what} within {timeout} s; last: {last!r}\npage: {page}\n"
                         f"{browser.output()}")


async def test_firefox_publishes_and_chromium_watches(
    vp8_gateway: RunningGateway, firefox: Firefox, chromium: Browser, http: httpx.AsyncClient
) -> None:
    gw = vp8_gateway
    await asyncio.to_thread(firefox.navigate, f"{gw.url}/publish/fox")
    await ff(firefox, "document.getElementById('start').click();")
    try:
        await ff_until(firefox, "return window.publisher.state === 'live';", "the publisher went on air")
        assert await ff(firefox, "return document.getElementById('badge').textContent;") == "ON AIR"
        await wait_stream(http, gw, "fox", live=True)

        watcher = await chromium.page(f"{gw.url}/watch/fox")
        stats = await wait_frames(watcher, chromium, minimum=30, timeout=25)
        assert stats["video"]["codec"].startswith("video/VP8"), stats
        assert stats["video"]["frameWidth"] > 0 and stats["connectionState"] == "connected"
        await until(lambda: watcher.evaluate("window.player.live === true && window.player.viewers === 1"),
                    "active and viewercount events", chromium)
        assert await watcher.text_content("#badge") == "LIVE"
        await stop_player(watcher, http, gw, "fox")
    finally:
        if await ff(firefox, "return window.publisher.state;") not in ("stopped", "idle"):
            await ff(firefox, "document.getElementById('stop').click();")
    await wait_stream(http, gw, "fox", live=None)


async def test_chromium_publishes_and_firefox_watches(
    vp8_gateway: RunningGateway, firefox: Firefox, chromium: Browser, http: httpx.AsyncClient
) -> None:
    gw = vp8_gateway
    publisher = await start_page_publisher(chromium, gw, "chrome")
    try:
        await wait_publisher_live(publisher, chromium)
        await wait_stream(http, gw, "chrome", live=True)

        await asyncio.to_thread(firefox.navigate, f"{gw.url}/watch/chrome")
        stats = await ff_until(firefox, THIRTY_FRAMES, "Firefox decoded 30 frames", is_async=True)
        assert stats["video"]["codec"].lower().startswith("video/vp8"), stats
        assert stats["video"]["frameWidth"] > 0, stats
        first = await ff(firefox, "return document.getElementById('video').currentTime;")
        await ff_until(firefox, f"return document.getElementById('video').currentTime > {first};",
                       "video.currentTime advances")
        assert await ff(firefox, "return document.getElementById('video').videoWidth;") > 0
        await ff_until(firefox, "return window.player.live === true && window.player.viewers === 1 "
                       "&& document.getElementById('badge').textContent === 'LIVE';",
                       "the live badge and viewer count from the events")
        await wait_viewers(http, gw, "chrome", 1)

        await asyncio.to_thread(firefox.navigate, "about:blank")  # pagehide DELETEs
        await wait_viewers(http, gw, "chrome", 0)
    finally:
        if not publisher.is_closed() and await publisher.evaluate("window.publisher.state") not in (
                "stopped", "idle"):
            await publisher.click("#stop")
    await wait_stream(http, gw, "chrome", live=None)
