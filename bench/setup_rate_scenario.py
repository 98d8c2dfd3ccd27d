"""setup_rate's viewers: what a worker process does during one rate step.

A step is a list of join instants.  At each, a viewer POSTs a WHEP offer,
lives ``lifetime`` seconds and DELETEs its session: open loop (a join never
waits for an earlier one), so at steady state the gateway sees the offered
rate of POSTs and the same rate of DELETEs.

Two kinds of viewer:

- *offer* (the default): the offer comes from a pool made once per worker
  with aiortc (recvonly, one per kind the publisher sends), and no
  PeerConnection stays behind it.  The gateway and Janus do all their
  set-up work (attach, ``watch``, the bridged answers, ``start``; Janus's
  ICE agent starts checking the offer's candidates, whose ports are closed)
  but no media flows, so Janus sends no ``webrtcup`` nor ``media``.  This
  is what lets the load generator offer 150 set-ups/s on a shared 2-core
  machine: making one aiortc offer costs more CPU than the gateway's whole
  set-up.
- *connect* (``--connect``): webinar's counting viewer, a fresh aiortc
  PeerConnection per viewer that connects (ICE, DTLS) and counts its first
  packet, so the gateway also hears ``webrtcup`` and ``media``.  Much
  dearer for the load generator; for the low steps.

HTTP is aiohttp (about a fifth of httpx's CPU per request, see
``janus_http_clients.py``), with keep-alive shorter than uvicorn's.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urljoin

from harness import KEEPALIVE_S, SDP, Json
from webinar_scenario import Viewer, ViewerRecord, install_counting_receivers, now
from worker_loop import serve

OFFERS: list[str] = []  # the worker's pool, made on its first step


async def make_offers(count: int, kinds: list[str]) -> list[str]:
    """``count`` recvonly aiortc offers, their PeerConnections closed (ports gone)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    offers = []
    for _ in range(count):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN lookup offline
        for kind in kinds:
            pc.addTransceiver(kind, direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offers.append(pc.localDescription.sdp)
        await pc.close()
    return offers


class Step:
    """A worker's share of one rate step."""

    def __init__(self, cmd: Json) -> None:
        self.cmd = cmd
        self.http: Any = None
        self.records: list[Json] = []

    async def run(self) -> Json:
        import aiohttp

        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S),
            timeout=aiohttp.ClientTimeout(total=self.cmd["request_timeout"]))
        if not self.cmd["connect"] and len(OFFERS) < self.cmd["pool"]:
            OFFERS.extend(await make_offers(self.cmd["pool"] - len(OFFERS), self.cmd["kinds"]))
        try:
            await asyncio.gather(*(self.viewer(i, at) for i, at in self.cmd["joins"]))
        finally:
            await self.http.close()
        return {"phase": "done", "records": self.records}

    async def viewer(self, index: int, at: float) -> None:
        rec = ViewerRecord(self.cmd["side"], index, t_at=at)
        extra: Json = {"t_delete": None, "t_deleted": None, "delete_status": None}
        peer: Viewer | None = None
        await asyncio.sleep(max(at - now(), 0))
        try:
            if self.cmd["connect"]:
                peer = Viewer(rec, [])
                for kind in self.cmd["kinds"]:
                    peer.pc.addTransceiver(kind, direction="recvonly")
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
                peer.count()
                offer = peer.pc.localDescription.sdp
            else:
                offer = OFFERS[index % len(OFFERS)]
            location, answer = await self.post(rec, offer)
            if location is not None and peer is not None:
                from aiortc import RTCSessionDescription

                await peer.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.sleep(max(at + self.cmd["lifetime"] - now(), 0))
            if location is not None:
                extra["t_delete"] = now()
                async with self.http.delete(location) as reply:
                    await reply.read()
                    extra["delete_status"] = reply.status
                extra["t_deleted"] = now()
        except Exception as exc:  # noqa: BLE001 - recorded, the step goes on
            rec.error = rec.error or f"{type(exc).__name__}: {exc}"
        finally:
            if peer is not None:
                await peer.close()
            self.records.append({**asdict(rec), **extra})

    async def post(self, rec: ViewerRecord, offer: str) -> tuple[str | None, str]:
        """POST the offer; on 201 the session's URL and the answer."""
        url = self.cmd["whep_url"]
        rec.t_post = now()
        async with self.http.post(url, data=offer.encode(), headers={"Content-Type": SDP}) as reply:
            body = await reply.text()
            rec.t_answer, rec.status = now(), reply.status
            if reply.status != 201:
                rec.error = f"POST {reply.status} {body[:120]}"
                return None, body
            return urljoin(url, reply.headers["Location"]), body


async def janus_client_cost(url: str, count: int) -> Json:
    """CPU of the gateway's own Janus client (``gateway.janus.client``), per request.

    Run here, in an idle load-generator process, on an egress Janus: ``count``
    keepalives (one POST each), then ``count`` Streaming handles attached and
    detached (two POSTs, and the ``detached`` event the long poll brings).
    Measured, not changed: the client is another helper's.
    """
    from gateway.janus.client import JanusClient

    client = JanusClient(url)
    session = await client.create_session()
    try:
        for _ in range(20):  # warm: connections, first-call paths
            await session.keepalive(5)
        t = time.process_time()
        for _ in range(count):
            await session.keepalive(5)
        keepalive = (time.process_time() - t) / count
        t = time.process_time()
        for _ in range(count):
            handle = await session.attach("janus.plugin.streaming")
            await handle.detach()
        pair = (time.process_time() - t) / count
    finally:
        await session.destroy()
        await client.close()
    return {"phase": "done", "keepalive_us": keepalive * 1e6, "attach_detach_us": pair * 1e6}


def worker_main(conn: Any, index: int) -> None:
    """A load-generator process: one ``Step`` per command, each in a fresh event loop."""
    install_counting_receivers()

    def run(cmd: dict[str, Any]) -> Any:
        if cmd.get("op") == "janus_cost":
            return janus_client_cost(cmd["url"], cmd["count"])
        return Step(cmd).run()

    serve(conn, index, run, lift_open_files=True)
