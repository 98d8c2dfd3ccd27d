"""Recordings' domain without Janus: what is recorded, the disk floor, states,
the index after a crash, retention, the raw-file checks and the Range rules.

The end-to-end path (real Janus, janus-pp-rec, decoded files) is
tests/integration/test_recordings.py.
"""

from __future__ import annotations

import json
import logging
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import _serve_overrides, build_parser
from gateway.config import SettingsError, load_settings
from gateway.core.recording_job import ConversionError, container_for, pick_tracks
from gateway.core.recordings import RecordingIndex, RecordingPolicy, Recordings
from gateway.core.streams import PublisherChange, PublisherSession
from gateway.errors import RangeNotSatisfiable, RecordingNotFound, RecordingNotReady
from gateway.http.recordings import _single_range

GB = 1 << 30


def session(stream: str = "cam") -> PublisherSession:
    return PublisherSession(stream=stream, offer=None)  # type: ignore[arg-type]


def recordings(tmp_path: Path, *, free: int = 10 * GB, **policy: Any) -> Recordings:
    policy.setdefault("streams", ("*",))
    r = Recordings(RecordingPolicy(folder=tmp_path, **policy), free_bytes=lambda _: free)
    r.load()
    return r


def mjr(path: Path, kind: str | None = "v", codec: str = "vp8", u: int = 1_000_000) -> Path:
    body = b"MJR00002"
    if kind is not None:
        header = json.dumps({"t": kind, "c": codec, "s": u - 5, "u": u}).encode()
        body += struct.pack("!H", len(header)) + header
    path.write_bytes(body)
    return path


def test_which_streams_are_recorded(tmp_path: Path) -> None:
    r = recordings(tmp_path, streams=("cam", "talk"))
    assert r.records_stream("cam") and not r.records_stream("other")
    assert r.plan(session("other")) is None
    r.set_streams(["*"])
    assert r.records_stream("other")
    r.set_streams([])
    assert r.plan(session("cam")) is None


def test_each_session_gets_its_own_folder_and_record_from_first_media(tmp_path: Path) -> None:
    r = recordings(tmp_path)
    a, b = session(), session()
    fa, fb = r.plan(a), r.plan(b)
    assert fa and fb and fa != fb and Path(fa).parent == tmp_path.resolve()
    r.publisher_changed(a, PublisherChange.PUBLISHED)
    assert r.list() == [], "no record before the first media"
    r.publisher_changed(a, PublisherChange.LIVE)
    [record] = r.list()
    assert record["state"] == "recording" and record["stream"] == "cam"
    r.publisher_changed(a, PublisherChange.LIVE)  # live again after a stall: same recording
    assert len(r.list()) == 1

    Path(fb).mkdir()  # Janus made the folder, but no media ever came
    r.closed(b)
    assert not Path(fb).exists() and len(r.list()) == 1

    r.closed(a)
    [record] = r.list()
    assert record["state"] == "processing"
    assert record["progress"] == 0.0 and record["step"] == "queued", "progress is visible"
    with pytest.raises(RecordingNotReady) as busy:
        r.delete(record["id"])
    assert busy.value.status == 409 and busy.value.retry_after == 5
    with pytest.raises(RecordingNotReady):
        r.media(record["id"])
    saved = json.loads((tmp_path / "index.json").read_text())["recordings"]
    assert [x["state"] for x in saved] == ["processing"]


def test_below_the_free_space_floor_no_new_recording_but_a_log_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    r = recordings(tmp_path, free=100 << 20, min_free_bytes=GB)
    with caplog.at_level(logging.WARNING):
        assert r.plan(session("webinar")) is None
    assert "not recording stream webinar" in caplog.text and "publishing goes on" in caplog.text


def test_a_crash_leaves_failed_records_with_raw_files(tmp_path: Path) -> None:
    RecordingIndex(tmp_path).save([])
    raw = tmp_path / "r1"
    raw.mkdir()
    mjr(raw / "a-video-1.mjr")
    (tmp_path / "index.json").write_text(json.dumps({"recordings": [
        {"id": "r1", "stream": "cam", "state": "processing", "started_at": 10.0, "step": "muxing"},
        {"id": "r2", "stream": "cam", "state": "recording", "started_at": 20.0},
        {"id": "r3", "stream": "cam", "state": "ready", "started_at": 30.0, "file": "x.mp4",
         "container": "mp4"}]}))
    r = recordings(tmp_path)
    states = {x["id"]: (x["state"], x["error"]) for x in r.list()}
    assert states["r1"][0] == states["r2"][0] == "failed"
    assert "processing" in states["r1"][1] and "recording" in states["r2"][1]
    assert states["r3"] == ("ready", None)
    assert (raw / "a-video-1.mjr").exists()
    assert not list(tmp_path.glob(".index.json.tmp")), "atomic writes leave no temporary file"


def test_an_unreadable_index_is_kept_aside(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text("{not json")
    r = recordings(tmp_path)
    assert r.list() == []
    assert list(tmp_path.glob("index.unreadable-*"))


def test_retention_deletes_old_finished_recordings(tmp_path: Path) -> None:
    day = 86400.0
    (tmp_path / "index.json").write_text(json.dumps({"recordings": [
        {"id": "old", "stream": "a", "state": "ready", "started_at": 0.0, "ended_at": 1 * day},
        {"id": "oldfail", "stream": "a", "state": "failed", "started_at": 0.0},
        {"id": "new", "stream": "a", "state": "ready", "started_at": 9 * day, "ended_at": 9 * day}]}))
    for rid in ("old", "oldfail", "new"):
        (tmp_path / rid).mkdir()
    r = recordings(tmp_path, retention_days=7)
    assert sorted(r.expire(now=10 * day)) == ["old", "oldfail"]
    assert [x["id"] for x in r.list()] == ["new"]
    assert not (tmp_path / "old").exists() and (tmp_path / "new").exists()
    assert recordings(tmp_path, retention_days=0).expire(now=100 * day) == []
    with pytest.raises(RecordingNotFound):
        r.describe("old")


def test_raw_files_are_checked_before_janus_pp_rec(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="no .mjr"):
        pick_tracks(tmp_path)
    mjr(tmp_path / "x-audio-0.mjr", "a", "opus")
    mjr(tmp_path / "x-video-1.mjr", "v", "h264")
    mjr(tmp_path / "x-data-2.mjr", "d", "text")
    assert [h.kind for _, h in pick_tracks(tmp_path)] == ["video", "audio"]
    mjr(tmp_path / "x-audio-0.mjr", "a", "pcmu")
    with pytest.raises(ConversionError, match="pcmu"):
        pick_tracks(tmp_path)
    mjr(tmp_path / "x-audio-0.mjr", None)  # opened, but no packet ever came
    with pytest.raises(ConversionError, match="no header"):
        pick_tracks(tmp_path)
    (tmp_path / "x-audio-0.mjr").write_bytes(b"\0" * 40)
    with pytest.raises(ConversionError, match="not a Janus recording"):
        pick_tracks(tmp_path)


@pytest.mark.parametrize("codec,container", [
    ("h264", "mp4"), ("av1", "mp4"), ("h265", "mp4"), ("vp8", "webm"), ("vp9", "webm"), (None, "webm")])
def test_container_per_video_codec(codec: str | None, container: str) -> None:
    assert container_for(codec) == container


@pytest.mark.parametrize("header,served", [
    (None, False), ("bytes=0-99", True), ("bytes=-10", True), ("bytes=5-", True),
    ("bytes=0-1,5-9", False), ("items=0-1", False), ("bytes=9-2", False), ("bytes=-", False)])
def test_which_ranges_are_served(header: str | None, served: bool) -> None:
    assert _single_range(header, 1000) is served


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_a_range_outside_the_file_is_416(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        _single_range(header, 1000)
    assert exc.value.status == 416 and exc.value.headers == {"Content-Range": "bytes */1000"}


def test_record_setting_and_flag() -> None:
    args = build_parser().parse_args(["serve", "--record", "cam", "--record", "talk"])
    assert load_settings(**_serve_overrides(args)).record == ["cam", "talk"]
    assert load_settings(record=["*"]).record == ["*"]
    assert load_settings().record == [], "off by default"
    with pytest.raises(SettingsError, match="record"):
        load_settings(record=["a/b"])


async def test_a_conversion_process_that_dies_leaves_failed_with_raw_files(tmp_path: Path) -> None:
    """What a crash halfway through a conversion looks like from the gateway's side."""
    r = recordings(tmp_path)
    r.job_command = [sys.executable, "-c", "import os, signal, sys; "
                     "print('{\"progress\": 0.3, \"step\": \"muxing\"}', flush=True); "
                     "os.kill(os.getpid(), signal.SIGKILL)"]
    ready: list[dict[str, Any]] = []
    r.on_ready.append(ready.append)
    s = session()
    folder = Path(r.plan(s) or "")
    folder.mkdir()
    mjr(folder / "x-video-1.mjr")
    r.publisher_changed(s, PublisherChange.LIVE)
    r.start()
    r.closed(s)
    await r.close()
    [record] = r.list()
    assert record["state"] == "failed" and "signal 9" in record["error"], record
    assert (folder / "x-video-1.mjr").exists() and ready == []
    assert json.loads((tmp_path / "index.json").read_text())["recordings"][0]["state"] == "failed"


async def test_a_gateway_that_records_nothing_makes_no_folder(tmp_path: Path) -> None:
    r = Recordings(RecordingPolicy(folder=tmp_path / "recordings"))
    r.start()
    assert r.list() == [] and r.plan(session()) is None
    await r.close()
    assert not (tmp_path / "recordings").exists()
