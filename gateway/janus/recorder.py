"""Janus's recordings (.mjr files) and its post-processor, ``janus-pp-rec``.

A VideoRoom room created with a recording folder writes one ``.mjr`` file per
medium of its publisher there (``RoomOptions.record_dir``).  Each file starts
with the magic ``MJR00002``, a 16-bit big-endian length and a JSON header
that Janus writes on the first packet: kind (``t``), codec (``c``) and the
wall-clock time of that first packet in microseconds (``u``), which is what
lines audio up with video.  ``janus-pp-rec`` (Debian's ``janus-tools``)
turns one file into one single-medium file; joining them is the muxer's job
(``gateway.core.recording_job``).  Everything that knows Janus's file format
or the tool's flags lives here.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"MJR00002"
POSTPROCESSOR = "janus-pp-rec"

# What janus-pp-rec writes for each codec (``janus-pp-rec -F`` in 1.1.2).
_EXTENSIONS = {
    "opus": "opus", "multiopus": "opus", "pcmu": "wav", "pcma": "wav", "g722": "wav",
    "vp8": "webm", "vp9": "webm", "h264": "mkv", "h265": "mkv", "av1": "mp4",
}


class MjrError(Exception):
    """A .mjr file that cannot be read or converted; the message says why."""


@dataclass(frozen=True)
class MjrHeader:
    kind: str  # "audio" | "video" | "data"
    codec: str
    first_packet_us: int  # wall clock, microseconds since the epoch


def recording_files(folder: Path) -> list[Path]:
    """The .mjr files Janus wrote into a recording folder, in name order."""
    return sorted(folder.glob("*.mjr"))


def read_header(path: Path) -> MjrHeader:
    """Read a .mjr file's JSON header (without running janus-pp-rec)."""
    try:
        with path.open("rb") as f:
            magic = f.read(8)
            if magic != MAGIC:
                raise MjrError(f"{path.name}: not a Janus recording (magic {magic[:8]!r})")
            raw_len = f.read(2)
            if len(raw_len) < 2:
                raise MjrError(f"{path.name}: no header (no media was recorded)")
            (length,) = struct.unpack("!H", raw_len)
            info = json.loads(f.read(length))
    except OSError as exc:
        raise MjrError(f"{path.name}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise MjrError(f"{path.name}: damaged header") from None
    kinds = {"a": "audio", "v": "video", "d": "data"}
    if not isinstance(info, dict) or info.get("t") not in kinds or not info.get("c"):
        raise MjrError(f"{path.name}: damaged header")
    return MjrHeader(kind=kinds[info["t"]], codec=str(info["c"]).lower(),
                     first_packet_us=int(info.get("u") or info.get("s") or 0))


def postprocessor_path() -> str | None:
    return shutil.which(POSTPROCESSOR) or (
        "/usr/bin/janus-pp-rec" if Path("/usr/bin/janus-pp-rec").exists() else None)


def extract(path: Path, header: MjrHeader, out_dir: Path) -> Path:
    """Run janus-pp-rec on one .mjr file; returns the single-medium file it wrote.

    Runs in the conversion subprocess, never on the event loop.
    """
    ext = _EXTENSIONS.get(header.codec)
    if ext is None:
        raise MjrError(f"{path.name}: janus-pp-rec cannot convert {header.codec}")
    tool = postprocessor_path()
    if tool is None:
        raise MjrError("janus-pp-rec is not installed (Debian package janus-tools)")
    target = out_dir / f"{path.stem}.{ext}"
    done = subprocess.run([tool, "--disable-colors", "--debug-level=3", str(path), str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise MjrError(f"janus-pp-rec failed on {path.name}: {why}")
    return target
