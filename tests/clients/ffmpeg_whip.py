"""Publish a test pattern with FFmpeg's WHIP muxer, as PyAV ships it.

Run as a separate process (``python -m tests.clients.ffmpeg_whip URL``) so a
muxer stuck in its handshake can be killed: ``av.open(..., format="whip")``
does ICE and DTLS inside ``write_header`` and blocks until both end.

It prints ``connected`` once the header is written (ICE and DTLS done), then
one ``sent N`` line a second, and exits 0 after ``--seconds``.  A failed
handshake surfaces as the exception PyAV raises, and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from fractions import Fraction

import av


def pattern(index: int) -> av.VideoFrame:
    """A grey frame whose brightness and a bright bar move with ``index``."""
    frame = av.VideoFrame(320, 240, "yuv420p")
    column = (index * 3) % 320
    row = bytes([(index * 4) % 200] * column + [255] * 8 + [(index * 4) % 200] * (312 - column))
    luma = frame.planes[0]
    luma.update(b"".join(row[:320] + bytes(luma.line_size - 320) for _ in range(240)))
    for chroma in frame.planes[1:]:
        chroma.update(bytes([128]) * chroma.buffer_size)
    return frame


def publish(url: str, seconds: float, options: dict[str, str]) -> int:
    container = av.open(url, "w", format="whip", options=options)
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    # Constrained baseline (no B-frames), a keyframe a second: what the muxer
    # and browsers expect.
    stream.options = {"profile": "baseline", "tune": "zerolatency", "preset": "ultrafast",
                      "g": "30", "bf": "0"}
    stream.codec_context.time_base = Fraction(1, 30)
    sent = 0
    started = time.monotonic()
    next_report = started + 1
    header_written = False
    try:
        while time.monotonic() - started < seconds:
            frame = pattern(sent)
            frame.pts = sent
            frame.time_base = Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)  # the first mux writes the header: ICE + DTLS
                if not header_written:
                    header_written = True
                    print("connected", flush=True)
            sent += 1
            if time.monotonic() >= next_report:
                print(f"sent {sent}", flush=True)
                next_report += 1
            # Real time: the muxer paces nothing by itself.
            time.sleep(max(0.0, started + sent / 30 - time.monotonic()))
    finally:
        container.close()  # DELETEs the WHIP resource
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a WHIP muxer option, e.g. cert_file=/path/cert.pem")
    args = parser.parse_args()
    options = dict(o.split("=", 1) for o in args.option)
    if os.environ.get("FFMPEG_WHIP_DEBUG"):  # FFmpeg's own log on stderr, for diagnosis
        av.logging.set_level(av.logging.DEBUG)
    try:
        return publish(args.url, args.seconds, options)
    except av.error.FFmpegError as exc:
        print(f"failed: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
