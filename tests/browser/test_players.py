"""WHIP/WHEP clients that no one here wrote, from npm, in Debian's Chromium.

- ``@eyevinn/webrtc-player`` 0.13 (``type: "whep"``) plays a live stream;
- ``whip-whep`` 1.2's ``WHEPClient`` plays one;
- ``whip-whep`` 1.2's ``WHIPClient`` publishes Chromium's fake camera.

The packages are installed and bundled at test time by
``tests.browser.npm_players`` (exact versions in ``players/package.json``;
the bundle stays in the cache folder).  The page that loads the bundle is
served through Playwright's request routing under the gateway's own origin,
so the players talk to the gateway exactly as on a site of the user's.  A
wrapper around ``fetch`` records every request the players make, for the
assertions and for failure messages.

whip-whep trickles its candidates without ``If-Match`` until it has done an
ICE restart; RFC 9725 makes that a ``428``, and the gateway says so.  The
viewer connects anyway because Janus learns its address from its
connectivity checks; the WHEPClient test shows both.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator

import httpx
import pytest

from gateway.clients.whep import play
from tests.browser.npm_players import PlayersUnavailable, ensure_bundle
from tests.browser.test_pages import (  # noqa: F401  (chromium is a fixture)
    CHROMIUM, AiortcPublisher, Browser, _in_private_netns, chromium, until, wait_viewers,
)
from tests.conftest import RunningGateway
from tests.integration.test_whip import wait_stream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not _in_private_netns(), reason="needs the private network namespace (root)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM}"),
]

PAGE = """<!doctype html><meta charset="utf-8"><title>players</title>
<video id="video" autoplay muted playsinline></video>
<script>
// Every request a player makes: method, URL, status (or the error).
window.requests = [];
const realFetch = window.fetch.bind(window);
window.fetch = async (input, init) => {
  const entry = {method: (init && init.method) || "GET", url: String(input)};
  window.requests.push(entry);
  try { const r = await realFetch(input, init); entry.status = r.status; return r; }
  catch (e) { entry.error = String(e); throw e; }
};
window.rejections = [];
window.addEventListener("unhandledrejection", e => window.rejections.push(String(e.reason)));
// Frames the video element presented, counted by the browser itself.
window.presented = 0;
const video = document.getElementById("video");
const count = () => { window.presented++; video.requestVideoFrameCallback(count); };
video.requestVideoFrameCallback(count);
</script>
<script src="/players-test/players.js"></script>
"""

PLAYBACK_JS = """() => {
  const v = document.getElementById("video");
  const q = v.getVideoPlaybackQuality();
  return {presented: window.presented, totalVideoFrames: q.totalVideoFrames,
          width: v.videoWidth, height: v.videoHeight, time: v.currentTime};
}"""


@pytest.fixture(scope="session")
def bundle() -> str:
    try:
        return ensure_bundle(outside_netns=True).read_text()
    except PlayersUnavailable as exc:
        pytest.skip(f"{exc}; run: python -m tests.browser.npm_players")


@pytest.fixture
async def players_page(chromium: Browser, gateway: RunningGateway,
                       bundle: str) -> AsyncIterator[Any]:
    """A blank page at the gateway's origin with the players loaded."""
    context = await chromium.browser.new_context()
    page = await context.new_page()
    page.on("console", lambda m: chromium.console.append(f"[players] {m.type}: {m.text}"))
    page.on("pageerror", lambda e: chromium.console.append(f"[players] pageerror: {e}"))

    async def serve(route: Any) -> None:
        if route.request.url.endswith("/players.js"):
            await route.fulfill(body=bundle, content_type="text/javascript")
        else:
            await route.fulfill(body=PAGE, content_type="text/html")

    await page.route(f"{gateway.url}/players-test/**", serve)
    await page.goto(f"{gateway.url}/players-test/index.html")
    await page.wait_for_function("window.Players !== undefined")
    chromium.pages.append(page)
    yield page
    await context.close()


async def wait_playing(page: Any, chromium: Browser, frames: int = 30) -> dict[str, Any]:
    """The video element presented ``frames`` frames and has a size."""
    async def playing() -> dict[str, Any] | None:
        state = await page.evaluate(PLAYBACK_JS)
        ok = state["presented"] >= frames and state["totalVideoFrames"] >= frames and state["width"]
        return state if ok else None

    state = await until(playing, f"the player presented {frames} frames", chromium, timeout=25)
    requests = await page.evaluate("window.requests")
    return {**state, "requests": requests}


async def test_eyevinn_webrtc_player_plays_a_live_stream(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient, players_page: Any
) -> None:
    publisher = await AiortcPublisher.start(gateway, http, "eyevinn")
    try:
        await players_page.evaluate("""async url => {
          window.statsFrames = 0; window.playerEvents = [];
          const player = new Players.WebRTCPlayer({
            video: document.getElementById("video"), type: "whep", statsTypeFilter: "^inbound-rtp$"});
          for (const name of ["no-media", "media-recovered", "peer-connection-failed",
                              "initial-connection-failed", "connect-error"]) {
            player.on(name, () => window.playerEvents.push(name));
          }
          // The player's own statistics event: what it decoded.
          player.on("stats:inbound-rtp", r => { if (r.kind === "video") window.statsFrames = r.framesDecoded; });
          window.player = player;
          await player.load(new URL(url));
        }""", gateway.whep("eyevinn"))
        state = await wait_playing(players_page, chromium)
        assert (state["width"], state["height"]) == (320, 240), state
        posts = [r for r in state["requests"] if r["method"] == "POST"]
        assert posts[0]["url"] == gateway.whep("eyevinn") and posts[0]["status"] == 201, posts
        await until(lambda: players_page.evaluate("window.statsFrames >= 30"),
                    "the player's stats:inbound-rtp event reports decoded frames", chromium)
        assert await players_page.evaluate("window.playerEvents") == []
        await wait_viewers(http, gateway, "eyevinn", 1)

        await players_page.evaluate("window.player.unload()")  # DELETEs the resource
        await wait_viewers(http, gateway, "eyevinn", 0)
        deletes = [r for r in await players_page.evaluate("window.requests") if r["method"] == "DELETE"]
        assert deletes and deletes[0]["status"] == 200, deletes
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "eyevinn", live=None)


async def test_whip_whep_client_plays_although_its_trickle_gets_428(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient, players_page: Any
) -> None:
    publisher = await AiortcPublisher.start(gateway, http, "medooze")
    try:
        await players_page.evaluate("""async url => {
          const pc = new RTCPeerConnection();
          pc.addTransceiver("audio", {direction: "recvonly"});
          pc.addTransceiver("video", {direction: "recvonly"});
          const stream = new MediaStream();
          pc.ontrack = e => { stream.addTrack(e.track); document.getElementById("video").srcObject = stream; };
          window.client = new Players.WHEPClient();
          window.pc = pc;
          await window.client.view(pc, url);
        }""", gateway.whep("medooze"))
        state = await wait_playing(players_page, chromium)
        assert state["width"] == 320, state
        assert await players_page.evaluate("window.pc.connectionState") == "connected"

        # It asks for the events extension too (201), though it listens only for
        # unnamed messages, and the extension names every event: so no events.
        events = [r for r in state["requests"] if r["method"] == "POST" and r["url"].endswith("/sse")]
        assert events and events[0]["status"] == 201, state["requests"]
        patches = [r for r in state["requests"] if r["method"] == "PATCH"]
        assert patches and all(r["status"] == 428 for r in patches), patches
        assert any("428" in r for r in await players_page.evaluate("window.rejections"))
        await wait_viewers(http, gateway, "medooze", 1)

        await players_page.evaluate("window.client.stop()")  # DELETE, then close
        await wait_viewers(http, gateway, "medooze", 0)
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "medooze", live=None)


async def test_whip_whep_client_publishes_chromiums_camera(
    gateway: RunningGateway, chromium: Browser, http: httpx.AsyncClient, players_page: Any
) -> None:
    await players_page.evaluate("""async url => {
      const media = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 640, height: 480}});
      const pc = new RTCPeerConnection();
      for (const track of media.getTracks()) pc.addTransceiver(track, {direction: "sendonly"});
      window.client = new Players.WHIPClient();
      window.pc = pc;
      await window.client.publish(pc, url);
    }""", gateway.whip("camera"))
    try:
        await wait_stream(http, gateway, "camera", live=True, timeout=15)
        viewer, session, counter = await play(gateway.whep("camera"))
        try:
            deadline = asyncio.get_running_loop().time() + 20
            while counter.video_frames < 30:
                assert asyncio.get_running_loop().time() < deadline, (
                    f"the viewer decoded {counter.video_frames} frames\n{await chromium.diagnose()}")
                await asyncio.sleep(0.2)
            assert (counter.width, counter.height) == (640, 480)
            assert counter.audio_frames > 0
        finally:
            await session.delete()
            await viewer.close()
            await session.aclose()
        posts = [r for r in await players_page.evaluate("window.requests") if r["method"] == "POST"]
        assert posts[0]["status"] == 201, posts
    finally:
        await players_page.evaluate("window.client.stop()")  # DELETE
    await wait_stream(http, gateway, "camera", live=None)
