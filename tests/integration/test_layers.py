"""Simulcast end to end: Chromium publishes three layers, an aiortc viewer
switches between them with the layer selection extension, and the
``layers`` server-sent event describes them (WHEP extensions draft)."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import httpx
import pytest
from aiortc.mediastreams import MediaStreamError

from tests.conftest import GatewayFactory, RunningGateway
from tests.integration.test_whep import LAYER_REL, SSE_REL, read_events, watch
from tests.integration.test_whip import wait_stream
from tests.viewers import Frames, aiortc_viewer

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 "--allow-loopback-in-peer-connection", "--no-sandbox",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

# A minimal simulcast WHIP publisher: rids h/m/l at full, 1/2 and 1/4 size.
PUBLISHER = """<!doctype html><script>
async function publish(url) {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 1280, height: 720}});
  const pc = new RTCPeerConnection();
  pc.addTransceiver(media.getVideoTracks()[0], {direction: "sendonly", sendEncodings: [
    {rid: "h", maxBitrate: 1500000}, {rid: "m", scaleResolutionDownBy: 2, maxBitrate: 500000},
    {rid: "l", scaleResolutionDownBy: 4, maxBitrate: 150000}]});
  const codecs = RTCRtpSender.getCapabilities("video").codecs.filter(c => c.mimeType === "video/VP8");
  pc.getTransceivers()[0].setCodecPreferences(codecs);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const response = await fetch(url, {method: "POST", body: pc.localDescription.sdp,
                                      headers: {"Content-Type": "application/sdp"}});
  await pc.setRemoteDescription({type: "answer", sdp: await response.text()});
  window.pc = pc;
  window.resource = response.headers.get("Location");
  return response.status;
}
</script>"""


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def frame_width_becomes(frames: Frames, track_width: list[int], want: int, timeout: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not track_width or track_width[-1] != want:
        assert asyncio.get_running_loop().time() < deadline, f"width stayed {track_width[-1:]} (want {want})"
        await asyncio.sleep(0.1)


async def test_layer_selection_switches_what_the_viewer_decodes(
    start_gateway: GatewayFactory, chromium: object, http: httpx.AsyncClient
) -> None:
    gw: RunningGateway = await start_gateway(video_codecs="vp8")
    page = await chromium.new_page()  # type: ignore[attr-defined]
    await page.route(f"{gw.url}/publisher", lambda route: route.fulfill(body=PUBLISHER,
                                                                         content_type="text/html"))
    await page.goto(f"{gw.url}/publisher")
    assert await page.evaluate(f"publish('{gw.whip('sim')}')") == 201
    await wait_stream(http, gw, "sim", live=True)

    pc, frames = await aiortc_viewer(audio=False)
    widths: list[int] = []

    @pc.on("track")
    def _track(track) -> None:  # type: ignore[no-untyped-def]
        async def sizes() -> None:
            try:
                while True:
                    frame = await track.recv()
                    widths.append(frame.width)
            except MediaStreamError:
                return
        asyncio.ensure_future(sizes())

    try:
        r = await watch(http, gw.whep("sim"), pc)
        assert r.status_code == 201, r.text
        links = {link["rel"]: link["url"] for link in r.links.values()}
        sse = (await http.post(links[SSE_REL], json=["layers"])).headers["location"]
        # The first report may come before Chromium ramps up (bitrate 0 means
        # "inactive"); the event repeats every couple of seconds.
        events = await read_events(http, sse, 6, timeout=20,
                                   until=lambda e: all(x["bitrate"] > 0 for x in e[1]["0"][:2]))
        for name, data in events:
            assert name == "layers" and list(data) == ["0"], data
            assert [layer["rid"] for layer in data["0"]] == ["l", "m", "h"]
            assert [layer["spatialLayerId"] for layer in data["0"]] == [0, 1, 2]
        assert all(layer["bitrate"] > 0 for layer in events[-1][1]["0"][:2]), events

        for rid, width in (("l", 320), ("m", 640)):
            assert (await http.post(links[LAYER_REL], json={"mediaId": "0", "rid": rid})).status_code == 200
            await frame_width_becomes(frames, widths, width)
        assert (await http.post(links[LAYER_REL], json={"mediaId": "0", "spatialLayerId": 0})).status_code == 200
        await frame_width_becomes(frames, widths, 320)
        r = await http.post(links[LAYER_REL], json={"mediaId": "0", "rid": "nope"})
        assert r.status_code == 422
        assert (await http.post(links[LAYER_REL], json={"mediaId": "0"})).status_code == 200
        assert (await http.delete(r.request.url.copy_with(path=r.request.url.path.rsplit("/layer", 1)[0]))).status_code == 200
    finally:
        await pc.close()
        await page.evaluate("(async () => { await fetch(window.resource, {method: 'DELETE'}); window.pc.close(); })()")
        await wait_stream(http, gw, "sim", live=None)
