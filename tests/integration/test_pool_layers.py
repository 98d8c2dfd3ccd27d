"""Simulcast over two egress nodes: each node's first viewer makes that
node's mountpoint and an ``rtp_forward`` of all three layers, so a viewer on
either node can pick any layer (Chromium publishes, aiortc views)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gateway.janus.process import ManagedJanus
from tests.conftest import GatewayFactory, Leaks
from tests.integration.test_layers import PUBLISHER, chromium, frame_width_becomes  # noqa: F401
from tests.integration.test_pool import (  # noqa: F401  (fixtures)
    TOKEN, Viewer, janus_node, nodes, spec, viewers_per_node)
from tests.integration.test_whep import LAYER_REL, SSE_REL, read_events
from tests.integration.test_whip import wait_stream
from aiortc.mediastreams import MediaStreamError


async def test_each_egress_node_gets_every_simulcast_layer(
    start_gateway: GatewayFactory, chromium: Any, nodes: list[ManagedJanus], leaks: Leaks,
    http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(admin_token=TOKEN, public_listing="details", video_codecs="vp8",
                             janus=[spec(nodes[0], "in", "ingest"),
                                    spec(nodes[1], "e1", max_viewers=1),
                                    spec(nodes[2], "e2", max_viewers=1)])
    page = await chromium.new_page()
    await page.route(f"{gw.url}/publisher", lambda route: route.fulfill(body=PUBLISHER,
                                                                         content_type="text/html"))
    await page.goto(f"{gw.url}/publisher")
    assert await page.evaluate(f"publish('{gw.whip('sim')}')") == 201
    await wait_stream(http, gw, "sim", live=True)
    viewers = [Viewer(), Viewer()]
    widths: list[list[int]] = [[], []]
    try:
        for viewer, seen in zip(viewers, widths):
            r = await viewer.join(http, gw.whep("sim"), audio=False)
            assert r.status_code == 201, r.text
            links = {link["rel"]: link["url"] for link in r.links.values()}
            viewer.layer = links[LAYER_REL]  # type: ignore[attr-defined]
            viewer.sse = links[SSE_REL]  # type: ignore[attr-defined]
            receiver = next(t.receiver for t in viewer.pc.getTransceivers() if t.kind == "video")

            async def sizes(track: Any = receiver.track, seen: list[int] = seen) -> None:
                try:
                    while True:
                        seen.append((await track.recv()).width)
                except MediaStreamError:
                    return
            asyncio.ensure_future(sizes())
        assert await viewers_per_node(http, gw) == {"e1": 1, "e2": 1}
        assert len(await leaks.mountpoints()) == 2
        for viewer in viewers:
            # Each node reports the layers it gets; wait until Chromium sends
            # the lower two (it ramps up over a few seconds).
            sse = (await http.post(viewer.sse, json=["layers"])).headers["location"]  # type: ignore[attr-defined]
            events = await read_events(http, sse, 10, timeout=20, until=lambda e: all(
                x["bitrate"] > 0 for x in e[1]["0"][:2]))
            assert [x["rid"] for x in events[-1][1]["0"]] == ["l", "m", "h"]
            assert all(x["bitrate"] > 0 for x in events[-1][1]["0"][:2]), events
        for rid, width in (("l", 320), ("m", 640)):
            # Both at once: one keyframe request to the publisher serves both
            # nodes (Janus may drop a second request that follows closely).
            replies = await asyncio.gather(*(
                http.post(v.layer, json={"mediaId": "0", "rid": rid})  # type: ignore[attr-defined]
                for v in viewers))
            assert [r.status_code for r in replies] == [200, 200]
            for viewer, seen in zip(viewers, widths):
                await frame_width_becomes(viewer.frames, seen, width)  # type: ignore[arg-type]
    finally:
        for viewer in viewers:
            await viewer.leave(http)
        await page.evaluate("(async () => { await fetch(window.resource, {method: 'DELETE'}); "
                            "window.pc.close(); })()")
        await wait_stream(http, gw, "sim", live=None)
