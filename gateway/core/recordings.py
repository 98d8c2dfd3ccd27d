"""Recordings: which publish sessions are recorded, their records, conversion, retention.

A stream is recorded when its name is in the ``record`` list (``*``: every
stream).  Each publish session (one WHIP resource) of such a stream becomes
one recording, from its first media to its end; a publisher that reconnects
makes a new session, so a new recording.  Janus writes the raw .mjr files
into the recording's own folder under ``recordings_dir``; when the session
ends, one conversion at a time (a subprocess, ``recording_job``) turns them
into an MP4 or WebM in that folder and the raw files are deleted.  A failed
conversion keeps them and says why.

Records live in ``recordings_dir/index.json``, rewritten atomically on each
change of state, so a crash leaves either the old or the new index.  At
start, a recording still marked ``recording`` or ``processing`` was cut by
a crash: it becomes ``failed`` and keeps its raw files.

States: recording -> processing -> ready | failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable

from gateway.core.streams import PublisherChange, PublisherSession, StreamRegistry
from gateway.errors import RecordingNotFound, RecordingNotReady

log = logging.getLogger(__name__)

INDEX = "index.json"
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm"}


class RecordingState(Enum):
    RECORDING = "recording"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


@dataclass
class Recording:
    id: str
    stream: str
    state: str = RecordingState.RECORDING.value
    started_at: float = field(default_factory=time.time)  # first media, epoch seconds
    ended_at: float | None = None
    duration_s: float | None = None
    size: int | None = None
    codecs: dict[str, str] = field(default_factory=dict)
    container: str | None = None
    file: str | None = None
    width: int | None = None
    height: int | None = None
    error: str | None = None
    conversion_s: float | None = None  # wall-clock time the conversion took
    progress: float | None = None  # 0..1 while processing
    step: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recording:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def describe(self, folder: Path) -> dict[str, Any]:
        """The record as the API shows it (times as RFC 3339 UTC)."""
        out: dict[str, Any] = asdict(self)
        out["started_at"] = _iso(self.started_at)
        out["ended_at"] = _iso(self.ended_at) if self.ended_at else None
        if self.state == RecordingState.RECORDING.value:
            out["duration_s"] = round(time.time() - self.started_at, 3)
            out["size"] = _folder_bytes(folder)
        if self.state == RecordingState.READY.value:
            out["media"] = f"/api/recordings/{self.id}/media"
        if self.state != RecordingState.PROCESSING.value:
            out.pop("progress"), out.pop("step")
        return out


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _folder_bytes(folder: Path) -> int:
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    except OSError:
        return 0


@dataclass(frozen=True)
class RecordingPolicy:
    folder: Path
    streams: tuple[str, ...] = ()  # names; "*" is every stream
    min_free_bytes: int = 1024 * 1024 * 1024
    retention_days: float = 0.0  # 0: keep forever
    shutdown_grace: float = 30.0  # seconds a stopping gateway lets queued conversions finish


class RecordingIndex:
    """``index.json``: every record, written whole and atomically."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / INDEX

    def load(self) -> dict[str, Recording]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Never start over silently: keep the unreadable index beside a fresh one.
            aside = self.path.with_suffix(f".unreadable-{int(time.time())}")
            log.error("recordings index %s unreadable (%s); moved to %s", self.path, exc, aside.name)
            os.replace(self.path, aside)
            return {}
        return {r["id"]: Recording.from_json(r) for r in data.get("recordings", [])}

    def save(self, records: Iterable[Recording]) -> None:
        tmp = self.path.with_name(f".{INDEX}.tmp")
        body = json.dumps({"recordings": [asdict(r) for r in records]}, indent=1)
        with tmp.open("w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass
class _Plan:
    """A recorded publish session before and while it records."""

    id: str
    folder: Path
    record: Recording | None = None  # made on the first media


FreeBytes = Callable[[Path], int]


def _free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class Recordings:
    """What is recorded, the records, and the one-at-a-time conversion worker.

    Ingest asks ``plan`` before opening a publisher's room (the folder Janus
    records into, or None) and calls ``closed`` once Janus let go of the
    session; the registry tells it when media first arrives (LIVE).
    """

    def __init__(self, policy: RecordingPolicy, registry: StreamRegistry | None = None,
                 free_bytes: FreeBytes = _free_bytes) -> None:
        self.policy = policy
        self.folder = policy.folder.resolve()
        self.streams: set[str] = set(policy.streams)
        self._free_bytes = free_bytes
        self._index = RecordingIndex(self.folder)
        self._records: dict[str, Recording] = {}
        self._plans: weakref.WeakKeyDictionary[PublisherSession, _Plan] = weakref.WeakKeyDictionary()
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._janitor: asyncio.Task[None] | None = None
        self._job: asyncio.subprocess.Process | None = None
        self._loaded = False
        # The conversion process; its arguments are the folder and the file's name.
        self.job_command: list[str] = [sys.executable, "-m", "gateway.core.recording_job"]
        # Told of each finished conversion (e.g. the recording.ready/failed webhooks).
        self.on_ready: list[Callable[[dict[str, Any]], None]] = []
        self.on_failed: list[Callable[[dict[str, Any]], None]] = []
        if registry is not None:
            registry.subscribe(self)

    # -- lifecycle ----------------------------------------------------------

    def load(self) -> None:
        """Read the index; what a crash cut short becomes ``failed`` with its raw files."""
        if self._loaded:
            return
        self._loaded = True
        self.folder.mkdir(parents=True, exist_ok=True)
        self._records = self._index.load()
        cut = 0
        for record in self._records.values():
            if record.state in (RecordingState.RECORDING.value, RecordingState.PROCESSING.value):
                was = record.state
                record.state = RecordingState.FAILED.value
                record.error = (f"the gateway stopped while this recording was {was}; "
                                "its raw .mjr files are kept")
                record.progress = record.step = None
                cut += 1
        if cut:
            log.warning("recordings: %d cut short by a stop or crash, marked failed", cut)
            self._save()

    def start(self) -> None:
        # A gateway that records nothing and never did makes no folder.
        if self.streams or self._index.path.exists():
            self.load()
        self._worker = asyncio.create_task(self._work(), name="recordings-worker")
        if self.policy.retention_days > 0:
            self._janitor = asyncio.create_task(self._retention_loop(), name="recordings-retention")

    async def close(self) -> None:
        """Let queued conversions finish (up to ``shutdown_grace``), then stop the worker."""
        if self._janitor is not None:
            self._janitor.cancel()
        if self._worker is None:
            return
        try:
            async with asyncio.timeout(self.policy.shutdown_grace):
                await self._queue.join()
        except TimeoutError:
            log.warning("recordings: conversions still queued at stop; they will be marked failed")
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        self._worker = None

    # -- which streams ------------------------------------------------------

    def records_stream(self, stream: str) -> bool:
        return "*" in self.streams or stream in self.streams

    def set_streams(self, streams: Iterable[str]) -> None:
        """Change the list; sessions already publishing keep their decision."""
        self.streams = set(streams)
        log.info("recordings: recording %s", sorted(self.streams) or "nothing")

    # -- hooks from ingest and the registry ---------------------------------

    def plan(self, session: PublisherSession) -> str | None:
        """The folder Janus records this session into, or None when it is not recorded."""
        if not self.records_stream(session.stream):
            return None
        self.load()
        free = self._free_bytes(self.folder)
        if free < self.policy.min_free_bytes:
            log.warning("recordings: not recording stream %s: %d MB free in %s, below the "
                        "floor of %d MB (publishing goes on)", session.stream, free >> 20,
                        self.folder, self.policy.min_free_bytes >> 20)
            return None
        rid = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)
        plan = _Plan(id=rid, folder=self.folder / rid)
        self._plans[session] = plan
        return str(plan.folder)

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        plan = self._plans.get(publisher)
        if plan is None or change is not PublisherChange.LIVE or plan.record is not None:
            return
        codecs = ({s.kind: s.codec for s in publisher.backend.streams if s.codec}
                  if publisher.backend else {})
        plan.record = Recording(id=plan.id, stream=publisher.stream, codecs=codecs)
        self._records[plan.id] = plan.record
        self._save()
        log.info("recordings: %s started for stream %s", plan.id, publisher.stream)

    def closed(self, session: PublisherSession) -> None:
        """Janus has closed the session's files: queue the conversion."""
        plan = self._plans.pop(session, None)
        if plan is None:
            return
        if plan.record is None:  # never had media: nothing to keep
            shutil.rmtree(plan.folder, ignore_errors=True)
            return
        record = plan.record
        record.ended_at = time.time()
        record.duration_s = round(record.ended_at - record.started_at, 3)
        record.state = RecordingState.PROCESSING.value
        record.progress, record.step = 0.0, "queued"
        self._save()
        self._queue.put_nowait(record.id)

    # -- the API's questions --------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        records = sorted(self._records.values(), key=lambda r: r.started_at)
        return [r.describe(self.folder / r.id) for r in records]

    def get(self, rid: str) -> Recording:
        record = self._records.get(rid)
        if record is None:
            raise RecordingNotFound(f"no recording {rid!r}")
        return record

    def describe(self, rid: str) -> dict[str, Any]:
        return self.get(rid).describe(self.folder / rid)

    def media(self, rid: str) -> tuple[Path, str, str]:
        """(path, media type, download name) of a ready recording's file."""
        record = self.get(rid)
        if record.state != RecordingState.READY.value or not record.file or not record.container:
            raise _not_ready(record)
        path = self.folder / rid / record.file
        if not path.is_file():
            raise RecordingNotFound(f"recording {rid}'s file is missing")
        return path, MEDIA_TYPES[record.container], record.file

    def delete(self, rid: str) -> None:
        record = self.get(rid)
        if record.state not in (RecordingState.READY.value, RecordingState.FAILED.value):
            raise _not_ready(record)
        self._remove(record)

    def expire(self, now: float | None = None) -> list[str]:
        """Delete finished recordings older than the retention; returns their ids."""
        if self.policy.retention_days <= 0:
            return []
        limit = (now if now is not None else time.time()) - self.policy.retention_days * 86400
        old = [r for r in self._records.values()
               if r.state in (RecordingState.READY.value, RecordingState.FAILED.value)
               and (r.ended_at or r.started_at) < limit]
        for record in old:
            log.info("recordings: %s (stream %s) is past the retention of %g days: deleted",
                     record.id, record.stream, self.policy.retention_days)
            self._remove(record)
        return [r.id for r in old]

    # -- internals -----------------------------------------------------------

    def _remove(self, record: Recording) -> None:
        shutil.rmtree(self.folder / record.id, ignore_errors=True)
        self._records.pop(record.id, None)
        self._save()

    def _save(self) -> None:
        self._index.save(sorted(self._records.values(), key=lambda r: r.started_at))

    async def _retention_loop(self) -> None:
        while True:
            self.expire()
            await asyncio.sleep(min(3600.0, self.policy.retention_days * 86400 / 4))

    async def _work(self) -> None:
        """One conversion at a time, in a subprocess, in the order sessions ended."""
        while True:
            rid = await self._queue.get()
            try:
                record = self._records.get(rid)
                if record is not None:
                    await self._convert(record)
            except asyncio.CancelledError:
                if self._job is not None and self._job.returncode is None:
                    self._job.send_signal(signal.SIGKILL)
                raise
            except Exception:
                log.exception("recordings: conversion of %s failed unexpectedly", rid)
            finally:
                self._queue.task_done()

    async def _convert(self, record: Recording) -> None:
        folder = self.folder / record.id
        started = time.monotonic()
        record.progress, record.step = 0.0, "starting"
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        name = f"{record.stream}-{record.id}"
        self._job = await asyncio.create_subprocess_exec(
            *self.job_command, str(folder), name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
        result: dict[str, Any] | None = None
        other: list[str] = []
        assert self._job.stdout is not None
        async for raw in self._job.stdout:
            line = raw.decode(errors="replace").strip()
            try:
                message = json.loads(line) if line.startswith("{") else None
            except ValueError:
                message = None
            if message is None:
                if line:
                    other = (other + [line])[-5:]
            elif "ok" in message:
                result = message
            else:
                record.progress = float(message.get("progress", record.progress or 0))
                record.step = str(message.get("step", record.step))
        code = await self._job.wait()
        self._job = None
        record.progress = record.step = None
        record.conversion_s = round(time.monotonic() - started, 3)
        if result is not None and result.get("ok"):
            for key in ("file", "container", "size", "width", "height", "duration_s"):
                setattr(record, key, result.get(key))
            record.codecs = dict(result.get("codecs") or record.codecs)
            record.state = RecordingState.READY.value
            for raw_file in folder.glob("*.mjr"):
                raw_file.unlink(missing_ok=True)
            log.info("recordings: %s ready (%s, %.1f s of media, converted in %.2f s)",
                     record.id, record.file, record.duration_s or 0, record.conversion_s)
        else:
            record.state = RecordingState.FAILED.value
            if result is not None:
                record.error = str(result.get("error"))
            else:
                why = f"signal {-code}" if code < 0 else f"exit status {code}"
                record.error = f"the conversion process died ({why})" + (
                    f": {other[-1]}" if other else "")
            log.warning("recordings: %s failed: %s (raw files kept in %s)", record.id,
                        record.error, folder)
        self._save()
        ready = record.state == RecordingState.READY.value
        described = record.describe(folder)
        for listener in list(self.on_ready if ready else self.on_failed):
            try:
                listener(described)
            except Exception:
                log.exception("recordings: a %s listener failed", record.state)


def _not_ready(record: Recording) -> RecordingNotReady:
    if record.state == RecordingState.FAILED.value:
        return RecordingNotReady(f"recording {record.id} failed: {record.error}")
    return RecordingNotReady(f"recording {record.id} is still {record.state}", retry_after=5)
