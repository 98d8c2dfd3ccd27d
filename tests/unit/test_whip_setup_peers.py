"""bench/whip_setup.py against simple-whip-server: the pure parts.

Ratios and targets per kind of peer, the printed table, the peer's config and
package files, the one-line crash cause, how failures are grouped, the ABBA
order and the command line.  The run itself needs root, Janus and node (see
bench/README.md); these parts need none of them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from peer_simple_whip import (  # noqa: E402
    DEBIAN,
    UPSTREAM,
    Crash,
    config_shim,
    crash_cause,
    debian_config,
    debian_package_json,
    error_kind,
    findings,
    install_upstream,
    peer_command,
    upstream_dependencies,
    write_stub,
)
from whip_setup import parse_args, widths  # noqa: E402
from whip_setup_sides import STATE, abba  # noqa: E402
from whip_setup_report import report, summary, table, targets  # noqa: E402


def side(seq: list[float], conc: list[float]) -> dict:
    return {"sequential": summary(seq), "concurrent": summary(conc),
            "round_wall": summary([0.1]), "errors": [], "cpu_ms_per_publish": {"janus": 1.0}}


def test_targets_against_a_whip_server_are_ratios_of_one() -> None:
    gateway = side([0.010, 0.012, 0.014], [0.100, 0.120])
    peer = side([0.009, 0.012, 0.015], [0.110, 0.130])
    t = targets(gateway, peer, DEBIAN)
    assert t["ratio_p50"] == pytest.approx(1.0)
    assert t["ratio_p50_ok"] is True
    assert t["concurrent_ratio_p95"] == pytest.approx(0.119 / 0.129)
    assert t["concurrent_p95_ok"] is True
    slower = targets(side([0.020], [0.2]), peer, UPSTREAM)
    assert not slower["ratio_p50_ok"] and not slower["concurrent_p95_ok"]


def test_targets_against_direct_keep_their_own_thresholds() -> None:
    t = targets(side([0.011], [0.080]), side([0.010], [0.070]), "direct")
    assert t["ratio_p50"] == pytest.approx(1.1)
    assert t["ratio_p50_ok"] is True  # <= 1.10
    assert t["concurrent_p95_ok"] is True  # 80 ms <= 90 ms


def test_ratio_of_an_empty_side_is_nan_not_an_error() -> None:
    t = targets(side([0.01], [0.1]), side([], []), DEBIAN)
    assert math.isnan(t["ratio_p50"])


def results_for(peers: list[str]) -> dict:
    params = {"concurrent": 20, "sequential": 3, "rounds": 1, "offers": 2, "block": 1,
              "settle_ms": 0.0, "gap_ms": 5.0, "peer_room": "own"}
    out = {"params": params, "peers": peers, "gateway": side([0.010], [0.100]),
           "elapsed_s": 1.0, "peer_versions": {DEBIAN: "0.0~git20230201-1"},
           "machine": {"nproc": 2, "cpu": "x", "kernel": "k", "python": "3.11", "janus": "1.1.2",
                       "gateway_commit": "abc", "packages": {"httpx": "1", "uvicorn": "1",
                                                            "starlette": "1", "aiortc": "1"}}}
    for name in peers:
        out[name] = side([0.008], [0.125])
    out["targets"] = {name: targets(out["gateway"], out[name], name) for name in peers}
    return out


def test_table_has_a_column_and_a_ratio_per_peer() -> None:
    lines = table(results_for([DEBIAN, "direct"]), [DEBIAN, "direct"])
    assert "simple-whip-server" in lines[0] and "direct" in lines[0]
    p50 = next(line for line in lines if line.startswith("sequential p50"))
    assert p50.split()[-4:] == ["8.00", "1.25", "8.00", "1.25"]
    conc = next(line for line in lines if line.startswith("concurrent-20 p95"))
    assert conc.split()[-1] == "0.80"


def test_report_names_versions_pacing_and_targets() -> None:
    text = report(results_for([DEBIAN]))
    assert "simple-whip-server: 0.0~git20230201-1; a room and a display name per endpoint" in text
    assert "gap 5 ms" in text
    assert "target sequential gateway/simple-whip-server p50 <= 1.00: 1.25  MISS" in text
    assert "target concurrent-20 gateway/simple-whip-server p95 <= 1.00: 0.80  PASS" in text


def test_debian_config_points_at_the_bench_janus() -> None:
    config = debian_config("ws://127.0.0.1:8999", 7123)
    assert config["janus"] == {"address": "ws://127.0.0.1:8999"}
    assert config["port"] == 7123 and config["rest"] == "/whip"
    assert "require(process.env.SIMPLE_WHIP_CONFIG)" in config_shim()
    deps = debian_package_json()["dependencies"]
    assert deps["express"].startswith("4.") and deps["colors"] == "1.4.0"


def test_peer_command_writes_the_config_the_shim_reads(tmp_path: Path) -> None:
    argv, env, cwd = peer_command(DEBIAN, tmp_path / "sws", tmp_path, "ws://127.0.0.1:1", 2)
    assert argv[-1] == "src/server.js" and cwd == tmp_path / "sws"
    assert json.loads(Path(env["SIMPLE_WHIP_CONFIG"]).read_text())["port"] == 2
    assert not any(k.startswith("DEBUG") for k in env)
    argv, env, cwd = peer_command(UPSTREAM, tmp_path / "up", tmp_path, "ws://127.0.0.1:1", 3)
    assert argv[1].endswith("peer_simple_whip_upstream.mjs")
    assert env["PEER_DIR"] == str(tmp_path / "up") and env["PORT"] == "3"


def test_upstream_dependencies_leave_out_what_npm_lacks(tmp_path: Path) -> None:
    manifest = {"dependencies": {"janode": "^1.8.0", "janode-ndi": "^1.0.0", "cors": "^2.8.5"}}
    assert upstream_dependencies(manifest) == {"janode": "^1.8.0", "cors": "^2.8.5"}
    write_stub(tmp_path, "janode-ndi")
    assert json.loads((tmp_path / "janode-ndi" / "package.json").read_text())["type"] == "module"
    assert "export default" in (tmp_path / "janode-ndi" / "index.js").read_text()


def test_install_upstream_refuses_a_folder_that_is_not_the_library(tmp_path: Path) -> None:
    from peer_simple_whip import PeerUnavailable
    with pytest.raises(PeerUnavailable, match="not a checkout"):
        install_upstream(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "whip.js").write_text("")
    (tmp_path / "package.json").write_text('{"name": "something-else"}')
    with pytest.raises(PeerUnavailable, match="not the janus-whip-server library"):
        install_upstream(tmp_path)


NODE_CRASH = """WHIP REST API listening on *:35491
/x/src/whip-janus.js:328
\t\t\t\t\thandles[handle].publisher = data["id"];
TypeError: Cannot set properties of undefined (setting 'publisher')
    at /x/src/whip-janus.js:328:32

Node.js v20.20.2"""


def test_crash_cause_is_the_error_and_where() -> None:
    assert crash_cause(NODE_CRASH) == (
        "whip-janus.js:328 TypeError: Cannot set properties of undefined (setting 'publisher')")
    assert crash_cause("a\nb\nc\nd") == "b | c | d"


def test_error_kind_groups_alike_failures() -> None:
    a = error_kind("POST http://127.0.0.1:1/whip/endpoint/bench-e3: 500 'No such handle'")
    b = error_kind("POST http://127.0.0.1:1/whip/endpoint/bench-e7: 500 'No such handle'")
    assert a == b == "POST 500 'No such handle'"
    assert error_kind("ConnectError('All connection attempts failed')").startswith("ConnectError")


def test_findings_list_survival_crashes_and_leftovers() -> None:
    survival = [{"width": 20, "rounds": 2, "total": 40, "ok": 31, "crashes": 1,
                 "errors": {"POST 500 'No such handle'": 9}}]
    lines = findings(DEBIAN, survival, [Crash(1, NODE_CRASH, "round s20-0")],
                     {"handles_after_timed": 19, "sessions": 2, "handles": 5,
                      "sessions_after_stop": 0})
    text = "\n".join(lines)
    assert "20 at once x 2: 31/40 POSTs 201, crashes 1; errors: 9x POST 500 'No such handle'" in text
    assert "round s20-0: exit 1: whip-janus.js:328 TypeError" in text
    assert "5 handles in its 2 sessions; after it stopped: 0 sessions" in text
    assert "after the timed part (all DELETEd, 0 expected): 19" in text


def test_report_says_when_a_peer_lacks_samples() -> None:
    results = results_for([DEBIAN])
    results[DEBIAN]["expected"] = {"sequential": 1, "concurrent": 2}
    assert "(not comparable: simple-whip-server concurrent 1/2 POSTs got 201)" in report(results)


def test_abba_order_for_two_and_three_sides() -> None:
    assert [abba(i, "ab") for i in range(4)] == [list("ab"), list("ba"), list("ba"), list("ab")]
    assert abba(1, "gdp") == list("pdg")


def test_command_line_peers_and_survival() -> None:
    args = parse_args([])
    assert args.peer == ["direct"] and args.survival == []
    args = parse_args(["--peer", DEBIAN, "--peer", "direct", "--gap-ms", "20"])
    assert args.peer == [DEBIAN, "direct"] and args.survival == [20, 10, 5, 2]
    assert STATE.gap_s == pytest.approx(0.02) and STATE.settle_s == 0
    parse_args([])  # back to no pauses
    assert parse_args(["--peer", DEBIAN, "--survival", ""]).survival == []
    assert widths("5, 2") == [5, 2]
    with pytest.raises(SystemExit):
        parse_args(["--peer", UPSTREAM])  # needs --peer-dir
