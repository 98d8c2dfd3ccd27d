"""How the backend builds the pool: ``--egress-nodes`` in the embedded
default, and a reloaded config file's node list (without starting Janus)."""

from __future__ import annotations

from gateway.backend import build_backend
from gateway.cli import _serve_overrides, build_parser
from gateway.config import JanusNodeSettings, Settings


def _ports(text: str) -> set[int]:
    low, high = (int(p) for p in text.split("-"))
    return set(range(low, high + 1))


def test_egress_nodes_flag_runs_that_many_egress_processes_on_disjoint_ports() -> None:
    args = build_parser().parse_args(["serve", "--egress-nodes", "3"])
    assert _serve_overrides(args)["janus_egress_nodes"] == 3
    backend = build_backend(Settings(janus_egress_nodes=3, janus_egress_max_viewers=500))
    try:
        nodes = {n.name: n for n in backend.pool.nodes}
        assert {name: n.role for name, n in nodes.items()} == {
            "ingest": "ingest", "egress1": "egress", "egress2": "egress", "egress3": "egress"}
        assert [nodes[f"egress{i}"].max_viewers for i in (1, 2, 3)] == [500] * 3
        assert nodes["ingest"].max_viewers == 0
        cfgs = [m.cfg for m in backend.managed]
        assert [c.ice_lite for c in cfgs] == [False, True, True, True]
        for attr in ("rtp_port_range", "streaming_port_range"):
            ranges = [_ports(getattr(c, attr)) for c in cfgs[1:]]
            assert all(not (a & b) for i, a in enumerate(ranges) for b in ranges[i + 1:]), attr
        assert not _ports(cfgs[0].rtp_port_range) & set().union(
            *(_ports(c.rtp_port_range) for c in cfgs[1:]))
    finally:
        for process in backend.managed:
            process.stop()
    one = build_backend(Settings())
    try:
        assert [n.name for n in one.pool.nodes] == ["ingest", "egress"]
    finally:
        for process in one.managed:
            process.stop()


async def test_reload_adds_removes_and_updates_nodes_by_name() -> None:
    def node(port: int, name: str | None = None, **extra: object) -> JanusNodeSettings:
        return JanusNodeSettings(url=f"http://127.0.0.1:{port}/janus", name=name, **extra)  # type: ignore[arg-type]

    backend = build_backend(Settings(janus=[node(1, role="ingest"), node(2, "a"), node(3, "b")]))
    done = await backend.reload(Settings(janus=[
        node(1, role="ingest"), node(2, "a", region="eu", max_viewers=9), node(4, "c"),
        node(5, "b")]))
    assert done == {"added": ["c", "b"], "removed": ["b"], "updated": ["janus0", "a"]}
    nodes = {n.name: n for n in backend.pool.nodes}
    assert (nodes["a"].region, nodes["a"].max_viewers) == ("eu", 9)
    assert nodes["b"].client.url.endswith(":5/janus")  # a new URL: removed and added again
    await backend.close()
