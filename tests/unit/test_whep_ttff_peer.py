"""bench/whep_ttff.py against a WHEP peer: its pure parts.

The ratios gateway/peer and the issue-13 verdict the report prints, the
analysis of a run with a peer side (clocks start at the POST on both WHEP
sides), what the peer's mountpoint copies from the gateway's settings, the
command line, and the process wrapper the gateway and the peer share.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness import LoggedProcess
from peer_janus_whep import read_probes
from whep_ttff import parse_args
from whep_ttff_report import (
    HANDOVER,
    analyse,
    handover,
    peer_verdict,
    pooled,
    ratios,
    report,
)
from whep_ttff_scenario import NATIVE, ViewerRecord, zero_field
from whep_ttff_sides import gateway_bufferkf

PEER = "janus-whep-server"


def figures(signalling: tuple[float, float], ttff: tuple[float, float], n: int = 5) -> dict:
    return {"signalling": {"n": n, "p50_ms": signalling[0], "p95_ms": signalling[1]},
            "ttff": {"n": n, "p50_ms": ttff[0], "p95_ms": ttff[1]}}


def test_ratios_are_gateway_over_the_other_side() -> None:
    out = ratios(figures((10, 40), (90, 300)), figures((20, 40), (60, 600)))
    assert out == {"signalling_p50": 0.5, "signalling_p95": 1.0, "ttff_p50": 1.5, "ttff_p95": 0.5}


def test_ratios_are_nan_when_the_other_side_has_nothing() -> None:
    out = ratios(figures((10, 40), (90, 300)), figures((math.nan, math.nan), (math.nan, math.nan), 0))
    assert all(math.isnan(v) for v in out.values())


def test_verdict_passes_at_one_and_below_only() -> None:
    lines = peer_verdict({"signalling_p50": 0.5, "signalling_p95": 1.0, "ttff_p50": 1.01,
                          "ttff_p95": math.nan})
    assert [line.split()[-1] for line in lines] == ["PASS", "PASS", "MISS", "-"]
    assert lines[2].split()[:2] == ["ttff", "p50"]


def test_clock_starts_at_the_post_on_every_whep_side() -> None:
    assert zero_field("gateway") == zero_field(PEER) == "t_post"
    assert zero_field(NATIVE) == "t_attach"
    assert ViewerRecord(PEER, 0, 0, t_post=1.0, t_attach=2.0).t_zero == 1.0
    assert ViewerRecord(NATIVE, 0, 0, t_post=1.0, t_attach=2.0).t_zero == 2.0


RESOURCE_IDS = itertools.count()


def viewer(side: str, go: float, signalling_ms: float, ttff_ms: float) -> dict:
    t = go + 0.001
    rec = ViewerRecord(side, 0, 0, t_go=go, t_post=t, t_201=t + signalling_ms / 1000,
                       status=201, session=f"http://x/{side}/{next(RESOURCE_IDS)}",
                       t_srd=t + (signalling_ms + 5) / 1000, t_ice=t + (signalling_ms + 20) / 1000,
                       t_connected=t + (signalling_ms + 30) / 1000,
                       t_rtp=t + (signalling_ms + 40) / 1000, t_kf=t + (ttff_ms - 30) / 1000,
                       t_frame=t + ttff_ms / 1000, frames=60, hold_frames=60, vp8_pt=97)
    return asdict(rec)


def batch(side: str, round_no: int, rows: list[tuple[float, float]]) -> dict:
    go = 100.0 + round_no * 10
    cpu = {"janus": 0.1, "gateway": 0.05, "peer": 0.02}
    return {"side": side, "round": round_no, "go": go, "prep_s": 0.1, "settle_s": 1.0,
            "cpu_cores_join": cpu, "cpu_s_join": cpu, "other_cores_join": 0.2, "loadavg": 1.0,
            "go_received_ms": [], "woke_ms": [], "teardown_s": 0.1, "teardown_errors": [],
            "publisher_plis": [0.05], "viewers": [viewer(side, go, s, t) for s, t in rows]}


def peer_run() -> dict:
    return {
        "params": {"against": PEER, "viewers": 2, "rounds": 2, "procs": 1, "warm": False,
                   "probes": False, "hold": 2.0},
        "machine": {"nproc": 2, "cpu": "test", "kernel": "k", "python": "3.11", "janus": "1.4.1",
                    "aiortc": "1.16.0", "peer": f"{PEER} 1.1.0, node v20"},
        "setup": {"gateway": {"mountpoint": {"pts": {"audio": 96, "video": 97}, "threads": 2,
                                             "bufferkf": True}, "made": "by its first viewer"},
                  PEER: {"mountpoint": {"pts": {"audio": 96, "video": 97}, "threads": 2,
                                        "bufferkf": True}, "made": "by the bench"}},
        "batches": [batch("gateway", 0, [(10, 100), (15, 250)]),
                    batch(PEER, 0, [(20, 200), (20, 200)]),
                    batch(PEER, 1, [(20, 200), (20, 200)]),
                    batch("gateway", 1, [(10, 100), (15, 250)])],
        "peer_subscribers_left": 0,
    }


def test_analyse_compares_the_gateway_with_the_peer() -> None:
    a = analyse(peer_run(), [], [])
    assert set(a) >= {"gateway", PEER, "ratio"} and NATIVE not in a
    assert a["gateway"]["viewers"] == a[PEER]["viewers"] == 4
    assert a["gateway"]["signalling"]["p50_ms"] == pytest.approx(12.5)
    assert a[PEER]["ttff"]["p50_ms"] == pytest.approx(200)
    assert a["ratio"]["signalling_p50"] == pytest.approx(12.5 / 20)
    assert a["ratio"]["ttff_p50"] == pytest.approx(175 / 200)
    assert a["ratio"]["ttff_p95"] == pytest.approx(250 / 200)
    assert "apply answer" in a[PEER]["steps_p50_ms"]  # the WHEP steps, not native's


def test_report_names_the_peer_its_set_up_and_the_verdict() -> None:
    results = peer_run()
    results["analysis"] = analyse(results, [], [])
    text = report(results)
    assert f"peer: {PEER} 1.1.0, node v20" in text
    assert f"set-up {PEER}: mountpoint PTs {{'audio': 96, 'video': 97}}, threads 2" in text
    header = next(line for line in text.splitlines() if line.startswith("(ms)"))
    assert header.split()[1:3] == ["gateway", PEER]
    verdict = text.split("target (issue 13 item 3)", 1)[1].splitlines()
    assert [line.split()[-1] for line in verdict[1:5]] == ["PASS", "PASS", "PASS", "MISS"]
    assert f"{PEER} still listing subscribers after the DELETEs: 0" in text


def test_report_against_native_has_no_peer_verdict() -> None:
    results = peer_run()
    results["params"]["against"] = NATIVE
    for b in results["batches"]:
        if b["side"] == PEER:
            b["side"] = NATIVE
            for v in b["viewers"]:
                v["side"], v["t_attach"], v["t_offer"] = NATIVE, v["t_post"], v["t_201"]
    del results["setup"], results["machine"]["peer"], results["peer_subscribers_left"]
    results["analysis"] = analyse(results, [], [])
    text = report(results)
    assert "issue 13" not in text and "set-up" not in text
    assert results["analysis"]["ratio"]["signalling_p50"] == pytest.approx(12.5 / 20)


def test_peer_mountpoint_follows_the_gateway_keyframe_setting() -> None:
    args = argparse.Namespace(gateway_env=None, bufferkf=False)
    assert gateway_bufferkf(args) is True  # the gateway's default
    args.gateway_env = ["WHIP_GATEWAY_MOUNTPOINT_BUFFER_KEYFRAME=false"]
    assert gateway_bufferkf(args) is False
    args.bufferkf = True
    assert gateway_bufferkf(args) is True


def fake_chroot(tmp_path: Path) -> Path:
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/janus").write_text("")
    return tmp_path


def test_against_the_peer_wants_a_sid_janus_and_a_warm_up(tmp_path: Path) -> None:
    args = parse_args(["--against", PEER, "--janus-sid", str(fake_chroot(tmp_path))])
    assert args.against == PEER and args.janus_sid == tmp_path
    with pytest.raises(SystemExit):
        parse_args(["--against", PEER, "--janus-sid", str(tmp_path), "--warmup", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--against", PEER, "--janus-sid", str(tmp_path / "nowhere")])
    assert parse_args([]).against == NATIVE and parse_args([]).janus_sid is None


def test_logged_process_keeps_its_output_and_exit_status(tmp_path: Path) -> None:
    proc = LoggedProcess(["sh", "-c", "echo one; echo two; exit 3"], None, tmp_path / "log")
    proc.proc.wait(10)
    assert proc.log_tail(1) == "two"
    assert proc.stop() == 3


def test_peer_probe_lines_are_read_by_resource_id(tmp_path: Path) -> None:
    log = tmp_path / "peer.log"
    log.write_text("[WHEP] [info] started\n"
                   'bench-probe {"t_app": 1.5, "t_finish": 1.52, "status": 201, '
                   '"location": "/whep/resource/abc"}\n'
                   'bench-probe {"t_app": 2.0, "t_finish": 2.1, "status": 500, "location": null}\n')
    assert read_probes(log) == {"abc": {"t_app": 1.5, "t_finish": 1.52, "status": 201,
                                        "location": "/whep/resource/abc"}}
    assert read_probes(tmp_path / "missing.log") == {}


def test_handover_cuts_a_post_in_three_joined_by_resource_id() -> None:
    recs = [{"session": "http://127.0.0.1:1/whep/resource/abc", "t_post": 1.0, "t_201": 1.1},
            {"session": "http://127.0.0.1:1/whep/resource/zzz", "t_post": 1.0, "t_201": 1.1},
            {"session": None, "t_post": 1.0, "t_201": None}]
    out = handover(recs, {"abc": {"t_app": 1.02, "t_finish": 1.07}}, "t_app", "t_finish")
    assert [out[name]["n"] for name in HANDOVER] == [1, 1, 1]
    assert [out[name]["p50_ms"] for name in HANDOVER] == pytest.approx([20, 50, 30])


def test_without_gateway_probes_only_the_peer_is_cut_in_three() -> None:
    results = peer_run()
    peer_ids = {v["session"].rsplit("/", 1)[-1]: {"t_app": v["t_post"] + 0.002,
                                                 "t_finish": v["t_201"] - 0.001}
                for b in results["batches"] if b["side"] == PEER for v in b["viewers"]}
    a = analyse(results, [], [], peer_ids)
    assert "handover" not in a["gateway"]
    assert a[PEER]["handover"][HANDOVER[0]]["p50_ms"] == pytest.approx(2)
    results["analysis"] = a
    line = next(x for x in report(results).splitlines() if x.strip().startswith(HANDOVER[0]))
    assert line.split()[-6:] == ["-", "/", "-", "2", "/", "2"]


def test_pooled_runs_are_one_run_with_every_batch() -> None:
    one, two = peer_run(), peer_run()
    two["batches"] = two["batches"][:2]
    out = pooled([one, two])
    assert out["params"]["rounds"] == 4 and len(out["batches"]) == 6
    assert out["analysis"]["gateway"]["viewers"] == 6 and out["analysis"][PEER]["viewers"] == 6
    assert "issue 13" in report(out)
    two["params"] = {**two["params"], "viewers": 50}
    with pytest.raises(ValueError):
        pooled([one, two])


def test_a_dead_peer_is_one_finding_and_no_verdict() -> None:
    results = peer_run()
    results["batches"] = [b for b in results["batches"] if b["side"] == "gateway"][:1]
    results["peer_finding"] = results["peer_died"] = "janus-whep-server exited with status -9"
    results["analysis"] = analyse(results, [], [])
    text = report(results)
    assert text.count("FINDING: janus-whep-server exited with status -9") == 1
    verdict = text.split("target (issue 13 item 3)", 1)[1].splitlines()[1:5]
    assert [line.split()[-1] for line in verdict] == ["-"] * 4
