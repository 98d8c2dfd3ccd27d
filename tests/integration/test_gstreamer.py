"""GStreamer's simple-whip-client as a second, independent WHIP publisher.

Debian's ``simple-whip-client`` (``/usr/bin/whip-client``, Meetecho) builds
a ``webrtcbin`` from the ``-A``/``-V`` pipelines, POSTs the offer with
``Authorization: Bearer <-t>``, then either PATCHes its candidates
(``application/trickle-ice-sdpfrag``, batched every 100 ms, with
``If-Match: <ETag>``) or, with ``-n``, waits for gathering and puts them in
the offer.  On SIGINT/SIGTERM it sends DELETE (again with If-Match) from its
signal handler and exits.

Debian 12 ships the client broken: it links libsoup 2.4, while the
installed libnice links gupnp-igd 1.6, which pulls in libsoup 3, and libsoup
3 aborts the process ("libsoup2 symbols detected ...") as soon as webrtcbin
loads the nice plugin.  libnice only needs gupnp-igd for UPnP port mapping,
which no test wants, and copes with ``gupnp_simple_igd_thread_new()``
returning NULL.  So when the installed libraries have that clash, the tests
compile a four-function stand-in for ``libgupnp-igd-1.0.so.4`` and put it
first on the client's LD_LIBRARY_PATH; nothing else about the client or
GStreamer changes.

Each test checks what the gateway says (``/api/streams``), what Janus itself
counted (per-publisher packet counters over the admin API), the HTTP the
client sent (recorded at the app's ASGI edge), and that the client's DELETE
ends the stream, or, when the client is SIGKILLed, the gateway's media
timeout; the ``start_gateway`` fixture then checks that nothing is left in
Janus.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory, Leaks, RunningGateway
from tests.publishers import janus_publishers, wait_for_janus_packets

WHIP_CLIENT = "/usr/bin/whip-client"
STREAM = "gst"
KEY = "secret"
WAIT = 10.0  # bound for every wait below

pytestmark = pytest.mark.skipif(
    not os.access(WHIP_CLIENT, os.X_OK),
    reason=f"{WHIP_CLIENT} is missing (Debian package simple-whip-client)",
)

# The client's README pipelines, with a small fixed raw video format so the
# encoder keeps up, and the RTP caps webrtcbin needs to write the m-lines.
AUDIO_OPUS = (
    "audiotestsrc is-live=true wave=red-noise ! audioconvert ! audioresample ! queue ! "
    "opusenc ! rtpopuspay pt=100 ssrc=1 ! queue ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=100"
)
RAW_VIDEO = (
    "videotestsrc is-live=true pattern=ball ! "
    "video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue"
)
VIDEO_VP8 = (
    f"{RAW_VIDEO} ! vp8enc deadline=1 ! rtpvp8pay pt=96 ssrc=2 ! queue ! "
    "application/x-rtp,media=video,encoding-name=VP8,payload=96"
)
H264_ENCODERS = {
    "x264enc": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 bframes=0",
    "openh264enc": "openh264enc complexity=low gop-size=30",
}
VIDEO_H264 = (
    "{raw} ! {encoder} ! video/x-h264,profile=constrained-baseline ! h264parse ! "
    "rtph264pay pt=97 ssrc=2 config-interval=-1 aggregate-mode=zero-latency ! queue ! "
    "application/x-rtp,media=video,encoding-name=H264,payload=97"
)


# Stand-in for libgupnp-igd-1.0.so.4: exactly the symbols libnice imports.
# A NULL "thread" makes libnice skip UPnP ("Error creating UPnP Simple IGD agent").
UPNP_STUB_C = """
#include <stddef.h>
void *gupnp_simple_igd_thread_new(void) { return NULL; }
unsigned long gupnp_simple_igd_get_type(void) { return 0; }
void gupnp_simple_igd_add_port(void *igd, const char *proto, unsigned ext_port,
    const char *ip, unsigned port, unsigned timeout, const char *desc) {}
void gupnp_simple_igd_remove_port_local(void *igd, const char *proto,
    const char *ip, unsigned port) {}
"""
UPNP_SONAME = "libgupnp-igd-1.0.so.4"


def _linked(path: str) -> str:
    if not path or not os.path.exists(path):
        return ""
    return subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout


def _gst_plugin_file(plugin: str) -> str:
    if shutil.which("gst-inspect-1.0") is None:
        return ""
    out = subprocess.run(["gst-inspect-1.0", plugin], capture_output=True, text=True,
                         timeout=30).stdout
    for line in out.splitlines():
        if line.strip().startswith("Filename"):
            return line.split(None, 1)[1].strip()
    return ""


def _soup_clash() -> bool:
    """The client links libsoup 2.4 and the nice plugin drags in libsoup 3."""
    nice = _linked(_gst_plugin_file("nice"))
    return "libsoup-2.4" in _linked(WHIP_CLIENT) and "libsoup-3" in nice and UPNP_SONAME in nice


@pytest.fixture(scope="module")
def client_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for whip-client runs, with the UPnP stand-in if needed."""
    env = dict(os.environ, GST_DEBUG=os.environ.get("GST_DEBUG", "1"), GST_DEBUG_NO_COLOR="1")
    if not _soup_clash():
        return env
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("whip-client aborts on the libsoup2/libsoup3 clash here and no C "
                    "compiler is available to build the libgupnp-igd stand-in")
    folder = tmp_path_factory.mktemp("upnp-stub")
    (folder / "stub.c").write_text(UPNP_STUB_C)
    subprocess.run([cc, "-shared", "-fPIC", f"-Wl,-soname,{UPNP_SONAME}",
                    "-o", str(folder / UPNP_SONAME), str(folder / "stub.c")],
                   check=True, capture_output=True, timeout=60)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(folder), os.environ.get("LD_LIBRARY_PATH")) if p)
    return env


def _gst_has(element: str) -> bool:
    if shutil.which("gst-inspect-1.0") is None:
        return False
    return subprocess.run(["gst-inspect-1.0", "--exists", element],
                          capture_output=True, timeout=30).returncode == 0


def _h264_encoder() -> str | None:
    for element, pipeline in H264_ENCODERS.items():
        if _gst_has(element):
            return pipeline
    return None


@dataclass
class WhipClientProcess:
    """A running whip-client and everything it printed."""

    proc: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, env: dict[str, str], *args: str) -> WhipClientProcess:
        # g_print goes through stdio: line-buffer it so nothing is lost on a kill.
        prefix = ["stdbuf", "-oL", "-eL"] if shutil.which("stdbuf") else []
        proc = await asyncio.create_subprocess_exec(
            *prefix, WHIP_CLIENT, "-o", "-l", "5", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
        )
        client = cls(proc)
        client.reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.output.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.output)

    def context(self, what: str) -> str:
        tail = "\n".join(self.output[-150:])
        return f"{what}\n--- whip-client output (exit {self.proc.returncode}) ---\n{tail}"

    async def stop(self, signum: int, timeout: float = WAIT) -> int:
        """Signal the client and wait for it to exit on its own."""
        if self.proc.returncode is None:
            self.proc.send_signal(signum)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(self.context(f"whip-client did not exit {timeout} s after {signum!r}"))

    async def kill(self) -> None:
        """Always called in ``finally``: no client outlives its test."""
        if self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.wait_for(self.proc.wait(), WAIT)
        if self.reader is not None:
            try:
                await asyncio.wait_for(self.reader, WAIT)
            except asyncio.TimeoutError:
                self.reader.cancel()


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    status: int = 0


class RequestLog:
    """What the client sent the gateway over HTTP, seen at the ASGI edge."""

    def __init__(self, app: Any) -> None:
        self.exchanges: list[Exchange] = []
        self._inner = app.middleware_stack
        assert self._inner is not None, "the gateway app has not started"
        app.middleware_stack = self

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/whip/"):
            await self._inner(scope, receive, send)
            return
        ex = Exchange(scope["method"], scope["path"],
                      {k.decode().lower(): v.decode() for k, v in scope["headers"]})
        self.exchanges.append(ex)

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                ex.body += message.get("body", b"")
            return message

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                ex.status = message["status"]
            await send(message)

        await self._inner(scope, recording_receive, recording_send)

    def of(self, method: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == method]

    def summary(self) -> str:
        return "\n".join(
            f"{e.method} {e.path} -> {e.status} content-type={e.headers.get('content-type')} "
            f"if-match={e.headers.get('if-match')} body={e.body[:300]!r}"
            for e in self.exchanges)


async def _streams(gw: RunningGateway) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        reply = await http.get(f"{gw.url}/api/streams")
    reply.raise_for_status()
    return reply.json()["streams"]  # type: ignore[no-any-return]


async def _wait_streams(gw: RunningGateway, client: WhipClientProcess, want_live: bool) -> dict[str, Any]:
    """Poll /api/streams until STREAM is live (or gone), for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    streams: dict[str, Any] = {}
    while time.monotonic() < deadline:
        streams = await _streams(gw)
        entry = streams.get(STREAM)
        if want_live and entry is not None and entry["live"]:
            return streams
        if not want_live and entry is None:
            return streams
        if want_live and client.proc.returncode is not None:
            break  # the client gave up; no point in waiting
        await asyncio.sleep(0.1)
    what = "live" if want_live else "gone"
    raise AssertionError(client.context(f"stream {STREAM!r} not {what} within {WAIT} s: {streams}"))


@dataclass
class LivePublish:
    gw: RunningGateway
    client: WhipClientProcess
    http: RequestLog
    session: Any  # the gateway's PublisherSession, to read end_reason later

    def context(self, what: str) -> str:
        return self.client.context(f"{what}\n--- HTTP seen by the gateway ---\n{self.http.summary()}")


async def _go_live(start_gateway: GatewayFactory, leaks: Leaks, env: dict[str, str], *,
                   video: str, video_codec: str, trickle: bool,
                   running: list[WhipClientProcess]) -> LivePublish:
    """Start a gateway and the client; return once the gateway and Janus both see media."""
    gw = await start_gateway(stream_keys={STREAM: KEY}, publisher_media_timeout=2,
                             public_listing="details")
    http = RequestLog(gw.app)
    args = ["-u", gw.whip(STREAM), "-t", KEY, "-A", AUDIO_OPUS, "-V", video]
    if not trickle:
        args.append("-n")
    client = await WhipClientProcess.start(env, *args)
    running.append(client)
    streams = await _wait_streams(gw, client, want_live=True)
    live = LivePublish(gw, client, http, gw.app.state.ingest.registry.publisher_of(STREAM))
    assert live.session is not None

    posts = http.of("POST")
    assert len(posts) == 1 and posts[0].status == 201, live.context("expected one POST, answered 201")
    assert posts[0].headers.get("content-type") == "application/sdp", live.context("POST Content-Type")
    assert posts[0].headers.get("authorization") == f"Bearer {KEY}", live.context("POST Authorization")
    offered = live.session.offer.candidates
    if trickle:
        assert offered == [], live.context(f"trickle mode, yet the offer carried {offered}")
    else:
        assert offered, live.context("-n, yet the offer carried no candidates")

    try:
        janus = await wait_for_janus_packets(leaks.admin, {"audio", "video"}, timeout=WAIT)
    except AssertionError as exc:
        raise AssertionError(live.context(str(exc))) from None
    sent = {"audio": "opus", "video": video_codec}
    assert janus["codecs"] == sent, live.context(f"Janus reports {janus}")
    assert streams[STREAM]["publisher"]["codecs"] == sent, live.context(f"/api/streams: {streams}")

    patches = http.of("PATCH")
    if trickle:
        # The client batches candidates every 100 ms; media can flow (from
        # peer-reflexive checks) before its PATCH lands, so give it a moment.
        deadline = asyncio.get_running_loop().time() + 5
        while not patches and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            patches = http.of("PATCH")
        assert patches, live.context("the client trickled nothing")
        for patch in patches:
            assert patch.status == 204, live.context("a trickle PATCH was refused")
            assert patch.headers.get("content-type") == "application/trickle-ice-sdpfrag", \
                live.context("PATCH Content-Type")
            assert patch.headers.get("if-match") == live.session.etag, live.context("PATCH If-Match")
        assert any(b"a=candidate:" in p.body for p in patches), live.context("no candidate PATCHed")
        assert b"a=end-of-candidates" in patches[-1].body, live.context("no end-of-candidates")
    else:
        assert patches == [], live.context("-n, yet the client PATCHed")
    assert "[trickle]" not in client.log, live.context("the client logged a failed trickle")
    return live


async def _cleanup(gw: RunningGateway | None, running: list[WhipClientProcess]) -> None:
    """Kill the client whatever happened; on a failure, let the media timeout
    end what it published so the fixture's leak check reports the real leak."""
    for client in running:
        await client.kill()
    if gw is not None:
        deadline = time.monotonic() + WAIT
        while gw.app.state.ingest.registry.sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)


async def _publish_and_delete(start_gateway: GatewayFactory, leaks: Leaks, env: dict[str, str], *,
                              video: str, video_codec: str, trickle: bool,
                              stop_signal: int = signal.SIGINT) -> None:
    running: list[WhipClientProcess] = []
    live: LivePublish | None = None
    try:
        live = await _go_live(start_gateway, leaks, env, video=video, video_codec=video_codec,
                              trickle=trickle, running=running)
        code = await live.client.stop(stop_signal)
        await _wait_streams(live.gw, live.client, want_live=False)
        deletes = live.http.of("DELETE")
        assert len(deletes) == 1 and deletes[0].status == 200, live.context("expected one DELETE, 200")
        assert deletes[0].headers.get("authorization") == f"Bearer {KEY}", live.context("DELETE auth")
        assert live.session.end_reason == "DELETE by the client", \
            live.context(f"ended by {live.session.end_reason!r}, not by the client's DELETE")
        assert code == 0, live.context("whip-client exited with an error")
        assert "[WARN]" not in live.client.log and "[ERR]" not in live.client.log, \
            live.context("whip-client warned")
        assert await janus_publishers(leaks.admin) == []
    finally:
        await _cleanup(live.gw if live else None, running)


@pytest.mark.parametrize("trickle", [True, False], ids=["trickle", "no-trickle"])
async def test_whip_client_vp8_opus(start_gateway: GatewayFactory, leaks: Leaks,
                                   client_env: dict[str, str], trickle: bool) -> None:
    """-A opus -V vp8, trickled over PATCH or (-n) in the offer; SIGINT sends DELETE."""
    await _publish_and_delete(start_gateway, leaks, client_env, video=VIDEO_VP8,
                              video_codec="vp8", trickle=trickle)


async def test_whip_client_h264_opus(start_gateway: GatewayFactory, leaks: Leaks,
                                     client_env: dict[str, str]) -> None:
    """H.264 (x264enc, else openh264enc); SIGTERM, as a service manager stops it."""
    encoder = _h264_encoder()
    if encoder is None:
        pytest.skip("neither x264enc nor openh264enc is installed")
    video = VIDEO_H264.format(raw=RAW_VIDEO, encoder=encoder)
    await _publish_and_delete(start_gateway, leaks, client_env, video=video, video_codec="h264",
                              trickle=True, stop_signal=signal.SIGTERM)


async def test_whip_client_killed_is_ended_by_media_timeout(
        start_gateway: GatewayFactory, leaks: Leaks, client_env: dict[str, str]) -> None:
    """SIGKILL: no DELETE, so the gateway's media timeout (2 s here) must end the stream."""
    running: list[WhipClientProcess] = []
    live: LivePublish | None = None
    try:
        live = await _go_live(start_gateway, leaks, client_env, video=VIDEO_VP8,
                              video_codec="vp8", trickle=True, running=running)
        await live.client.kill()
        await _wait_streams(live.gw, live.client, want_live=False)
        assert live.http.of("DELETE") == [], live.context("a killed client cannot DELETE")
        assert live.session.end_reason == "media stopped", \
            live.context(f"ended by {live.session.end_reason!r}, not by the media timeout")
        assert await janus_publishers(leaks.admin) == []
    finally:
        await _cleanup(live.gw if live else None, running)


async def test_whip_client_wrong_key_is_refused(start_gateway: GatewayFactory, leaks: Leaks,
                                                client_env: dict[str, str]) -> None:
    """A wrong -t gets 403; the client gives up and exits, and nothing is left in Janus."""
    gw = await start_gateway(stream_keys={STREAM: KEY}, publisher_media_timeout=2,
                             public_listing="details")
    client = await WhipClientProcess.start(
        client_env, "-u", gw.whip(STREAM), "-t", "wrong", "-A", AUDIO_OPUS, "-V", VIDEO_VP8)
    try:
        try:
            await asyncio.wait_for(client.proc.wait(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(client.context("whip-client did not give up on a 403")) from None
        await client.kill()  # drains the output
        assert "[403]" in client.log, client.context("expected the client to report 403")
        assert await _streams(gw) == {}
        assert await janus_publishers(leaks.admin) == []
    finally:
        await client.kill()
