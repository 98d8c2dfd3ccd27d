"""Placement with fake loads: viewers counted at their stream's bitrate,
regions, ties to the node holding the mountpoint, full and draining nodes."""

from __future__ import annotations

import pytest

from gateway.core.placement import BitrateMeter, NodePool, RegionMap
from gateway.errors import CapacityExhausted, MediaServerUnavailable, ViewerInOtherRegion


class FakeNode:
    """What placement reads of a JanusNode."""

    def __init__(self, name: str, role: str = "egress", *, region: str | None = None,
                 max_viewers: int = 0, max_out_bitrate: int = 0, healthy: bool = True) -> None:
        self.name, self.role, self.region = name, role, region
        self.max_viewers, self.max_out_bitrate = max_viewers, max_out_bitrate
        self.healthy = healthy
        self.load = 0
        self.version_string = "1.1.2"

    def observe(self, observer: object) -> None:
        pass


def pool_of(*nodes: FakeNode, **kwargs: object) -> NodePool:
    return NodePool(list(nodes), **kwargs)  # type: ignore[arg-type]


def test_viewers_are_counted_at_their_streams_bitrate() -> None:
    a = FakeNode("a", max_out_bitrate=10_000_000)
    b = FakeNode("b", max_out_bitrate=10_000_000)
    pool = pool_of(a, b)
    pool.stream_bitrate.update({"heavy": 4_000_000, "light": 500_000})
    assert pool.place_viewer("heavy", None) is a  # a tie: the first node
    # One heavy viewer weighs as much as eight light ones: b takes those eight
    # first (a ninth is a tie on fill; the node with fewer viewers, a, wins).
    placed = [pool.place_viewer("light", None).name for _ in range(9)]
    assert placed == ["b"] * 8 + ["a"]
    assert pool.load(a).out_bitrate == 4_500_000 and pool.load(b).out_bitrate == 4_000_000
    assert pool.place_viewer("light", None) is b  # b (4.0) has more room than a (4.5)
    assert (pool.load(a).viewers, pool.load(b).viewers) == (2, 9)


def test_tie_goes_to_the_node_with_the_mountpoint_and_full_nodes_are_skipped() -> None:
    a, b = FakeNode("a", max_viewers=2), FakeNode("b", max_viewers=2)
    pool = pool_of(a, b)
    assert pool.place_viewer("s", None, lambda n: n is b) is b
    assert pool.place_viewer("s", None, lambda n: n is b) is a  # b has less room now
    assert pool.place_viewer("s", None, lambda n: n is b) is b  # tie: b holds the mountpoint
    assert pool.place_viewer("s", None) is a
    with pytest.raises(CapacityExhausted) as full:
        pool.place_viewer("s", None)
    assert full.value.status == 503 and full.value.retry_after
    pool.viewer_left(a, "s")
    assert pool.place_viewer("s", None) is a


def test_bitrate_budget_skips_a_node_the_viewer_would_overfill() -> None:
    a = FakeNode("a", max_out_bitrate=3_000_000)
    b = FakeNode("b", max_out_bitrate=20_000_000)
    pool = pool_of(a, b, default_bitrate=2_000_000)
    pool.stream_bitrate["hd"] = 5_000_000
    assert pool.place_viewer("hd", None) is b  # 5 Mbit/s never fits a 3 Mbit/s budget
    assert pool.place_viewer("sd", None) is a  # default 2 Mbit/s fits; a is emptier
    for _ in range(3):
        assert pool.place_viewer("hd", None) is b  # up to 20 Mbit/s exactly
    with pytest.raises(CapacityExhausted):
        pool.place_viewer("hd", None)  # 25 > 20 on b, 7 > 3 on a
    with pytest.raises(CapacityExhausted):
        pool.place_viewer("sd", None)  # 2 more on a is 4 > 3; on b 22 > 20


def test_draining_and_down_nodes_take_no_viewers() -> None:
    a, b = FakeNode("a"), FakeNode("b")
    pool = pool_of(a, b)
    pool.draining.add("a")
    assert {pool.place_viewer("s", None).name for _ in range(3)} == {"b"}
    b.healthy = False
    with pytest.raises(CapacityExhausted):
        pool.place_viewer("s", None)  # a is up but draining
    a.healthy = False
    with pytest.raises(MediaServerUnavailable) as down:
        pool.place_viewer("s", None)
    assert type(down.value) is MediaServerUnavailable


def test_viewers_stay_in_their_region_and_others_are_redirected() -> None:
    eu, us, any_ = FakeNode("eu", region="eu"), FakeNode("us", region="us"), FakeNode("x")
    regions = RegionMap(own="eu", networks={"us": ["198.51.100.0/24"], "eu": ["0.0.0.0/0"]},
                        gateways={"us": "https://us.example.net", "eu": "https://eu.example.net"})
    pool = pool_of(eu, us, any_, regions=regions)
    assert regions.region_of("198.51.100.7") == "us"
    assert regions.region_of("203.0.113.9") == "eu"
    assert regions.region_of("203.0.113.9", asked="us") == "us"
    assert regions.region_of(None) == "eu"
    with pytest.raises(ViewerInOtherRegion) as moved:
        pool.route_viewer("cam", "us")
    assert moved.value.status == 307
    assert moved.value.headers["Location"] == "https://us.example.net/whep/cam"
    pool.route_viewer("cam", "eu")  # ours: no redirect
    placed = {pool.place_viewer("cam", "eu").name for _ in range(4)}
    assert placed == {"eu", "x"}, "an unlabelled node serves every region"
    assert pool.place_viewer("cam", "ap").name in {"x"}, "no node of ap: unlabelled ones"


def test_meter_turns_janus_byte_counters_into_stream_bitrates() -> None:
    pool = pool_of(FakeNode("a"))
    meter = BitrateMeter(pool, sample=lambda: None)
    meter.record([("cam", 1_000)], now=10.0)
    assert pool.bitrate_of("cam") == pool.default_bitrate  # one reading is no rate yet
    meter.record([("cam", 251_000)], now=12.0)
    assert pool.bitrate_of("cam") == 1_000_000
    meter.record([], now=14.0)
    assert "cam" not in pool.stream_bitrate


def test_publishers_skip_draining_ingest_nodes() -> None:
    a, b, e = FakeNode("a", "ingest"), FakeNode("b", "both"), FakeNode("e")
    pool = pool_of(a, b, e)
    a.load, b.load = 0, 5
    assert pool.for_publisher() is a
    pool.drain("a")
    assert pool.for_publisher() is b
    pool.drain("b")
    with pytest.raises(CapacityExhausted):
        pool.for_publisher()
    pool.undrain("a")
    assert pool.for_publisher() is a
