"""The watch page when its egress Janus dies: the ``reconnect`` event makes
it POST again at once, and it plays on the other egress node."""

from __future__ import annotations

import signal
import time

import httpx

from gateway.janus.process import ManagedJanus
from tests.browser.test_pages import Browser, chromium, stop_player, until, video_stats  # noqa: F401
from tests.conftest import GatewayFactory
from tests.integration.test_pool import (  # noqa: F401  (fixtures)
    TOKEN, janus_node, nodes, spec, viewers_per_node, wait_healthy)
from tests.integration.test_whep import start_publisher


async def test_watch_page_moves_to_the_other_egress_node(
    start_gateway: GatewayFactory, chromium: Browser, nodes: list[ManagedJanus],
    http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(admin_token=TOKEN, public_listing="details", janus=[
        spec(nodes[0], "in", "ingest"), spec(nodes[1], "e1"), spec(nodes[2], "e2")])
    publisher = await start_publisher(gw, http, "page")
    page = await chromium.page(f"{gw.url}/watch/page")
    try:
        async def playing() -> bool:
            return (await video_stats(page)).get("video", {}).get("framesDecoded", 0) > 0

        await until(playing, "the watch page plays", chromium)
        spread = await viewers_per_node(http, gw)
        first = next(name for name, count in spread.items() if count == 1)
        other = "e2" if first == "e1" else "e1"
        await page.evaluate("window.before = window.player.pc")
        killed_at = time.monotonic()
        (nodes[1] if first == "e1" else nodes[2]).signal(signal.SIGKILL)

        async def moved() -> bool:
            if not await page.evaluate("window.player.pc && window.player.pc !== window.before"):
                return False
            return await playing()

        await until(moved, "the watch page plays again on a new connection", chromium,
                    interval=0.05)
        took = time.monotonic() - killed_at
        assert await viewers_per_node(http, gw) == {first: 0, other: 1}
        events = await page.evaluate("window.player.events.map(e => e.name)")
        assert "reconnect" in events, events
        print(f"watch page playing on {other} {took:.2f} s after {first} was killed")
    finally:
        await stop_player(page, http, gw, "page")
        await publisher.stop()
        for process, name in ((nodes[1], "e1"), (nodes[2], "e2")):
            if not process.running():
                process.start()
                await wait_healthy(gw, name)
