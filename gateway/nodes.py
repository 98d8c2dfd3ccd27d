"""Which Janus nodes the gateway runs on: a managed local one, or configured ones."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .config import Settings
from .janus.admin import JanusAdmin
from .janus.client import JanusClient
from .janus.node import JanusNode
from .janus.process import JanusProcessConfig, ManagedJanus
from .placement import NodePool

log = logging.getLogger(__name__)


@dataclass
class Backend:
    pool: NodePool
    managed: ManagedJanus | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        if self.managed is not None:
            await asyncio.to_thread(self.managed.start)
            self._tasks.append(asyncio.create_task(self.managed.supervise()))
        await self.pool.start()

    async def close(self) -> None:
        await self.pool.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.managed is not None:
            await asyncio.to_thread(self.managed.stop)


def build_backend(settings: Settings) -> Backend:
    timeout = settings.janus_request_timeout
    if settings.managed_janus:
        managed = ManagedJanus(JanusProcessConfig(
            binary=settings.janus_binary,
            ice_enforce_list=settings.janus_ice_enforce_list,
            ice_lite=settings.janus_ice_lite,
            nat_1_1_mapping=settings.janus_nat_1_1_mapping,
            stun_server=settings.janus_stun_server,
            rtp_port_range=settings.janus_rtp_port_range,
            debug_level=settings.janus_debug_level,
        ))
        cfg = managed.cfg
        node = JanusNode(
            "local", JanusClient(cfg.api_url, request_timeout=timeout),
            plugin_admin_key=cfg.plugin_admin_key,
            admin=JanusAdmin(cfg.admin_url, cfg.admin_secret),
        )
        return Backend(pool=NodePool([node]), managed=managed)
    nodes = []
    for index, spec in enumerate(settings.janus):
        admin = JanusAdmin(spec.admin_url, spec.admin_secret or "") if spec.admin_url else None
        nodes.append(JanusNode(
            spec.name or f"janus{index}",
            JanusClient(spec.url, api_secret=spec.api_secret, request_timeout=timeout),
            plugin_admin_key=spec.plugin_admin_key, admin=admin,
        ))
    return Backend(pool=NodePool(nodes))
