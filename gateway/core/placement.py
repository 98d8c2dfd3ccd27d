"""The pool of Janus nodes and the choice of where a new session goes.

Each node has a role (ingest, egress or both), an optional region label and
capacity limits (most viewers, an outbound bitrate budget).  A publisher goes
to the least-loaded healthy ingest node.  A viewer goes to the healthy egress
node of its region with the most room, counted at its stream's bitrate (what
Janus's admin API reports for the publisher), not as one more handle; a node
that already has the stream's mountpoint wins a tie, full nodes are skipped,
and when every node is full the answer is 503 with Retry-After.  A viewer of
another region that has a gateway of its own is sent there (307).

Nodes change at run time: ``add``, ``drain`` (no new sessions; who is there
stays), ``undrain`` and ``remove`` (who is there is told to reconnect and
lands elsewhere).  Whoever keeps state per node (ingest, egress) registers
with ``observe`` and hears of every node, present and future.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from gateway.errors import (
    CapacityExhausted,
    MediaServerUnavailable,
    NodeConflict,
    ResourceNotFound,
    ViewerInOtherRegion,
)
from gateway.janus.node import JanusNode, NodeObserver, gateway_handles

log = logging.getLogger(__name__)

# A node without limits is measured against this outbound rate, so that
# unlimited nodes still share viewers by the bitrate they carry.
REFERENCE_OUT_BITRATE = 1_000_000_000


class NodeRemovalObserver(Protocol):
    """Told before a node leaves the pool: end or move what lives there."""

    async def node_removed(self, node: JanusNode) -> None: ...


@dataclass
class RegionMap:
    """Which region a viewer is in, and which gateway serves each region.

    A ``region`` query parameter on the WHEP POST names it outright (a player
    that knows, or a test); otherwise the client's address is looked up in
    ``networks`` (region -> CIDRs, longest prefix wins); otherwise the viewer
    counts as this gateway's own region.
    """

    own: str | None = None
    networks: dict[str, list[str]] = field(default_factory=dict)
    gateways: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._nets = sorted(
            ((ipaddress.ip_network(n, strict=False), region)
             for region, nets in self.networks.items() for n in nets),
            key=lambda pair: pair[0].prefixlen, reverse=True)

    def region_of(self, address: str | None, asked: str | None = None) -> str | None:
        if asked:
            return asked
        if address:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is not None:
                for network, region in self._nets:
                    if ip.version == network.version and ip in network:
                        return region
        return self.own

    def elsewhere(self, region: str | None) -> str | None:
        """The base URL of the gateway serving ``region``, if it is not this one."""
        if region is None or region == self.own:
            return None
        return self.gateways.get(region)


@dataclass
class NodeLoad:
    """What placement counts on one node."""

    viewers: int
    out_bitrate: int
    fill: float  # 0 empty .. 1 full, by whichever limit is nearest


class NodePool:
    def __init__(self, nodes: list[JanusNode], *, default_bitrate: int = 2_000_000,
                 regions: RegionMap | None = None) -> None:
        if not nodes:
            raise ValueError("a node pool needs at least one node")
        self.nodes = list(nodes)
        self.default_bitrate = default_bitrate
        self.regions = regions or RegionMap()
        self.draining: set[str] = set()
        # Sessions refused because every node was full or draining, by reason
        # (read by the metrics: an operator must see a webinar hit its ceiling).
        self.refused: Counter[str] = Counter()
        self.stream_bitrate: dict[str, int] = {}  # bit/s per stream, as Janus last reported
        self._viewers: dict[str, Counter[str]] = {}  # node name -> stream -> viewers
        self._observers: list[Any] = []
        self._started = False

    # -- membership -----------------------------------------------------------

    async def start(self) -> None:
        """Connect every node; a node that is down keeps retrying on its own."""
        self._started = True
        await asyncio.gather(*(self._connect(n) for n in self.nodes))

    async def _connect(self, node: JanusNode) -> None:
        try:
            await node.connect()
        except Exception as exc:  # noqa: BLE001 - any failure: down, and retrying
            log.warning("janus node %s is not reachable yet: %s", node.name, exc)
            node.mark_down()

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)

    def observe(self, observer: NodeObserver) -> None:
        """Hear ``node_down`` from every node, now and added later (and
        ``node_removed`` if the observer has it)."""
        self._observers.append(observer)
        for node in self.nodes:
            node.observe(observer)

    def get(self, name: str) -> JanusNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise ResourceNotFound(f"no Janus node named {name!r}")

    async def add(self, node: JanusNode) -> None:
        """Take a node in at run time; it gets sessions once it is up."""
        if any(n.name == node.name for n in self.nodes):
            raise NodeConflict(f"the pool already has a node named {node.name!r}")
        for observer in self._observers:
            node.observe(observer)
        self.nodes.append(node)
        log.info("janus node %s added (%s)", node.name, node.role)
        if self._started:
            await self._connect(node)

    def drain(self, name: str) -> JanusNode:
        """No new sessions on the node; the ones there stay until they leave."""
        node = self.get(name)
        self.draining.add(name)
        log.info("janus node %s draining", name)
        return node

    def undrain(self, name: str) -> JanusNode:
        node = self.get(name)
        self.draining.discard(name)
        log.info("janus node %s takes sessions again", name)
        return node

    async def remove(self, name: str) -> JanusNode:
        """Take the node out: observers end (viewers: reconnect) what lives
        there and free what it holds in Janus, then its session is closed."""
        node = self.get(name)
        if len(self.nodes) == 1:
            raise NodeConflict(f"{name!r} is the last node; add another before removing it")
        self.draining.add(name)  # nothing new lands there while it empties
        for observer in self._observers:
            removed = getattr(observer, "node_removed", None)
            if removed is not None:
                try:
                    await removed(node)
                except Exception:
                    log.exception("node-removal listener failed")
        self.nodes.remove(node)
        self.draining.discard(name)
        self._viewers.pop(name, None)
        await node.close()
        log.info("janus node %s removed", name)
        return node

    # -- health -----------------------------------------------------------------

    def healthy(self) -> list[JanusNode]:
        return [n for n in self.nodes if n.healthy]

    async def wait_healthy(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.healthy():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    # -- load -----------------------------------------------------------------

    def bitrate_of(self, stream: str) -> int:
        return self.stream_bitrate.get(stream) or self.default_bitrate

    def load(self, node: JanusNode, *, extra_bitrate: int = 0, extra_viewers: int = 0) -> NodeLoad:
        counts = self._viewers.get(node.name, Counter())
        viewers = sum(counts.values()) + extra_viewers
        out = sum(self.bitrate_of(s) * n for s, n in counts.items()) + extra_bitrate
        ratios = []
        if node.max_viewers:
            ratios.append(viewers / node.max_viewers)
        if node.max_out_bitrate:
            ratios.append(out / node.max_out_bitrate)
        fill = max(ratios) if ratios else out / REFERENCE_OUT_BITRATE
        return NodeLoad(viewers=viewers, out_bitrate=out, fill=fill)

    def fits(self, node: JanusNode, bitrate: int) -> bool:
        """Whether one more viewer at ``bitrate`` stays within the node's limits."""
        now = self.load(node)
        if node.max_viewers and now.viewers + 1 > node.max_viewers:
            return False
        if node.max_out_bitrate and now.out_bitrate + bitrate > node.max_out_bitrate:
            return False
        return True

    def viewer_left(self, node: JanusNode, stream: str) -> None:
        counts = self._viewers.get(node.name)
        if counts is None or counts[stream] <= 0:
            return
        counts[stream] -= 1
        if counts[stream] == 0:
            del counts[stream]

    def viewers_on(self, node: JanusNode) -> int:
        return sum(self._viewers.get(node.name, Counter()).values())

    # -- placement ------------------------------------------------------------

    def _takes(self, role: str) -> list[JanusNode]:
        return [n for n in self.nodes if n.role in (role, "both")]

    def for_publisher(self) -> JanusNode:
        """The least-loaded healthy ingest node that is not draining."""
        up = [n for n in self._takes("ingest") if n.healthy]
        if not up:
            raise MediaServerUnavailable("no ingest Janus node is up")
        open_ = [n for n in up if n.name not in self.draining]
        if not open_:
            self.refused["ingest draining"] += 1
            raise CapacityExhausted("every ingest Janus node is draining")
        return min(open_, key=lambda n: n.load)

    def route_viewer(self, stream: str, region: str | None) -> None:
        """Raise ``ViewerInOtherRegion`` if another gateway serves the viewer's region."""
        base = self.regions.elsewhere(region)
        if base is not None:
            raise ViewerInOtherRegion(f"region {region!r} is served by another gateway",
                                      location=f"{base}/whep/{stream}")

    def place_viewer(self, stream: str, region: str | None,
                     has_mountpoint: Callable[[JanusNode], bool] = lambda n: False) -> JanusNode:
        """Choose the viewer's node and count the viewer there at once (so
        concurrent POSTs see each other); ``viewer_left`` gives it back."""
        node = self.choose_viewer_node(stream, region, has_mountpoint)
        self._viewers.setdefault(node.name, Counter())[stream] += 1
        return node

    def choose_viewer_node(self, stream: str, region: str | None,
                           has_mountpoint: Callable[[JanusNode], bool] = lambda n: False
                           ) -> JanusNode:
        egress = self._takes("egress")
        region = region or self.regions.own
        if region is not None and any(n.region == region for n in egress):
            egress = [n for n in egress if n.region in (region, None)]
        elif region is not None:
            # No node carries the region's label: unlabelled nodes serve everyone.
            egress = [n for n in egress if n.region is None] or egress
        up = [n for n in egress if n.healthy]
        if not up:
            raise MediaServerUnavailable("no egress Janus node is up")
        open_ = [n for n in up if n.name not in self.draining]
        bitrate = self.bitrate_of(stream)
        room = [n for n in open_ if self.fits(n, bitrate)]
        if not room:
            why = "draining" if not open_ else "full"
            self.refused[f"egress {why}"] += 1
            raise CapacityExhausted(f"every egress node for this viewer is {why}")
        return min(room, key=lambda n: (self.load(n).fill, not has_mountpoint(n),
                                         self.viewers_on(n)))

    # -- what the operator sees -------------------------------------------------

    async def report(self, node: JanusNode) -> dict[str, Any]:
        """``describe`` plus what Janus itself counts in the gateway's session
        (its admin API; None when unknown or slower than 2 s)."""
        entry = self.describe(node)
        try:
            entry["load"]["janus_handles"] = await asyncio.wait_for(gateway_handles(node), 2.0)
        except asyncio.TimeoutError:
            entry["load"]["janus_handles"] = None
        return entry

    def describe(self, node: JanusNode) -> dict[str, Any]:
        load = self.load(node)
        return {
            "name": node.name,
            "role": node.role,
            "region": node.region,
            "healthy": node.healthy,
            "draining": node.name in self.draining,
            "version": node.version_string,
            "load": {"viewers": load.viewers, "out_bitrate": load.out_bitrate,
                     "fill": round(load.fill, 4), "handles": node.load},
            "capacity": {"max_viewers": node.max_viewers,
                         "max_out_bitrate": node.max_out_bitrate},
        }


class BitrateMeter:
    """Each live stream's bitrate, from the byte counters Janus reports for
    its publisher's handle; placement counts each viewer at it.

    ``sample`` gives (stream, bytes received so far) per live publisher; the
    rate over the last interval is written to ``pool.stream_bitrate``.
    """

    def __init__(self, pool: NodePool,
                 sample: Callable[[], Any], interval: float = 2.0) -> None:
        self.pool = pool
        self.sample = sample
        self.interval = interval
        self._last: dict[str, tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bitrate-meter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def record(self, readings: Iterable[tuple[str, int]], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        seen = set()
        for stream, total in readings:
            seen.add(stream)
            before = self._last.get(stream)
            self._last[stream] = (total, now)
            if before is not None and now > before[1] and total >= before[0]:
                self.pool.stream_bitrate[stream] = int((total - before[0]) * 8 / (now - before[1]))
        for gone in set(self._last) - seen:
            del self._last[gone]
            self.pool.stream_bitrate.pop(gone, None)

    async def _run(self) -> None:
        while True:
            try:
                self.record(await self.sample())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bitrate sampling failed")
            await asyncio.sleep(self.interval)
