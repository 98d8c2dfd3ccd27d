"""Recording (issue 10) with a real Janus 1.1.2 and a real janus-pp-rec.

An aiortc publisher sends H.264 or VP8 with Opus through the gateway; when
its WHIP session ends the recording must become one file that PyAV decodes
at the publisher's size, with about as much audio and video as was sent,
served by the operator API (with Range).  Damaged raw files and a crash
left behind ("processing" at start) must give ``failed`` with the raw
files kept.  The ``start_gateway`` fixture checks Janus holds nothing after.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
import standardwebhooks

from gateway.clients.whip import WhipSession
from tests.conftest import GatewayFactory, RunningGateway
from tests.publishers import aiortc_publisher, answer, wait_connected
from tests.webhook_receiver import Receiver

TOKEN = "recording-operator-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOOK_SECRET = "whsec_" + base64.b64encode(b"recording-webhook-secret-24b").decode()

pytestmark = pytest.mark.skipif(shutil.which("janus-pp-rec") is None,
                                reason="janus-pp-rec missing (Debian package janus-tools)")


async def recording_gateway(start_gateway: GatewayFactory, folder: Path, **more: Any) -> RunningGateway:
    return await start_gateway(admin_token=TOKEN, record=["*"], recordings_dir=folder,
                               recordings_min_free_mb=0, public_listing="details", **more)


async def recordings(http: httpx.AsyncClient, gw: RunningGateway) -> list[dict[str, Any]]:
    response = await http.get(f"{gw.url}/api/recordings", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()["recordings"]


async def wait_recordings(http: httpx.AsyncClient, gw: RunningGateway, count: int,
                          states: set[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the API (what an operator does) until ``count`` records are in ``states``."""
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await recordings(http, gw)
        if len(found) == count and all(r["state"] in states for r in found):
            return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"recordings never reached {states}: {found}")


async def publish(http: httpx.AsyncClient, gw: RunningGateway, stream: str, codec: str,
                  seconds: float, during: Any = None) -> float:
    """Publish for ``seconds`` after the stream went live, then DELETE; returns the live time."""
    pc = await aiortc_publisher(video_codec=codec)
    whip = WhipSession(gw.whip(stream), http=http)
    try:
        response = await whip.post_offer(pc.localDescription.sdp)
        assert response.status_code == 201, response.text
        await answer(pc, whip)
        await wait_connected(pc)
        live = await wait_live(http, gw, stream)
        if during is not None:
            await during()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - live)))
        gone = await whip.delete()
        assert gone.status_code == 200
        return time.monotonic() - live
    finally:
        await pc.close()


async def wait_live(http: httpx.AsyncClient, gw: RunningGateway, stream: str) -> float:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = (await http.get(f"{gw.url}/api/streams")).json()["streams"].get(stream)
        if state and state["live"]:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"stream {stream} never went live")


def decode(path: Path) -> dict[str, Any]:
    """Decode every frame of the produced file: size, and seconds of audio and video."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames, sizes, vts = 0, set(), []
        samples, rate = 0, audio.codec_context.sample_rate or 48000
        first_audio = None
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                frames += 1
                sizes.add((frame.width, frame.height))
                vts.append(float(frame.pts * frame.time_base))
            else:
                if first_audio is None and frame.pts is not None:
                    first_audio = float(frame.pts * frame.time_base)
                samples += frame.samples
        return {"format": container.format.name, "video_codec": video.codec_context.name,
                "audio_codec": audio.codec_context.name, "frames": frames, "sizes": sizes,
                "video_s": max(vts) - min(vts) if vts else 0.0, "audio_s": samples / rate,
                "start_gap_s": abs((first_audio or 0.0) - (min(vts) if vts else 0.0))}


@pytest.mark.parametrize("codec,container,video_codec", [
    ("video/H264", "mp4", "h264"), ("video/VP8", "webm", "vp8")])
async def test_session_ends_as_one_playable_file(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, tmp_path: Path,
    codec: str, container: str, video_codec: str,
) -> None:
    gw = await recording_gateway(start_gateway, tmp_path / "rec")
    seen_recording: list[dict[str, Any]] = []

    async def look() -> None:
        seen_recording.extend(await recordings(http, gw))

    sent = await publish(http, gw, "webinar", codec, 10.0, during=look)
    assert [r["state"] for r in seen_recording] == ["recording"], "listed while it records"
    [record] = await wait_recordings(http, gw, 1, {"ready", "failed"})
    assert record["state"] == "ready", record
    assert record["stream"] == "webinar" and record["container"] == container
    assert record["codecs"] == {"audio": "opus", "video": video_codec}
    assert (record["width"], record["height"]) == (320, 240)
    assert abs(record["duration_s"] - sent) < 1.5, (record["duration_s"], sent)

    media = await http.get(f"{gw.url}{record['media']}", headers=AUTH)
    assert media.status_code == 200
    assert media.headers["content-type"] == f"video/{container}"
    assert int(media.headers["content-length"]) == record["size"] == len(media.content)
    out = tmp_path / f"download.{container}"
    out.write_bytes(media.content)
    decoded = decode(out)
    print(f"\n{codec}: sent {sent:.2f} s, record {record}, decoded {decoded}")
    assert decoded["sizes"] == {(320, 240)}
    assert decoded["video_codec"] == video_codec and decoded["audio_codec"] == "opus"
    assert abs(decoded["video_s"] - sent) < 1.5 and abs(decoded["audio_s"] - sent) < 1.5
    assert decoded["frames"] > 10 * 15, "most of the 30 fps arrived"
    assert decoded["start_gap_s"] < 0.5, "audio and video start together"
    folder = tmp_path / "rec" / record["id"]
    assert not list(folder.glob("*.mjr")), "raw files go once the file is ready"

    # Range: what a browser's <video> asks to seek.
    part = await http.get(f"{gw.url}{record['media']}", headers={**AUTH, "Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-299/{record['size']}"
    assert part.content == media.content[100:300]
    tail = await http.get(f"{gw.url}{record['media']}", headers={**AUTH, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == media.content[-10:]
    beyond = await http.get(f"{gw.url}{record['media']}",
                            headers={**AUTH, "Range": f"bytes={record['size']}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{record['size']}"
    assert beyond.headers["content-type"].startswith("application/problem+json")

    # The record alone, then gone for good.
    one = await http.get(f"{gw.url}/api/recordings/{record['id']}", headers=AUTH)
    assert one.status_code == 200 and one.json()["id"] == record["id"]
    assert (await http.delete(f"{gw.url}/api/recordings/{record['id']}", headers=AUTH)).status_code == 204
    assert (await http.get(f"{gw.url}/api/recordings/{record['id']}", headers=AUTH)).status_code == 404
    assert not folder.exists()
    index = json.loads((tmp_path / "rec" / "index.json").read_text())
    assert index == {"recordings": []}


async def test_reconnect_gives_two_recordings_and_api_needs_the_token(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    receiver = Receiver()
    hook_url = await receiver.start()
    try:
        gw = await recording_gateway(start_gateway, tmp_path / "rec", webhooks=[
            {"url": hook_url, "secret": HOOK_SECRET, "events": ["recording.ready"]}])
        await publish(http, gw, "talk", "video/VP8", 2.0)
        await publish(http, gw, "talk", "video/VP8", 2.0)
        records = await wait_recordings(http, gw, 2, {"ready", "failed"})
        assert [r["state"] for r in records] == ["ready", "ready"], records
        # Each finished recording is announced, signed (Standard Webhooks).
        got = await receiver.wait_for(lambda r: len(r) == 2)
    finally:
        await receiver.stop()
    announced = [standardwebhooks.Webhook(HOOK_SECRET).verify(r.body, r.headers) for r in got]
    assert {(a["type"], a["data"]["id"]) for a in announced} == {
        ("recording.ready", r["id"]) for r in records}
    assert len({r["id"] for r in records}) == 2 and {r["stream"] for r in records} == {"talk"}
    for record in records:
        decoded = decode(tmp_path / "rec" / record["id"] / record["file"])
        assert decoded["frames"] > 0 and decoded["audio_s"] > 1.0

    url = f"{gw.url}/api/recordings"
    assert (await http.get(url)).status_code == 401
    assert (await http.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"})).status_code == 403
    assert (await http.get(f"{url}/nope", headers=AUTH)).status_code == 404

    # The recorded streams, through the API: off for "talk" means no new recording.
    put = await http.put(f"{gw.url}/api/record", headers=AUTH, json={"record": ["other"]})
    assert put.status_code == 200 and put.json() == {"record": ["other"]}
    bad = await http.put(f"{gw.url}/api/record", headers=AUTH, json={"record": ["no/slash"]})
    assert bad.status_code == 400
    await publish(http, gw, "talk", "video/VP8", 0.5)
    await gw.app.state.ingest.settled()
    assert len(await recordings(http, gw)) == 2


async def test_damaged_raw_files_give_a_failed_recording_that_keeps_them(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    receiver = Receiver()
    hook_url = await receiver.start()
    gw = await recording_gateway(start_gateway, tmp_path / "rec", webhooks=[
        {"url": hook_url, "secret": HOOK_SECRET, "events": ["recording.failed"]}])

    async def damage() -> None:
        [record] = await recordings(http, gw)
        folder = tmp_path / "rec" / record["id"]
        # Janus writes through a stdio buffer: once a file is past a few buffers
        # on disk, its start is flushed and will not be written again.
        deadline = time.monotonic() + 10
        while not (len(files := list(folder.glob("*.mjr"))) == 2
                   and all(f.stat().st_size > 16384 for f in files)):
            assert time.monotonic() < deadline, [f.stat().st_size for f in files]
            await asyncio.sleep(0.1)
        for mjr in files:
            with mjr.open("r+b") as f:  # Janus appends on its own file offset
                f.write(b"\0" * 8)

    await publish(http, gw, "broken", "video/H264", 0.0, during=damage)
    [record] = await wait_recordings(http, gw, 1, {"ready", "failed"})
    assert record["state"] == "failed" and "not a Janus recording" in record["error"], record
    assert len(list((tmp_path / "rec" / record["id"]).glob("*.mjr"))) == 2, "raw files kept"
    try:
        [failed] = await receiver.wait_for(lambda r: len(r) == 1)
    finally:
        await receiver.stop()
    announced = standardwebhooks.Webhook(HOOK_SECRET).verify(failed.body, failed.headers)
    assert announced["type"] == "recording.failed" and announced["data"]["id"] == record["id"]
    media = await http.get(f"{gw.url}/api/recordings/{record['id']}/media", headers=AUTH)
    assert media.status_code == 409 and "failed" in media.json()["detail"]


async def test_recording_left_processing_at_start_is_marked_failed(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, tmp_path: Path,
) -> None:
    """What a crash during a conversion leaves: index says processing, raw files there."""
    folder = tmp_path / "rec"
    (folder / "20261207-120000-abcdef").mkdir(parents=True)
    (folder / "20261207-120000-abcdef" / "x-video-1.mjr").write_bytes(b"MJR00002")
    (folder / "index.json").write_text(json.dumps({"recordings": [
        {"id": "20261207-120000-abcdef", "stream": "cam", "state": "processing",
         "started_at": 1.0e9, "ended_at": 1.0e9 + 60, "progress": 0.4, "step": "muxing"}]}))
    gw = await recording_gateway(start_gateway, folder)
    [record] = await recordings(http, gw)
    assert record["state"] == "failed" and "processing" in record["error"]
    assert "progress" not in record
    assert (folder / "20261207-120000-abcdef" / "x-video-1.mjr").exists()
    assert json.loads((folder / "index.json").read_text())["recordings"][0]["state"] == "failed"


async def test_below_the_free_space_floor_publishing_goes_on_unrecorded(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await start_gateway(admin_token=TOKEN, record=["*"], recordings_dir=tmp_path / "rec",
                             recordings_min_free_mb=1 << 40, public_listing="details")
    with caplog.at_level("WARNING", logger="gateway.core.recordings"):
        await publish(http, gw, "full", "video/VP8", 0.5)  # went live: publishing went on
    await gw.app.state.ingest.settled()
    assert await recordings(http, gw) == []
    assert "not recording stream full" in caplog.text
    assert not [p for p in (tmp_path / "rec").iterdir() if p.is_dir()], "no recording folder"
