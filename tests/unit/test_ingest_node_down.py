"""A node going down ends only what lives on it (found by bench/soak.py:
an egress node's death used to fail publishes being set up on the ingest
node, and leak their sessions)."""

from __future__ import annotations

from gateway.sdp import model as sdp
from gateway.core.auth import StreamKeys
from gateway.core.ingest import Ingest, IngestPolicy
from gateway.janus.client import JanusClient
from gateway.janus.node import JanusNode
from gateway.core.placement import NodePool
from gateway.core.streams import PublisherSession, PublisherState
from tests.conftest import read_fixture


async def test_node_down_ends_only_its_own_set_ups() -> None:
    nodes = [JanusNode(name, JanusClient("http://127.0.0.1:9/janus"), role=role,
                       reconnect_interval=60)
             for name, role in (("ingest", "ingest"), ("egress", "egress"))]
    ingest = Ingest(NodePool(nodes), StreamKeys({}), IngestPolicy())
    offer = sdp.parse(read_fixture("sdp", "obs_h264.sdp"))
    setting_up = PublisherSession(stream="live", offer=offer, node_name="ingest")
    ingest.registry.put(setting_up)
    try:
        nodes[1].mark_down()
        assert setting_up.state is PublisherState.CONNECTING
        nodes[0].mark_down()
        assert setting_up.state is PublisherState.ENDED
    finally:
        for node in nodes:
            await node.close()
