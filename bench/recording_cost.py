"""What converting a recording costs, per minute of media.

    sudo .venv/bin/python bench/recording_cost.py                 # 60 s, 640x360, H.264 and VP8
    sudo .venv/bin/python bench/recording_cost.py --noise      # a picture that costs bits

One real Janus 1.1.2 and the gateway (in this process, with ``record = ["*"]``)
in a private network namespace; two aiortc publishers (H.264 + Opus on one
stream, VP8 + Opus on another) send a moving test pattern for ``--seconds``
at once, then end.  Both sessions are then converted one after the other,
as the gateway always does (janus-pp-rec + PyAV in a subprocess).  Reported
per recording: seconds of media, bytes, bitrate, the wall time of its
conversion (the record's ``conversion_s``) and that time per minute of media;
and the CPU time of all conversion processes together (RUSAGE_CHILDREN
around the conversions: janus-pp-rec and the muxer; the managed Janus is not
waited for until the end, so it is not in it) per minute of media.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # noqa: F401  (puts the repository on sys.path)

TOKEN = "bench-recording-token-0123456789"


def noisy(track_cls: Any) -> Any:
    """The test pattern with random luma: encoders then run at their bitrate cap,
    as a camera's picture makes them, instead of ~160 kbit/s of easy bars."""
    import os

    class Noise(track_cls):  # type: ignore[misc, valid-type]
        async def recv(self) -> Any:
            frame = await super().recv()
            plane = frame.planes[0]
            plane.update(os.urandom(plane.line_size * plane.height))
            return frame

    return Noise


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    import uvicorn
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from gateway.app import SERVER_OPTIONS, create_app
    from gateway.clients.media import TestPatternTrack, ToneTrack
    from gateway.clients.whip import WhipSession, prefer_codec
    from gateway.config import JanusNodeSettings, load_settings
    from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
    from tests.sandbox import INTERFACE

    janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, debug_level=3))
    janus.start()
    folder = Path(tempfile.mkdtemp(prefix="recording-cost-"))
    port = free_port()
    settings = load_settings(
        host="127.0.0.1", port=port, admin_token=TOKEN, record=["*"], recordings_dir=folder,
        recordings_min_free_mb=0,
        janus=[JanusNodeSettings(url=janus.cfg.api_url, admin_url=janus.cfg.admin_url,
                                 admin_secret=janus.cfg.admin_secret,
                                 plugin_admin_key=janus.cfg.plugin_admin_key)])
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", **SERVER_OPTIONS))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(timeout=20) as http:
            pcs, sessions = [], []
            for stream, codec in (("bench-h264", "video/H264"), ("bench-vp8", "video/VP8")):
                pc = RTCPeerConnection()
                pc.addTransceiver(ToneTrack(), direction="sendonly")
                video = noisy(TestPatternTrack) if args.noise else TestPatternTrack
                pc.addTransceiver(video(args.width, args.height, args.fps), direction="sendonly")
                prefer_codec(pc, "video", codec)
                await pc.setLocalDescription(await pc.createOffer())
                whip = WhipSession(f"{base}/whip/{stream}", http=http)
                response = await whip.post_offer(pc.localDescription.sdp)
                response.raise_for_status()
                await pc.setRemoteDescription(RTCSessionDescription(whip.answer or "", "answer"))
                pcs.append(pc)
                sessions.append(whip)
            await asyncio.sleep(args.seconds)
            cpu_before = children_cpu()
            for whip in sessions:
                await whip.delete()
            for pc in pcs:
                await pc.close()
            deadline = time.monotonic() + 600
            records: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                records = (await http.get(f"{base}/api/recordings", headers=auth)).json()["recordings"]
                if len(records) == 2 and all(r["state"] in ("ready", "failed") for r in records):
                    break
                await asyncio.sleep(0.2)
            cpu = children_cpu() - cpu_before
    finally:
        server.should_exit = True
        await serving
        janus.stop()
    media_min = sum(r.get("duration_s") or 0 for r in records) / 60
    out = {
        "params": vars(args),
        "recordings": [{
            "stream": r["stream"], "state": r["state"], "container": r.get("container"),
            "media_s": r.get("duration_s"), "bytes": r.get("size"),
            "kbit_s": round((r.get("size") or 0) * 8 / 1000 / max(r.get("duration_s") or 1, 1), 1),
            "conversion_s": r.get("conversion_s"),
            "conversion_s_per_media_min": round((r.get("conversion_s") or 0)
                                                / max((r.get("duration_s") or 1) / 60, 1e-9), 3),
            "error": r.get("error"),
        } for r in records],
        "conversion_cpu_s": round(cpu, 3),
        "conversion_cpu_s_per_media_min": round(cpu / media_min, 3) if media_min else None,
    }
    for f in sorted(folder.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    folder.rmdir()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--noise", action="store_true",
                        help="random picture: the encoders' full bitrate (about 1 Mbit/s in aiortc)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not harness.enter_netns("recording_cost"):
        return 2
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if all(r["state"] == "ready" for r in results["recordings"]) else 1


if __name__ == "__main__":
    sys.exit(main())
