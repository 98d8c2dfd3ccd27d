"""One recording's conversion: .mjr files in, one MP4 or WebM out.

It runs as its own process (``python -m gateway.core.recording_job FOLDER
NAME``), started by ``gateway.core.recordings.Converter``: a crash in
janus-pp-rec or in FFmpeg's muxers then cannot take the gateway down, and the
event loop never waits on disk-bound work.  It prints one JSON object per
line on stdout: ``{"progress": 0.4, "step": "..."}`` while it works, then
``{"ok": true, ...}`` with what it made, or ``{"ok": false, "error": ...}``.

Steps: janus-pp-rec turns each medium's .mjr into a single-medium file
(``gateway.janus.recorder``), then PyAV copies the packets of both into one
file without re-encoding, shifting each medium by the wall-clock time of its
first packet so that audio and video stay in sync.  H.264, H.265 and AV1 go
into MP4, VP8 and VP9 into WebM, each with its Opus audio.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

from gateway.janus.recorder import MjrError, MjrHeader, extract, read_header, recording_files

MP4_VIDEO = {"h264", "h265", "av1"}
WEBM_VIDEO = {"vp8", "vp9"}


class ConversionError(Exception):
    """Why a recording could not be converted, in a sentence for the operator."""


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def container_for(video_codec: str | None) -> str:
    """``mp4`` or ``webm``: the container that carries this video codec with Opus."""
    if video_codec in MP4_VIDEO:
        return "mp4"
    if video_codec in WEBM_VIDEO or video_codec is None:
        return "webm"
    raise ConversionError(f"no container for video codec {video_codec}")


def pick_tracks(folder: Path) -> list[tuple[Path, MjrHeader]]:
    """The first audio and the first video .mjr of the folder (data channels are skipped)."""
    chosen: dict[str, tuple[Path, MjrHeader]] = {}
    files = recording_files(folder)
    if not files:
        raise ConversionError("no .mjr file was recorded")
    for path in files:
        try:
            header = read_header(path)
        except MjrError as exc:
            raise ConversionError(str(exc)) from None
        if header.kind in ("audio", "video") and header.kind not in chosen:
            chosen[header.kind] = (path, header)
    if not chosen:
        raise ConversionError("the recording holds neither audio nor video")
    audio = chosen.get("audio")
    if audio is not None and audio[1].codec not in ("opus", "multiopus"):
        raise ConversionError(f"audio codec {audio[1].codec} cannot go into MP4 or WebM "
                              "without re-encoding")
    return [chosen[k] for k in ("video", "audio") if k in chosen]


def convert(folder: Path, name: str) -> dict[str, Any]:
    """Convert ``folder``'s .mjr files into ``folder/name.<mp4|webm>``; returns its facts."""
    import av  # the conversion process alone needs PyAV

    tracks = pick_tracks(folder)
    video = next((h for _, h in tracks if h.kind == "video"), None)
    fmt = container_for(video.codec if video else None)
    t0 = min(h.first_packet_us for _, h in tracks)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder))
    try:
        singles = []
        for i, (path, header) in enumerate(tracks):
            _say({"progress": round(0.6 * i / len(tracks), 3), "step": f"extracting {header.kind}"})
            try:
                singles.append((extract(path, header, work), header))
            except MjrError as exc:
                raise ConversionError(str(exc)) from None
        _say({"progress": 0.6, "step": "muxing"})
        target = folder / f"{name}.{fmt}"
        partial = folder / f".{name}.{fmt}.part"
        try:
            facts = _mux(av, singles, t0, partial, fmt)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)  # a failed mux leaves no half file
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    return {"ok": True, "file": target.name, "container": fmt, "size": target.stat().st_size,
            "codecs": {h.kind: h.codec for _, h in tracks}, **facts}


def _mux(av: Any, singles: list[tuple[Path, MjrHeader]], t0: int, target: Path,
         fmt: str) -> dict[str, Any]:
    """Copy every packet into one container, interleaved by time, without decoding."""
    inputs = [av.open(str(path)) for path, _ in singles]
    out = av.open(str(target), mode="w", format=fmt)
    facts: dict[str, Any] = {}
    try:
        feeds = []
        total = 0.0
        for container, (_, header) in zip(inputs, singles):
            stream = (container.streams.video or container.streams.audio)[0]
            o = out.add_stream_from_template(stream)
            if header.kind == "video":
                facts["width"], facts["height"] = stream.codec_context.width, stream.codec_context.height
            if container.duration:
                total = max(total, container.duration / 1_000_000)
            offset = Fraction(header.first_packet_us - t0, 1_000_000)
            feeds.append(_timed(container, stream, o, offset))
        end = 0.0
        told = 0.0
        for when, packet in heapq.merge(*feeds, key=lambda item: item[0]):
            out.mux(packet)
            end = max(end, when)
            if total and when - told >= 30:  # every 30 s of media, not per packet
                told = when
                _say({"progress": round(0.6 + 0.4 * min(when / total, 1.0), 3), "step": "muxing"})
        facts["duration_s"] = round(end, 3)
    finally:
        out.close()
        for container in inputs:
            container.close()
    return facts


def _timed(container: Any, stream: Any, out_stream: Any, offset: Fraction) -> Iterator[tuple[float, Any]]:
    """The stream's packets moved onto ``out_stream``, starting at ``offset`` seconds."""
    base: int | None = None
    shift = 0
    for packet in container.demux(stream):
        if packet.dts is None or packet.size == 0:
            continue
        tb = packet.time_base
        if base is None:
            base = packet.dts
            shift = int(offset / tb) - base
        packet.dts += shift
        if packet.pts is not None:
            packet.pts += shift
        packet.stream = out_stream
        yield float(packet.dts * tb), packet


def main(argv: list[str]) -> int:
    folder, name = Path(argv[0]), argv[1]
    try:
        result = convert(folder, name)
    except ConversionError as exc:
        _say({"ok": False, "error": str(exc)})
        return 1
    except Exception as exc:  # FFmpeg's errors come as many types; the operator gets a line
        _say({"ok": False, "error": f"muxing failed: {type(exc).__name__}: {exc}"})
        return 1
    _say(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
