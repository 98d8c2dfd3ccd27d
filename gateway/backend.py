"""Which Janus nodes the gateway runs on: managed local ones, or configured ones.

The managed default runs an ingest node with full ICE (publishers behind
NAT connect best to it) and ``janus_egress_nodes`` egress nodes (one by
default; Janus spends its egress time in a few event loops, so one process
per core or two is how a large machine is used) in ICE-lite mode, which serves viewers from Streaming mountpoints fed over loopback.
ICE-lite on the egress side removes the ICE role conflict that both peers
offering would otherwise cause (``gateway.sdp.bridge`` writes an answer for
each side, and an ICE-lite Janus leaves the viewer controlling).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gateway.config import JanusNodeSettings, Settings
from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusClient
from gateway.janus.node import JanusNode
from gateway.janus.process import JanusProcessConfig, ManagedJanus
from gateway.core.placement import NodePool, RegionMap

log = logging.getLogger(__name__)


@dataclass
class Backend:
    pool: NodePool
    managed: list[ManagedJanus] = field(default_factory=list)
    settings: Settings | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _processes: dict[str, ManagedJanus] = field(default_factory=dict)  # node name -> process

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

    async def add_node(self, spec: JanusNodeSettings) -> JanusNode:
        """A configured node taken in at run time (``POST /api/nodes``, SIGHUP)."""
        settings = self.settings if self.settings is not None else Settings.model_validate({})
        node = configured_node(spec, settings, len(self.pool.nodes))
        try:
            await self.pool.add(node)
        except BaseException:
            await node.close()
            raise
        return node

    async def remove_node(self, name: str) -> JanusNode:
        """Take a node out (``DELETE /api/nodes/{name}``, SIGHUP); a managed
        node's Janus process is stopped too."""
        node = await self.pool.remove(name)
        process = self._processes.pop(name, None)
        if process is not None:
            self.managed.remove(process)
            await asyncio.to_thread(process.stop)
        return node

    async def reload(self, settings: Settings) -> dict[str, list[str]]:
        """Make the pool match ``settings.janus`` (the re-read config file):
        nodes gone from it are removed, new ones added, and the role, region
        and limits of the others updated in place.  Names are the key (an
        unnamed node is ``janus<index>``, as at start); a node whose URL
        changed is removed and added again.  Managed mode has nothing to reload."""
        done: dict[str, list[str]] = {"added": [], "removed": [], "updated": []}
        if settings.managed_janus or self._processes:
            log.warning("reload: the managed Janus nodes are fixed at start; nothing changed")
            return done
        self.settings = settings
        wanted = {spec.name or f"janus{i}": spec for i, spec in enumerate(settings.janus)}
        for node in list(self.pool.nodes):
            spec = wanted.get(node.name)
            if spec is None or spec.url.rstrip("/") != node.client.url.rstrip("/"):
                await self.remove_node(node.name)
                done["removed"].append(node.name)
            else:
                node.role, node.region = spec.role, spec.region
                node.max_viewers, node.max_out_bitrate = spec.max_viewers, spec.max_out_bitrate
                done["updated"].append(node.name)
        have = {n.name for n in self.pool.nodes}
        for name, spec in wanted.items():
            if name not in have:
                await self.add_node(spec.model_copy(update={"name": name}))
                done["added"].append(name)
        log.info("reload: %s", done)
        return done


def _split(port_range: str, parts: int) -> list[str]:
    """``port_range`` cut into ``parts`` consecutive ranges."""
    low, high = (int(p) for p in port_range.split("-"))
    size = (high - low + 1) // parts
    if size < 2:
        raise ValueError(f"port range {port_range} is too small for {parts} Janus processes")
    return [f"{low + i * size}-{high if i == parts - 1 else low + (i + 1) * size - 1}"
            for i in range(parts)]


def _pool(nodes: list[JanusNode], settings: Settings) -> NodePool:
    return NodePool(nodes, default_bitrate=settings.stream_bitrate_default,
                    regions=RegionMap(own=settings.region, networks=settings.region_networks,
                                      gateways=settings.region_gateways))


def websocket_url(settings: Settings, ws_url: str | None) -> str | None:
    """The WebSocket address the gateway talks to a node over, or None for HTTP.

    Replicas (``redis_url``) stay on HTTP: a session made over a WebSocket
    dies with that socket (Janus destroys it at once unless its
    ``reclaim_session_timeout`` is set) and its events go to that socket
    only, so a dead replica's publishers and viewers could not be taken over
    (``janus.takeover``).  Over HTTP a session belongs to no connection.
    """
    if settings.janus_transport != "websocket" or ws_url is None:
        return None
    if settings.redis_url:
        log.warning("janus_transport = websocket is ignored with redis_url: replicas take "
                    "over each other's Janus sessions, which only HTTP allows")
        return None
    return ws_url


def configured_node(spec: JanusNodeSettings, settings: Settings, index: int) -> JanusNode:
    admin = JanusAdmin(spec.admin_url, spec.admin_secret or "") if spec.admin_url else None
    return JanusNode(
        spec.name or f"janus{index}",
        JanusClient(spec.url, ws_url=websocket_url(settings, spec.ws_url),
                    api_secret=spec.api_secret, request_timeout=settings.janus_request_timeout),
        plugin_admin_key=spec.plugin_admin_key, admin=admin, role=spec.role,
        region=spec.region, max_viewers=spec.max_viewers, max_out_bitrate=spec.max_out_bitrate,
        tag=settings.instance_name,
    )


def build_backend(settings: Settings) -> Backend:
    if settings.managed_janus:
        return _managed_backend(settings)
    nodes = [configured_node(spec, settings, i) for i, spec in enumerate(settings.janus)]
    return Backend(pool=_pool(nodes, settings), settings=settings)


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
            websockets=settings.janus_transport == "websocket",
        ))

    if settings.janus_separate_egress:
        count = settings.janus_egress_nodes
        ingest_rtp, egress_rtp = _split(settings.janus_rtp_port_range, 2)
        egress_names = ["egress"] if count == 1 else [f"egress{i + 1}" for i in range(count)]
        plan = [("ingest", process(settings.janus_ice_lite, ingest_rtp, "50001-55000"), "ingest")]
        for name, rtp, streaming in zip(egress_names, _split(egress_rtp, count),
                                        _split("55001-60000", count)):
            plan.append((name, process(True, rtp, streaming, settings.janus_ice_tcp), "egress"))
    else:
        plan = [("local", process(settings.janus_ice_lite, settings.janus_rtp_port_range,
                                  "50001-60000"), "both")]
    nodes = []
    for name, managed, role in plan:
        cfg = managed.cfg
        limits = ({"max_viewers": settings.janus_egress_max_viewers,
                   "max_out_bitrate": settings.janus_egress_max_out_bitrate}
                  if role != "ingest" else {})
        nodes.append(JanusNode(
            name, JanusClient(cfg.api_url, request_timeout=settings.janus_request_timeout,
                              ws_url=cfg.ws_url if cfg.websockets else None),
            plugin_admin_key=cfg.plugin_admin_key,
            admin=JanusAdmin(cfg.admin_url, cfg.admin_secret), role=role,
            region=settings.region, tag=settings.instance_name, **limits,
        ))
    return Backend(pool=_pool(nodes, settings), managed=[m for _, m, _ in plan],
                   settings=settings, _processes={name: m for name, m, _ in plan})
