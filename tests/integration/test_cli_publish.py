"""``whip-gateway publish`` as a user runs it: a subprocess against a real gateway and Janus.

The subprocess inherits the test's private network namespace, so it reaches
the gateway at 127.0.0.1 and Janus over the sandbox interface.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from tests.conftest import GatewayFactory, Leaks, RunningGateway
from tests.publishers import wait_for_janus_packets

ROOT = Path(__file__).resolve().parents[2]


async def start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process, timeout: float = 30) -> tuple[str, str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return out.decode(), err.decode()


async def stream(http: httpx.AsyncClient, gw: RunningGateway, name: str) -> dict[str, Any] | None:
    return (await http.get(f"{gw.url}/api/streams")).json()["streams"].get(name)


async def until_stream(http: httpx.AsyncClient, gw: RunningGateway, name: str, *, gone: bool = False,
                       timeout: float = 10) -> dict[str, Any] | None:
    """Poll /api/streams until ``name`` is live (or, with ``gone``, absent)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await stream(http, gw, name)
        if (state is None) if gone else (state is not None and state["live"]):
            return state
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"stream {name}: still {state}")
        await asyncio.sleep(0.1)


def progress_frames(out: str, kind: str) -> list[int]:
    return [int(m) for m in re.findall(rf"{kind} (\d+) frames", out)]


async def test_publish_test_pattern_goes_live_then_away(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    proc = await start_cli("publish", gateway.whip("clicam"), "--test-pattern", "--duration", "4")
    try:
        state = await until_stream(http, gateway, "clicam")
        assert state and state["live"]
        seen = await wait_for_janus_packets(leaks.admin, {"audio", "video"})
        assert seen["codecs"]["audio"] == "opus"
    finally:
        out, err = await finish(proc)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"publishing to {gateway.whip('clicam')}/"), out
    progress = [line for line in lines if line.lstrip()[:1].isdigit()]
    assert len(progress) >= 3, out  # one line a second for about four seconds
    assert any("connected" in line for line in progress), out
    assert re.search(r"video \d+ frames +\d+ kbit/s", progress[-1]), progress[-1]
    video = progress_frames(out, "video")
    assert video == sorted(video) and video[-1] >= 60, f"about 30 frames a second: {out}"
    assert re.match(r"stopped after [\d.]+s: audio \d+ frames, video \d+ frames sent", lines[-1]), out
    # the DELETE on exit took the stream away
    await until_stream(http, gateway, "clicam", gone=True)


async def test_publish_file_as_h264(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, seconds=1)  # shorter than the run: the player loops it
    proc = await start_cli("publish", gateway.whip("filecam"), "--file", str(clip),
                           "--codec", "h264", "--duration", "4")
    try:
        await until_stream(http, gateway, "filecam")
        seen = await wait_for_janus_packets(leaks.admin, {"audio", "video"})
        assert seen["codecs"] == {"audio": "opus", "video": "h264"}
    finally:
        out, err = await finish(proc)
    assert proc.returncode == 0, err
    assert progress_frames(out, "video")[-1] > 30, "the 1 s clip kept playing: it loops"
    await until_stream(http, gateway, "filecam", gone=True)


@pytest.mark.parametrize("token,status", [(None, "401"), ("wrong", "40")])
async def test_publish_refused_is_one_line(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, token: str | None, status: str
) -> None:
    gw = await start_gateway(stream_keys={"locked": "s3cret"})
    args = ["publish", gw.whip("locked"), "--test-pattern", "--duration", "2"]
    if token:
        args += ["--token", token]
    out, err = await finish(await start_cli(*args))
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"whip-gateway: POST {gw.whip('locked')}: {status}"), lines[0]
    assert await stream(http, gw, "locked") is None


async def test_publish_missing_file_and_unreachable_server(tmp_path: Path) -> None:
    for args in (["--file", str(tmp_path / "nope.mp4")], ["--test-pattern"]):
        proc = await start_cli("publish", "http://127.0.0.1:9/whip/x", *args)
        out, err = await finish(proc)
        assert proc.returncode == 1
        assert len(err.strip().splitlines()) == 1 and err.startswith("whip-gateway: "), err


def write_clip(path: Path, seconds: float) -> None:
    """A small H.264 + AAC file: moving bars and a tone."""
    fps, rate = 30, 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = container.add_stream("aac", rate=rate)
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame(320, 240, "yuv420p")
            shift = i * 4 % 320
            row = bytes(((x + shift) // 40 % 8) * 32 for x in range(320))
            frame.planes[0].update(row.ljust(frame.planes[0].line_size, b"\0") * 240)
            for plane in frame.planes[1:]:
                plane.update(bytes([128]) * (plane.line_size * plane.height))
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        samples = 1024
        for i in range(int(seconds * rate / samples)):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=samples)
            for plane in frame.planes:
                plane.update(bytes(4 * samples))
            frame.sample_rate = rate
            frame.pts = i * samples
            for packet in audio.encode(frame):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


async def test_ctrl_c_deletes_the_session(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    proc = await start_cli("publish", gateway.whip("sigcam"), "--test-pattern")
    try:
        await until_stream(http, gateway, "sigcam")
        proc.send_signal(signal.SIGINT)
    finally:
        out, err = await finish(proc, timeout=15)
    assert proc.returncode == 0, err
    assert out.splitlines()[-1].startswith("stopped after "), out
    await until_stream(http, gateway, "sigcam", gone=True)
