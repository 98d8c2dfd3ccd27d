""""OBS on another machine goes live", from the README alone.

The README's recipe is run as written: a self-signed P-256 certificate from
its ``openssl`` line, then the real ``whip-gateway serve`` (its own managed
Janus nodes, not the test fixtures') with ``--host 0.0.0.0``, HTTPS,
``--janus-rtp-ports`` and ``--janus-nat-1-1``.  Inside the test namespace the
"other machine" is the address 127.0.0.2 on ``v0``, which is also what the
NAT mapping announces.

Then an OBS-shaped publisher (session-level ICE, no candidates, one H.264
codec, no PATCH) goes live over HTTPS, a WHEP viewer decodes its frames, and
the README's curl block runs in bash with ``gw``/``key``/``tls`` pointing at
this gateway.  The gateway runs as a subprocess and is stopped with SIGTERM,
which also stops its Janus processes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import AsyncIterator, Iterator

import httpx
import pytest

from gateway.clients.whep import play
from gateway.clients.whip import WhipSession
from gateway.janus.process import free_port
from gateway.sdp import model as sdp
from tests.publishers import aiortc_publisher, answer, obs_shaped, wait_connected
from tests.sandbox import ADDRESS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RTP_PORTS = (31000, 31999)
KEY = "s3cret"


def readme_block(marker: str) -> str:
    """The fenced sh block that follows ``<!-- marker ... -->`` in the README."""
    text = README.read_text()
    start = text.index(f"<!-- {marker}")
    match = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert match, f"no sh block after the {marker} marker"
    return match.group(1)


def certificate_line() -> str:
    """The README's openssl line for a self-signed certificate."""
    text = README.read_text()
    match = re.search(r"(openssl req -x509 .*?-out cert\.pem)", text, re.S)
    assert match, "the README lost its openssl recipe"
    return match.group(1).replace("\\\n", " ")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    line = certificate_line().replace("IP:203.0.113.7", f"IP:{ADDRESS}")
    subprocess.run(["bash", "-c", line], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``whip-gateway`` on PATH, running this checkout (as the venv's script would)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "whip-gateway"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gateway.cli "$@"\n')
    script.chmod(0o755)
    return folder


@pytest.fixture
def served(tls_files: tuple[Path, Path], bin_dir: Path, tmp_path: Path) -> Iterator[str]:
    """The README's ``serve`` line (without sudo and deploy/): the gateway's base URL."""
    cert, key = tls_files
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        ["whip-gateway", "serve", "--host", "0.0.0.0", "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key),
         "--janus-rtp-ports", f"{RTP_PORTS[0]}-{RTP_PORTS[1]}", "--janus-nat-1-1", ADDRESS,
         "--stream-key", f"live={KEY}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"https://{ADDRESS}:{port}"
    context = ssl.create_default_context(cafile=str(cert))
    deadline = time.monotonic() + 30
    try:
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/streams", verify=context, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
async def https(tls_files: tuple[Path, Path]) -> AsyncIterator[httpx.AsyncClient]:
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    async with httpx.AsyncClient(verify=context, timeout=15) as client:
        yield client


async def live(https: httpx.AsyncClient, url: str, stream: str, want: bool | None) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        state = (await https.get(f"{url}/api/streams")).json()["streams"].get(stream)
        if (want is None and state is None) or (state is not None and state["live"] == want):
            return
        assert asyncio.get_running_loop().time() < deadline, f"{stream}: {state}, want live={want}"
        await asyncio.sleep(0.2)


async def test_obs_on_another_machine_goes_live_over_https(
    served: str, https: httpx.AsyncClient
) -> None:
    pc = await aiortc_publisher(video_codec="video/H264")
    whip = WhipSession(f"{served}/whip/live", KEY, http=https)
    try:
        response = await whip.post_offer(obs_shaped(pc.localDescription.sdp))
        assert response.status_code == 201, response.text
        assert response.headers["location"].startswith(f"{served}/whip/live/")
        ports = [int(c.split()[5]) for c in sdp.parse(whip.answer or "").candidates]
        assert ports and all(RTP_PORTS[0] <= p <= RTP_PORTS[1] for p in ports), whip.answer
        await answer(pc, whip)
        await wait_connected(pc)
        await live(https, served, "live", True)

        viewer, session, counter = await play(f"{served}/whep/live", http=https)
        try:
            deadline = asyncio.get_running_loop().time() + 15
            while counter.video_frames < 10:
                assert asyncio.get_running_loop().time() < deadline, counter.video_frames
                await asyncio.sleep(0.2)
        finally:
            await session.delete()
            await viewer.close()
        assert (await whip.delete()).status_code == 200
    finally:
        await pc.close()
    await live(https, served, "live", None)


async def test_the_readme_curl_block_runs(
    served: str, https: httpx.AsyncClient, bin_dir: Path, tls_files: tuple[Path, Path],
    tmp_path: Path
) -> None:
    block = readme_block("readme-curl")
    block = re.sub(r"^gw=.*$", f"gw={served}", block, flags=re.M)
    block = block.replace("--cacert cert.pem", f"--cacert {tls_files[0]}")
    work = tmp_path / "curl"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = await asyncio.to_thread(
        subprocess.run, ["bash", "-euo", "pipefail", "-c", block + '\necho "session=$session"'],
        cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    headers = (work / "headers.txt").read_text()
    assert headers.startswith("HTTP/1.1 201") or headers.startswith("HTTP/2 201"), headers
    assert "a=recvonly" in (work / "answer.sdp").read_text()
    assert f"session={served}/whip/live/" in done.stdout
    assert '"live"' in done.stdout  # /api/streams listed it before the DELETE
    await live(https, served, "live", None)


async def test_a_browser_on_another_address_publishes_over_https(
    served: str, https: httpx.AsyncClient
) -> None:
    """The camera page from a non-loopback address: a secure context only over
    HTTPS.  Chromium (the user clicked through the self-signed warning) opens
    /publish/live on the gateway's second address, enters the key, goes live."""
    playwright_api = pytest.importorskip("playwright.async_api")
    from tests.browser.firefox import NON_LOOPBACK_ADDRESS, non_loopback_address
    from tests.browser.test_pages import CHROMIUM, CHROMIUM_ARGS

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    port = served.rsplit(":", 1)[1]
    with non_loopback_address():  # 198.18.0.2 on v0: not a local address to a browser
        async with playwright_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(ignore_https_errors=True)
                page = await context.new_page()
                await page.goto(f"https://{NON_LOOPBACK_ADDRESS}:{port}/publish/live")
                assert await page.evaluate("window.isSecureContext && !!navigator.mediaDevices")
                await page.fill("#key", KEY)
                await page.click("#start")
                await page.wait_for_function("window.publisher.state === 'live'", timeout=20000)
                await live(https, served, "live", True)
                await page.click("#stop")
                await live(https, served, "live", None)
            finally:
                await browser.close()
