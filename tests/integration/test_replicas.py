"""Gateway replicas sharing their sessions in Redis (``redis_url``), on one Janus 1.1.2.

Replicas run as separate ``whip-gateway serve`` processes, so one can be
killed with SIGKILL mid-stream, as a crash would.  What a user sees is
asserted (statuses, decoded frames) and Janus's admin API says what is
left.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from gateway.clients.whip import WhipSession
from gateway.janus.process import ManagedJanus, free_port
from gateway.janus.reaper import pooled_session
from gateway.sdp import model as sdp
from tests.conftest import Leaks, RunningGateway, janus_settings
from tests.integration.test_whep import read_events, watch
from tests.integration.test_whip import wait_stream
from tests.publishers import aiortc_publisher, answer, wait_connected
from tests.viewers import aiortc_viewer

SDPFRAG = "application/trickle-ice-sdpfrag"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    url: str

    @property
    def gw(self) -> RunningGateway:
        return RunningGateway(url=self.url, settings=None, app=None)  # type: ignore[arg-type]

    def on(self, location: str) -> str:
        """The same resource URL, on this replica."""
        path = location.split("/", 3)[3]
        return f"{self.url}/{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Replicas:
    """``whip-gateway serve`` processes on one Janus and one Redis."""

    def __init__(self, env: dict[str, str], logs: Path, http: httpx.AsyncClient) -> None:
        self.env, self.logs, self.http = env, logs, http
        self.started: list[Replica] = []

    async def start(self) -> Replica:
        port = free_port()
        log_path = self.logs / f"replica-{len(self.started)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        replica = Replica(process, f"http://127.0.0.1:{port}")
        self.started.append(replica)
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if (await self.http.get(f"{replica.url}/healthz")).status_code == 200:
                    return replica
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "replica did not start"
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        for replica in self.started:
            replica.stop()


@pytest.fixture
async def replicas(janus: ManagedJanus, redis_url: str, tmp_path: Path,
                   http: httpx.AsyncClient) -> AsyncIterator[Replicas]:
    """Starts replicas on demand; stops the live ones at the end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "WHIP_GATEWAY_JANUS": json.dumps([janus_settings(janus).model_dump()]),
           "WHIP_GATEWAY_REDIS_URL": redis_url,
           "WHIP_GATEWAY_PUBLIC_LISTING": "details"}
    group = Replicas(env, tmp_path, http)
    yield group
    group.stop()


async def streams_on(http: httpx.AsyncClient, replica: Replica) -> dict:
    return (await http.get(f"{replica.url}/api/streams")).json()["streams"]


async def wait_listed(http: httpx.AsyncClient, replica: Replica, stream: str, viewers: int) -> dict:
    """/api/streams on ``replica`` until it shows the stream live with ``viewers``
    (records are written just after the request that changed them)."""
    deadline = time.monotonic() + 10
    while True:
        listed = (await streams_on(http, replica)).get(stream)
        if listed is not None and listed["live"] is True and listed["viewers"] == viewers:
            return listed
        assert time.monotonic() < deadline, listed
        await asyncio.sleep(0.1)


async def janus_handles(leaks: Leaks) -> int:
    return sum(len(h) for h in (await leaks.admin.all_handles()).values())


async def pool_sessions(leaks: Leaks) -> set[int]:
    """The Janus sessions whose publisher pools hold rooms in Janus."""
    admin, key = leaks.admins[0]
    listed = await admin.message_plugin("janus.plugin.videoroom", {"request": "list", "admin_key": key})
    found = {pooled_session(str(e.get("description") or ""), "whip-gateway") for e in listed["list"]}
    return {s for s in found if s is not None}


async def test_replicas_share_sessions_and_take_over_a_killed_one(
    replicas: Replicas, http: httpx.AsyncClient, leaks: Leaks
) -> None:
    """A publisher POSTs to A, a viewer to B; each session answers on the
    other replica; A is killed and B carries on with both, media and URLs."""
    a, b = await replicas.start(), await replicas.start()

    # A publisher on A, a viewer on B.
    pc = await aiortc_publisher()
    whip = WhipSession(a.gw.whip("show"), http=http)
    viewer, frames = await aiortc_viewer()
    try:
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_connected(pc)
        await wait_stream(http, b.gw, "show", live=True)
        r = await watch(http, b.gw.whep("show"), viewer)
        assert r.status_code == 201, r.text
        viewer_url = r.headers["location"]
        assert viewer_url.startswith(b.url)
        await frames.wait(10)
        assert whip.location is not None
        publisher_on_b, viewer_on_a = b.on(whip.location), a.on(viewer_url)

        # Each session answers on the other replica: HEAD, PATCH, SSE.
        for url in (publisher_on_b, viewer_on_a, whip.location, viewer_url):
            assert (await http.head(url)).status_code == 204, url
        offer = sdp.parse(pc.localDescription.sdp)
        ufrag, pwd = offer.ice_credentials()
        trickle = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
                   f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=end-of-candidates\r\n")
        r = await http.patch(publisher_on_b, content=trickle,
                             headers={"Content-Type": SDPFRAG, "If-Match": whip.etag or "*"})
        assert r.status_code == 204, r.text
        sse_url = f"{viewer_on_a}/sse"
        r = await http.post(sse_url, json=["active", "viewercount"])
        assert r.status_code == 201, r.text
        events_on_b = b.on(r.headers["location"])
        events = await read_events(http, events_on_b, 2)
        assert ("active", {}) in events and ("viewercount", {"viewercount": 1}) in events

        # The stream is A's wherever its next publisher knocks.
        r = await http.post(b.gw.whip("show"), content=pc.localDescription.sdp,
                            headers={"Content-Type": "application/sdp"})
        assert r.status_code == 409, r.text

        # Layer selection and DELETE, forwarded too (a second viewer comes and goes).
        assert (await http.post(f"{viewer_url}/layer", json={})).status_code == 200
        brief, _ = await aiortc_viewer()
        try:
            r = await watch(http, b.gw.whep("show"), brief)
            assert r.status_code == 201, r.text
            assert (await http.delete(r.headers["location"])).status_code == 200
            assert (await http.delete(a.on(r.headers["location"]))).status_code == 404
        finally:
            await brief.close()

        # /api/streams on either replica shows the stream, live, with its viewer.
        for replica in (a, b):
            listed = await wait_listed(http, replica, "show", 1)
            assert listed["publisher"]["codecs"]["video"] == "vp8"

        # A dies mid-stream.
        assert len(await pool_sessions(leaks)) == 2, "each replica keeps a publisher pool"
        handles_before = await janus_handles(leaks)
        a.process.kill()
        a.process.wait()
        killed_at, frames_at_kill = time.monotonic(), frames.count
        deadline = killed_at + 30
        while True:  # 503 + Retry-After while A's lease runs, then B has taken over
            r = await http.patch(publisher_on_b, content=trickle,
                                 headers={"Content-Type": SDPFRAG, "If-Match": whip.etag or "*"})
            if r.status_code == 204:
                break
            assert r.status_code == 503 and r.headers["retry-after"], r.text
            assert time.monotonic() < deadline, "B never took A's sessions over"
            await asyncio.sleep(0.2)
        took = time.monotonic() - killed_at
        await frames.wait(frames.count + 30, timeout=15)
        print(f"takeover after {took:.1f} s; frames: {frames_at_kill} at the kill, "
              f"{frames.count} now")
        assert (await http.head(viewer_url)).status_code == 204
        await wait_listed(http, b, "show", 1)
        assert await janus_handles(leaks) == handles_before, "the takeover changed Janus's handles"
        deadline = time.monotonic() + 10  # the takeover's last step
        while len(await pool_sessions(leaks)) != 1:
            assert time.monotonic() < deadline, "B did not free A's pooled rooms (or not keep its own)"
            await asyncio.sleep(0.1)

        # B carries the stream on: a new viewer, counted on the event stream A had opened.
        reader = asyncio.ensure_future(read_events(
            http, events_on_b, 5, timeout=20, until=lambda e: e == ("viewercount", {"viewercount": 2})))
        second, second_frames = await aiortc_viewer()
        try:
            r = await watch(http, b.gw.whep("show"), second)
            assert r.status_code == 201, r.text
            await second_frames.wait(5)
            assert (await asyncio.wait_for(reader, 20))[-1] == ("viewercount", {"viewercount": 2})
            assert (await http.delete(r.headers["location"])).status_code == 200
        finally:
            await second.close()

        # A restarted replica reaps nothing of what B took over.
        a2 = await replicas.start()
        await frames.wait(frames.count + 30, timeout=15)
        assert (await http.head(a2.on(viewer_url))).status_code == 204
        await wait_listed(http, a2, "show", 1)

        # An ICE restart: Janus answers with an event, which B's pump on A's
        # Janus session must get, not the long poll A left pending in Janus
        # (janus.takeover drains it).  The publisher's media is not needed after it.
        restart = (f"a=ice-ufrag:fresh{ufrag[:4]}\r\na=ice-pwd:{pwd[::-1]}\r\n"
                   f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n")
        r = await http.patch(publisher_on_b, content=restart,
                             headers={"Content-Type": SDPFRAG, "If-Match": "*"})
        assert r.status_code == 200 and "a=ice-ufrag:" in r.text, r.text
        assert r.headers["etag"] != whip.etag

        # The sessions end on B through their old URLs.
        assert (await http.delete(viewer_url)).status_code == 200
        assert (await http.delete(publisher_on_b)).status_code == 200
        whip.location = None
    finally:
        await viewer.close()
        await pc.close()
    replicas.stop()
    await leaks.assert_nothing()


async def test_a_stopped_replica_hands_its_sessions_over(
    replicas: Replicas, http: httpx.AsyncClient, leaks: Leaks
) -> None:
    """SIGTERM (a rolling restart) with another replica alive: the sessions are
    handed over, not ended; the last replica to stop ends them."""
    a, b = await replicas.start(), await replicas.start()
    pc = await aiortc_publisher()
    whip = WhipSession(a.gw.whip("talk"), http=http)
    viewer, frames = await aiortc_viewer()
    try:
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, a.gw, "talk", live=True)
        r = await watch(http, a.gw.whep("talk"), viewer)
        assert r.status_code == 201, r.text
        await frames.wait(10)
        assert whip.location is not None
        a.stop()
        await frames.wait(frames.count + 30, timeout=15)
        deadline = time.monotonic() + 30
        while (status := (await http.head(b.on(r.headers["location"]))).status_code) != 204:
            assert status == 503 and time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
        await wait_listed(http, b, "talk", 1)
        await frames.wait(frames.count + 30, timeout=15)
        assert (await http.delete(b.on(whip.location))).status_code == 200
        whip.location = None
    finally:
        await viewer.close()
        await pc.close()
    replicas.stop()
    await leaks.assert_nothing()
