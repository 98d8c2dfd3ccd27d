"""``whip-gateway play`` as a user runs it, and the WHEP client library under it,
against the gateway's WHEP endpoint on a real Janus 1.1.2.

The publisher is an in-process aiortc peer (test pattern 320x240 and a tone);
the player is a subprocess in the same private network namespace.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import AsyncIterator

import av
import httpx
import pytest

from gateway.clients.whep import SSE_REL, play
from gateway.clients.whip import WhipSession
from tests.conftest import RunningGateway
from tests.integration.test_cli_publish import finish, start_cli, stream
from tests.publishers import aiortc_publisher, answer, wait_connected


@pytest.fixture
async def publisher(gateway: RunningGateway, http: httpx.AsyncClient) -> AsyncIterator[WhipSession]:
    pc = await aiortc_publisher(video_codec="video/VP8")
    whip = WhipSession(gateway.whip("show"), http=http)
    response = await whip.post_offer(pc.localDescription.sdp)
    assert response.status_code == 201, response.text
    await answer(pc, whip)
    await wait_connected(pc)
    deadline = asyncio.get_running_loop().time() + 10
    while not ((await stream(http, gateway, "show")) or {}).get("live"):
        assert asyncio.get_running_loop().time() < deadline, "the publisher never went live"
        await asyncio.sleep(0.1)
    yield whip
    await whip.delete()
    await pc.close()


async def viewers(http: httpx.AsyncClient, gw: RunningGateway) -> int:
    return int(((await stream(http, gw, "show")) or {}).get("viewers", 0))


async def until_viewers(http: httpx.AsyncClient, gw: RunningGateway, count: int,
                        timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while await viewers(http, gw) != count:
        assert asyncio.get_running_loop().time() < deadline, f"viewers never became {count}"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("mode", [[], ["--counter-offer"]], ids=["offer", "counter-offer"])
async def test_play_decodes_records_and_leaves(
    gateway: RunningGateway, publisher: WhipSession, http: httpx.AsyncClient, tmp_path: Path,
    mode: list[str],
) -> None:
    out_file = tmp_path / "out.mp4"
    proc = await start_cli("play", gateway.whep("show"), "--duration", "5", "--stats",
                           "--record", str(out_file), *mode)
    try:
        await until_viewers(http, gateway, 1)
    finally:
        out, err = await finish(proc)
    assert proc.returncode == 0, f"{out}\n{err}"
    lines = out.splitlines()
    assert lines[0].startswith(f"playing {gateway.whep('show')}/"), out
    assert re.search(r"video \d+ frames 320x240", out), out
    assert re.search(r"inbound-rtp video: ssrc=\d+ packets=[1-9]\d*", out), out
    assert re.search(r"inbound-rtp audio: ssrc=\d+ packets=[1-9]\d*", out), out
    last = lines[-1]
    match = re.match(r"stopped after [\d.]+s: video (\d+) frames \(320x240\), audio (\d+) frames, "
                     r"(\d+) bytes received, recorded to ", last)
    assert match, last
    video, audio, received = map(int, match.groups())
    assert video >= 30 and audio >= 50 and received > 10_000, last

    with av.open(str(out_file)) as container:
        assert {s.type for s in container.streams} == {"audio", "video"}
        decoded = list(container.decode(video=0))
        assert len(decoded) >= 20 and (decoded[0].width, decoded[0].height) == (320, 240)

    await until_viewers(http, gateway, 0)  # the DELETE on exit
    await gateway.app.state.egress.settled()


async def test_play_without_publisher_is_one_line(gateway: RunningGateway) -> None:
    proc = await start_cli("play", gateway.whep("nobody"), "--duration", "2")
    out, err = await finish(proc)
    assert proc.returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"whip-gateway: POST {gateway.whep('nobody')}: 409 Conflict: "), lines[0]
    assert "(retry after " in lines[0]


async def test_play_api_with_server_sent_events(
    gateway: RunningGateway, publisher: WhipSession, http: httpx.AsyncClient
) -> None:
    """The library: play(), the SSE extension through the client's own parser, DELETE."""
    pc, session, counter = await play(gateway.whep("show"))
    try:
        assert session.etag and session.location
        assert "viewercount" in session.advertised_events
        await counter.wait_first_frame(timeout=15)
        response = await session.subscribe(["active", "viewercount"])
        assert response.status_code == 201, response.text
        assert session.events_location and session.events_location.startswith(session.links[SSE_REL]["url"])
        seen: list[tuple[str, dict]] = []

        async def read() -> None:
            async for item in session.events(reconnect=False):
                seen.append(item)
                if len(seen) == 2:
                    return

        await asyncio.wait_for(read(), 10)
        assert seen == [("active", {}), ("viewercount", {"viewercount": 1})]
        assert (await session.unsubscribe()).status_code == 200
    finally:
        await counter.stop()
        deleted = await session.delete()
        await pc.close()
        await session.aclose()
    assert deleted.status_code == 200
    assert counter.video_frames > 0 and (counter.width, counter.height) == (320, 240)
    await until_viewers(http, gateway, 0)
    await gateway.app.state.egress.settled()
