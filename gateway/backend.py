"""Which Janus nodes the gateway runs on: managed local ones, or configured ones.

The managed default runs two Janus processes: an ingest node with full ICE
(publishers behind NAT connect best to it) and an egress node in ICE-lite
mode, which serves viewers from Streaming mountpoints fed over loopback.
ICE-lite on the egress side removes the ICE role conflict that both peers
offering would otherwise cause (``gateway.sdp.bridge`` writes an answer for
each side, and an ICE-lite Janus leaves the viewer controlling).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gateway.config import Settings
from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusClient
from gateway.janus.node import JanusNode
from gateway.janus.process import JanusProcessConfig, ManagedJanus
from gateway.core.placement import NodePool

log = logging.getLogger(__name__)


@dataclass
class Backend:
    pool: NodePool
    managed: list[ManagedJanus] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        for process in self.managed:
            await asyncio.to_thread(process.start)
            self._tasks.append(asyncio.create_task(process.supervise()))
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for process in self.managed:
            await asyncio.to_thread(process.stop)


def _halves(port_range: str) -> tuple[str, str]:
    low, high = (int(p) for p in port_range.split("-"))
    middle = (low + high) // 2
    return f"{low}-{middle}", f"{middle + 1}-{high}"


def build_backend(settings: Settings) -> Backend:
    if settings.managed_janus:
        return _managed_backend(settings)
    nodes = []
    for index, spec in enumerate(settings.janus):
        admin = JanusAdmin(spec.admin_url, spec.admin_secret or "") if spec.admin_url else None
        nodes.append(JanusNode(
            spec.name or f"janus{index}",
            JanusClient(spec.url, api_secret=spec.api_secret,
                        request_timeout=settings.janus_request_timeout),
            plugin_admin_key=spec.plugin_admin_key, admin=admin, role=spec.role,
            tag=settings.instance_name,
        ))
    return Backend(pool=NodePool(nodes))


def _managed_backend(settings: Settings) -> Backend:
    def process(ice_lite: bool, rtp: str, streaming: str, ice_tcp: bool = False) -> ManagedJanus:
        return ManagedJanus(JanusProcessConfig(
            binary=settings.janus_binary,
            ice_enforce_list=settings.janus_ice_enforce_list,
            ice_lite=ice_lite,
            ice_tcp=ice_tcp,
            nat_1_1_mapping=settings.janus_nat_1_1_mapping,
            stun_server=settings.janus_stun_server,
            rtp_port_range=rtp,
            streaming_port_range=streaming,
            debug_level=settings.janus_debug_level,
            event_loops=settings.janus_event_loops,
        ))

    if settings.janus_separate_egress:
        ingest_rtp, egress_rtp = _halves(settings.janus_rtp_port_range)
        plan = [("ingest", process(settings.janus_ice_lite, ingest_rtp, "50001-55000"), "ingest"),
                ("egress", process(True, egress_rtp, "55001-60000", settings.janus_ice_tcp),
                 "egress")]
    else:
        plan = [("local", process(settings.janus_ice_lite, settings.janus_rtp_port_range,
                                  "50001-60000"), "both")]
    nodes = []
    for name, managed, role in plan:
        cfg = managed.cfg
        nodes.append(JanusNode(
            name, JanusClient(cfg.api_url, request_timeout=settings.janus_request_timeout),
            plugin_admin_key=cfg.plugin_admin_key,
            admin=JanusAdmin(cfg.admin_url, cfg.admin_secret), role=role,
            tag=settings.instance_name,
        ))
    return Backend(pool=NodePool(nodes), managed=[m for _, m, _ in plan])
