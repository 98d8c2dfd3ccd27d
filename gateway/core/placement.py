"""The pool of Janus nodes and the choice of where a new session goes.

Each node has a role (ingest, egress or both).  A publisher goes to the
least-loaded healthy node that takes ingest, a viewer to the least-loaded
healthy one that takes egress; its mountpoint is fed by ``rtp_forward``
from the publisher's node.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import MediaServerUnavailable
from gateway.janus.node import JanusNode

log = logging.getLogger(__name__)


class NodePool:
    def __init__(self, nodes: list[JanusNode]) -> None:
        if not nodes:
            raise ValueError("a node pool needs at least one node")
        self.nodes = nodes

    async def start(self) -> None:
        """Connect every node; a node that is down keeps retrying on its own."""
        results = await asyncio.gather(*(n.connect() for n in self.nodes), return_exceptions=True)
        for node, result in zip(self.nodes, results):
            if isinstance(result, BaseException):
                log.warning("janus node %s is not reachable yet: %s", node.name, result)
                node.mark_down()

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)

    def healthy(self) -> list[JanusNode]:
        return [n for n in self.nodes if n.healthy]

    def _least_loaded(self, role: str) -> JanusNode:
        candidates = [n for n in self.healthy() if n.role in (role, "both")]
        if not candidates:
            raise MediaServerUnavailable(f"no {role} Janus node is up")
        return min(candidates, key=lambda n: n.load)

    def for_publisher(self) -> JanusNode:
        return self._least_loaded("ingest")

    def for_viewer(self) -> JanusNode:
        """The least-loaded egress node (a mountpoint there is fed by rtp_forward)."""
        return self._least_loaded("egress")

    async def wait_healthy(self, timeout: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.healthy():
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

