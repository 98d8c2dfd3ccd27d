"""The browser pages in Chromium: publish from /publish/NAME, play on
/watch/NAME, the stream list on /.

Debian's Chromium (``/usr/bin/chromium``) is driven by Playwright for Python
with a fake camera and microphone.  Every peer shares the private network
namespace of the test run (``tests.sandbox``), so these tests need root
like the integration tests; without the namespace they are skipped.

Each test frees what it made (Stop on the publisher page, ``player.stop()``
or leaving the watch page) because the ``start_gateway`` fixture checks
Janus for leftovers after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import Any, AsyncIterator

import httpx
import pytest
from aiortc import RTCPeerConnection

from gateway.clients.whip import WhipSession
from tests.sandbox import INTERFACE
from gateway.janus.process import ManagedJanus
from tests.conftest import GatewayFactory, RunningGateway, Topology
from tests.integration.test_whip import wait_stream
from tests.publishers import aiortc_publisher, answer

playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")

CHROMIUM = os.environ.get("WHIP_GATEWAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]



def _in_private_netns() -> bool:
    # Not tests.sandbox.in_sandbox(): that looks in /sys/class/net, which shows the
    # namespace sysfs was mounted in, not this process's, so it is False in the sandbox.
    names = {name for _, name in socket.if_nameindex()}
    return os.environ.get("WHIP_GATEWAY_SANDBOX") == "1" and INTERFACE in names


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _in_private_netns(), reason="needs the private network namespace "
                       "(run pytest as root; see gateway/sandbox.py)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]

# What the watch page's RTCPeerConnection reports, for assertions and for
# failure messages (a getStats() dump in the spirit of chrome://webrtc-internals).
STATS_JS = """async () => {
  const pc = window.player && window.player.pc;
  const out = {state: window.player && window.player.state, live: window.player && window.player.live,
               viewers: window.player && window.player.viewers,
               lastError: window.player && window.player.lastError};
  if (!pc) return out;
  out.connectionState = pc.connectionState;
  out.iceConnectionState = pc.iceConnectionState;
  const stats = await pc.getStats();
  const codecs = {};
  stats.forEach(r => { if (r.type === "codec") codecs[r.id] = r.mimeType + "/" + r.payloadType; });
  stats.forEach(r => {
    if (r.type === "inbound-rtp") {
      out[r.kind] = {packetsReceived: r.packetsReceived, bytesReceived: r.bytesReceived,
                     framesDecoded: r.framesDecoded, frameWidth: r.frameWidth,
                     frameHeight: r.frameHeight, codec: codecs[r.codecId], mid: r.mid,
                     nackCount: r.nackCount, pliCount: r.pliCount};
    }
    if (r.type === "candidate-pair" && r.nominated) {
      out.pair = {state: r.state, bytesReceived: r.bytesReceived};
    }
  });
  return out;
}"""

DIAGNOSE_JS = """() => {
  const o = window.player || window.publisher;
  const pc = o && o.pc;
  return {
    state: o && o.state, lastError: o && o.lastError, resource: o && o.resource,
    events: o && o.events,
    local: pc && pc.localDescription && pc.localDescription.sdp,
    remote: pc && pc.remoteDescription && pc.remoteDescription.sdp,
  };
}"""


TOPOLOGIES = ["janus-1.1.2", "ingest+ice-lite-egress", "janus-1.4"]


@pytest.fixture
def janus_node(request: pytest.FixtureRequest) -> ManagedJanus | Topology:
    """Janus 1.1.2 (bridged viewer offers) unless a test asks for another
    topology with ``@pytest.mark.parametrize("janus_node", TOPOLOGIES, indirect=True)``."""
    name = getattr(request, "param", "janus-1.1.2")
    if name == "ingest+ice-lite-egress":
        return [(request.getfixturevalue("janus"), "ingest"),
                (request.getfixturevalue("janus_lite"), "egress")]
    return request.getfixturevalue("janus" if name == "janus-1.1.2" else "janus_new")


class Browser:
    """One Chromium; a fresh context per page so that pages share nothing."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.pages: list[Any] = []
        self.console: list[str] = []

    async def page(self, url: str) -> Any:
        context = await self.browser.new_context()
        page = await context.new_page()
        name = url.rsplit("/", 2)[-2:]
        page.on("console", lambda m: self.console.append(f"[{'/'.join(name)}] {m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"[{'/'.join(name)}] pageerror: {e}"))
        await page.goto(url)
        self.pages.append(page)
        return page

    async def diagnose(self) -> str:
        out = []
        for page in self.pages:
            if page.is_closed():
                continue
            try:
                out.append(f"--- {page.url}\n{json.dumps(await page.evaluate(DIAGNOSE_JS), indent=1)}")
                if "/watch/" in page.url:
                    out.append(json.dumps(await page.evaluate(STATS_JS), indent=1))
            except Exception as exc:  # the page may be gone; the dump is best effort
                out.append(f"--- {page.url}: {exc}")
        out.append("--- console\n" + "\n".join(self.console[-60:]))
        return "\n".join(out)


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        wrapped = Browser(browser)
        try:
            yield wrapped
        finally:
            await browser.close()


async def until(check: Any, what: str, chromium: Browser, timeout: float = 20.0,
                interval: float = 0.2) -> Any:
    """Poll ``check()`` (a coroutine function) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} within {timeout} s; last: {last!r}\n{await chromium.diagnose()}")


async def video_stats(page: Any) -> dict[str, Any]:
    return await page.evaluate(STATS_JS)  # type: ignore[no-any-return]


async def wait_frames(page: Any, chromium: Browser, minimum: int = 1,
                      timeout: float = 20.0) -> dict[str, Any]:
    async def decoded() -> dict[str, Any] | None:
        stats = await video_stats(page)
        return stats if (stats.get("video") or {}).get("framesDecoded", 0) >= minimum else None

    return await until(decoded, f"the watch page decoded {minimum} video frame(s)", chromium,  # type: ignore[no-any-return]
                       timeout)


async def start_page_publisher(chromium: Browser, gw: RunningGateway, stream: str, *,
                               simulcast: bool = False, key: str = "") -> Any:
    page = await chromium.page(f"{gw.url}/publish/{stream}")
    if key:
        await page.fill("#key", key)
    if simulcast:
        await page.check("#simulcast")
    await page.click("#start")
    return page


async def publisher_state(page: Any) -> str:
    return await page.evaluate("window.publisher.state")  # type: ignore[no-any-return]


async def wait_publisher_live(page: Any, chromium: Browser) -> None:
    async def live() -> bool:
        return await publisher_state(page) == "live"

    await until(live, "the publisher page went on air", chromium, timeout=15)


async def stop_page_publisher(page: Any, http: httpx.AsyncClient, gw: RunningGateway,
                              stream: str) -> None:
    if not page.is_closed() and await page.evaluate("window.publisher.state") not in ("stopped", "idle"):
        await page.click("#stop")
    await wait_stream(http, gw, stream, live=None)


async def stop_player(page: Any, http: httpx.AsyncClient, gw: RunningGateway, stream: str) -> None:
    """Leave the watch page: its pagehide handler DELETEs the WHEP session."""
    if not page.is_closed():
        await page.goto("about:blank")
    await wait_viewers(http, gw, stream, 0)


async def wait_viewers(http: httpx.AsyncClient, gw: RunningGateway, stream: str, count: int,
                       timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        streams = (await http.get(f"{gw.url}/api/streams")).json()["streams"]
        viewers = streams.get(stream, {}).get("viewers", 0)
        if viewers == count:
            return
        assert time.monotonic() < deadline, f"stream {stream} kept {viewers} viewer(s), want {count}"
        await asyncio.sleep(0.1)


class AiortcPublisher:
    def __init__(self, pc: RTCPeerConnection, whip: WhipSession) -> None:
        self.pc, self.whip = pc, whip

    @classmethod
    async def start(cls, gw: RunningGateway, http: httpx.AsyncClient, stream: str,
                    codec: str = "video/VP8") -> "AiortcPublisher":
        pc = await aiortc_publisher(video_codec=codec)
        whip = WhipSession(gw.whip(stream), http=http)
        response = await whip.post_offer(pc.localDescription.sdp)
        assert response.status_code == 201, response.text
        await answer(pc, whip)
        await wait_stream(http, gw, stream, live=True)
        return cls(pc, whip)

    async def stop(self) -> None:
        if self.whip.location:
            await self.whip.delete()
        await self.pc.close()


# -- tests ---------------------------------------------------------------------


@pytest.mark.parametrize("janus_node", TOPOLOGIES, indirect=True)
async def test_chromium_publishes_and_chromium_watches(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.egress")
    caplog.set_level(logging.INFO, logger="gateway.http.problems")
    publisher = await start_page_publisher(chromium, gateway, "cam")
    try:
        await wait_publisher_live(publisher, chromium)
        await wait_stream(http, gateway, "cam", live=True)
        assert await publisher.text_content("#badge") == "ON AIR"

        watcher = await chromium.page(f"{gateway.url}/watch/cam")
        stats = await wait_frames(watcher, chromium, minimum=10)
        assert stats["connectionState"] == "connected"
        assert (stats.get("audio") or {}).get("packetsReceived", 0) > 0, stats
        await until(lambda: watcher.evaluate(
            "document.getElementById('badge').dataset.live === 'true'"), "the badge shows live", chromium)
        assert await watcher.text_content("#badge") == "LIVE"
        await until(lambda: watcher.evaluate(
            "document.getElementById('viewers').textContent === '1'"), "the viewer count shows 1", chromium)
        assert await watcher.evaluate("window.player.viewers") == 1
        assert await watcher.evaluate("document.getElementById('video').videoWidth") > 0

        await stop_player(watcher, http, gateway, "cam")
        # The page DELETEs on pagehide while its PeerConnection closes; the DTLS
        # alert may reach Janus first and end the session, and the DELETE then
        # finds nothing (404).  Either way the DELETE must have been sent.
        lines = [r.getMessage() for r in caplog.records]
        assert any("DELETE by the client" in m for m in lines) or any(
            m.startswith("DELETE /whep/cam/") for m in lines), f"no DELETE on pagehide: {lines}"
    finally:
        await stop_page_publisher(publisher, http, gateway, "cam")
    assert await publisher_state(publisher) == "stopped"


@pytest.mark.parametrize("janus_node", TOPOLOGIES, indirect=True)
@pytest.mark.parametrize("codec,watch_first", [("video/VP8", True), ("video/H264", False)],
                         ids=["vp8-before-live", "h264"])
async def test_chromium_watches_aiortc_publisher(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient, codec: str, watch_first: bool
) -> None:
    watcher = None
    if watch_first:
        # No publisher yet: 409 + Retry-After, the page waits and shows offline.
        watcher = await chromium.page(f"{gateway.url}/watch/pattern")
        await until(lambda: watcher.evaluate("window.player.state === 'waiting'"),
                    "the player waits after a 409", chromium, timeout=10)
        assert "409" in await watcher.evaluate("window.player.lastError")
        assert await watcher.text_content("#badge") == "OFFLINE"
    publisher = await AiortcPublisher.start(gateway, http, "pattern", codec)
    try:
        if watcher is None:
            watcher = await chromium.page(f"{gateway.url}/watch/pattern")
        # Retry-After is 5 s: the waiting player comes back by itself.
        stats = await wait_frames(watcher, chromium, minimum=10, timeout=25)
        assert stats["video"]["codec"].lower().startswith(codec.lower()), stats
        assert (stats["video"]["frameWidth"], stats["video"]["frameHeight"]) == (320, 240)
        await until(lambda: watcher.evaluate("window.player.live === true"), "an active event", chromium)
        await stop_player(watcher, http, gateway, "pattern")
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "pattern", live=None)


async def test_index_lists_the_live_stream(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient
) -> None:
    index = await chromium.page(f"{gateway.url}/")
    assert await index.is_visible("#empty")
    publisher = await AiortcPublisher.start(gateway, http, "listed")
    try:
        row = index.locator('tr[data-stream="listed"]')
        await row.wait_for(timeout=5000)  # the list refreshes every 2 s
        assert await row.get_attribute("data-live") == "true"
        assert await row.locator(".badge").text_content() == "LIVE"
        hrefs = await row.locator("a").evaluate_all("links => links.map(a => a.href)")
        assert f"{gateway.url}/watch/listed" in hrefs and f"{gateway.url}/publish/listed" in hrefs
        assert not await index.is_visible("#empty")
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "listed", live=None)
    await index.locator('tr[data-stream="listed"]').wait_for(state="detached", timeout=5000)
    assert await index.is_visible("#empty")


async def test_simulcast_publisher_and_layer_selection(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient
) -> None:
    publisher = await start_page_publisher(chromium, gateway, "sim", simulcast=True)
    try:
        await wait_publisher_live(publisher, chromium)
        await wait_stream(http, gateway, "sim", live=True)
        offer = await publisher.evaluate("window.publisher.pc.localDescription.sdp")
        assert "a=simulcast:send h;m;l" in offer

        watcher = await chromium.page(f"{gateway.url}/watch/sim")
        await wait_frames(watcher, chromium, minimum=10)

        # The server's layers event builds the select: automatic + one option per layer.
        options = await until(lambda: watcher.evaluate(
            "(() => { const o = [...document.querySelectorAll('#layer option')].map(o => o.value);"
            " return o.length > 1 ? o : null; })()"), "a layers event filled the select", chromium)
        layers = [json.loads(o) for o in options[1:]]
        assert {layer.get("rid") for layer in layers} == {"h", "m", "l"}, layers
        assert all(layer["mediaId"] == "1" for layer in layers), "the video m-line is the second"
        assert not await watcher.is_disabled("#layer")

        capture = await publisher.evaluate(
            "window.publisher.media.getVideoTracks()[0].getSettings().width")

        async def width_is(test: Any) -> int | None:
            width = ((await video_stats(watcher)).get("video") or {}).get("frameWidth")
            return width if width and test(width) else None

        low = next(o for o in options[1:] if json.loads(o)["rid"] == "l")
        await watcher.select_option("#layer", low)
        await until(lambda: watcher.evaluate("window.player.lastLayerStatus"), "the layer POST", chromium)
        assert await watcher.evaluate("window.player.lastLayerStatus") == 200
        assert await watcher.text_content("#layer-status") == "ok"
        await until(lambda: width_is(lambda w: w <= capture // 4), "the 1/4 layer reached the player",
                    chromium, timeout=15)

        await watcher.evaluate("window.player.lastLayerStatus = null")
        await watcher.select_option("#layer", "")  # automatic: {mediaId} alone
        await until(lambda: watcher.evaluate("window.player.lastLayerStatus"), "the layer POST", chromium)
        assert await watcher.evaluate("window.player.lastLayerStatus") == 200
        await until(lambda: width_is(lambda w: w > capture // 4), "a larger layer again", chromium,
                    timeout=15)

        await stop_player(watcher, http, gateway, "sim")
    finally:
        await stop_page_publisher(publisher, http, gateway, "sim")


async def test_stream_key_and_viewer_token(
    start_gateway: GatewayFactory, chromium: Browser, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(stream_keys={"locked": "s3cret"}, viewer_keys={"locked": "v1ew"},
                             public_listing="details")
    wrong = await start_page_publisher(chromium, gw, "locked", key="nope")
    await until(lambda: wrong.evaluate("window.publisher.state === 'failed'"),
                "a wrong key fails", chromium, timeout=10)
    assert (await wrong.text_content("#status")).startswith("403")
    await wrong.goto("about:blank")

    publisher = await start_page_publisher(chromium, gw, "locked", key="s3cret")
    try:
        await wait_publisher_live(publisher, chromium)
        denied = await chromium.page(f"{gw.url}/watch/locked")
        await until(lambda: denied.evaluate("window.player.state === 'stopped'"),
                    "a player without the token stops", chromium, timeout=10)
        assert (await denied.text_content("#status")).startswith("401")

        watcher = await chromium.page(f"{gw.url}/watch/locked?token=v1ew")
        await wait_frames(watcher, chromium)
        # The event stream (EventSource: no headers) works without the token in its URL.
        await until(lambda: watcher.evaluate("window.player.live === true && window.player.viewers === 1"),
                    "events without the token", chromium)
        assert "token" not in await watcher.evaluate("window.player.eventStream")
        await stop_player(watcher, http, gw, "locked")
    finally:
        await stop_page_publisher(publisher, http, gw, "locked")


async def test_watch_page_asks_for_the_viewer_token(
    start_gateway: GatewayFactory, chromium: Browser, http: httpx.AsyncClient
) -> None:
    """A stream that needs a viewer token: the watch page says so (401 "needs a
    viewer token") and asks for it, as the publish page asks for the key; a
    wrong one (403) asks again; the right one plays, sent as Bearer, and the
    event stream works though EventSource sends no Authorization."""
    gw = await start_gateway(viewer_keys={"paid": "ticket"}, public_listing="details")
    publisher = await AiortcPublisher.start(gw, http, "paid")
    try:
        page = await chromium.page(f"{gw.url}/watch/paid")
        await page.locator("#token-form").wait_for(state="visible", timeout=10000)
        status = await page.text_content("#status")
        assert status.startswith("401") and "needs a viewer token" in status, status

        await page.fill("#token", "not-it")
        await page.click("#token-submit")
        await until(lambda: page.evaluate("document.getElementById('status').textContent.startsWith('403')"),
                    "a wrong token is refused", chromium, timeout=10)
        await page.locator("#token-form").wait_for(state="visible", timeout=10000)

        await page.fill("#token", "ticket")
        await page.click("#token-submit")
        assert await page.is_hidden("#token-form")
        await wait_frames(page, chromium)
        await until(lambda: page.evaluate("window.player.live === true && window.player.viewers === 1"),
                    "server-sent events without Authorization", chromium)
        assert "ticket" not in await page.evaluate("window.player.eventStream")
        await stop_player(page, http, gw, "paid")
    finally:
        await publisher.stop()
    await wait_stream(http, gw, "paid", live=None)


async def test_player_follows_a_publisher_that_comes_back_with_another_codec(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient
) -> None:
    """The stream goes inactive, then live with H.264 instead of VP8: the
    gateway drops the old mountpoints and sends ``reconnect``; the page POSTs
    again and plays the new codec."""
    publisher = await AiortcPublisher.start(gateway, http, "swap", "video/VP8")
    watcher = await chromium.page(f"{gateway.url}/watch/swap")
    try:
        stats = await wait_frames(watcher, chromium)
        assert stats["video"]["codec"].startswith("video/VP8"), stats
        first = await watcher.evaluate("window.player.resource")
        await publisher.stop()
        await until(lambda: watcher.evaluate("window.player.live === false"), "an inactive event", chromium)
        assert await watcher.text_content("#badge") == "OFFLINE"

        publisher = await AiortcPublisher.start(gateway, http, "swap", "video/H264")
        await until(lambda: watcher.evaluate(
            "window.player.events.some(e => e.name === 'reconnect')"), "a reconnect event", chromium)

        async def h264() -> dict[str, Any] | None:
            stats = await video_stats(watcher)
            video = stats.get("video") or {}
            return stats if video.get("framesDecoded") and video["codec"].startswith("video/H264") else None

        await until(h264, "the page plays the new codec", chromium, timeout=20)
        assert await watcher.evaluate("window.player.resource") not in (None, first)
        await until(lambda: watcher.evaluate("window.player.live === true"), "active again", chromium)
        await stop_player(watcher, http, gateway, "swap")
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "swap", live=None)
