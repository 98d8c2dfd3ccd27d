"""``whip-gateway``: the one command-line entry point.

``serve`` runs the gateway.  Settings come from ``--config`` (TOML), then
``WHIP_GATEWAY_*`` environment variables, then these flags.  A bad setting
ends the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from gateway.config import IceServer, JanusNodeSettings, SettingsError, load_settings


def _pairs(values: list[str] | None, flag: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        name, sep, key = value.partition("=")
        if not sep or not name:
            raise SettingsError(f"{flag} takes NAME=VALUE, not {value!r}")
        out[name] = key
    return out


def _ice_server(value: str) -> IceServer:
    """``turn:host:3478?transport=udp,user,secret`` or ``stun:host:3478``."""
    url, *creds = value.split(",")
    try:
        return IceServer(url=url, username=creds[0] if creds else None,
                         credential=creds[1] if len(creds) > 1 else None)
    except ValidationError as exc:
        raise SettingsError(f"--ice-server {value!r}: {exc.errors()[0]['msg']}") from None


def _janus_node(url: str) -> JanusNodeSettings:
    try:
        return JanusNodeSettings(url=url)
    except ValidationError as exc:
        raise SettingsError(f"--janus {url!r}: {exc.errors()[0]['msg']}") from None


def _serve_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": args.host,
        "port": args.port,
        "public_url": args.public_url,
        "janus": [_janus_node(u) for u in args.janus] if args.janus else None,
        "janus_ice_enforce_list": args.janus_interface,
        "janus_nat_1_1_mapping": args.janus_nat_1_1,
        "janus_rtp_port_range": args.janus_rtp_ports,
        "janus_egress_nodes": args.egress_nodes,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "stream_keys": _pairs(args.stream_key, "--stream-key"),
        "viewer_keys": _pairs(args.viewer_key, "--viewer-key"),
        "ice_servers": [_ice_server(v) for v in args.ice_server] if args.ice_server else None,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "trusted_proxies": args.trusted_proxy,
        "record": args.record,
    }


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import SERVER_OPTIONS, create_app
    from gateway.backend import build_backend

    try:
        settings = load_settings(args.config, **_serve_overrides(args))
        backend = build_backend(settings)
    except (SettingsError, FileNotFoundError, ValueError) as exc:
        print(f"whip-gateway: {exc}", file=sys.stderr)
        return 2
    from gateway.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Janus call is noise
    if not settings.stream_keys:
        logging.getLogger("gateway").warning(
            "no stream keys configured: anyone who can reach the gateway may publish"
        )
    app = create_app(settings, backend, config_file=args.config)
    scheme = "https" if settings.tls_cert else "http"
    where = f"{scheme}://{settings.host}:{settings.port}"
    logging.getLogger("gateway").info("WHIP endpoint: %s/whip/<stream>", settings.public_url or where)
    tls = ({"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
           if settings.tls_cert else {})
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, log_config=None,  # our handler
                            **tls, **SERVER_OPTIONS)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


# -- publish / play: a WHIP publisher and a WHEP player, for trying a gateway out --


class _Progress:
    """One status line a second: rewritten in place on a terminal, one line each otherwise."""

    def __init__(self, in_place: bool) -> None:
        self.in_place = in_place and sys.stdout.isatty()
        self.width = 0

    def show(self, text: str) -> None:
        if self.in_place:
            sys.stdout.write("\r" + text + " " * max(0, self.width - len(text)))
            self.width = len(text)
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def done(self) -> None:
        if self.in_place and self.width:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.width = 0


def _client_failure(exc: BaseException) -> int:
    """The one-line message for what went wrong talking to the server; exit status 1."""
    import httpx

    from gateway.clients.whip import WhipClientError

    if isinstance(exc, WhipClientError):
        request = exc.response.request
        message = f"{request.method} {request.url}: {exc.summary}"
    elif isinstance(exc, httpx.HTTPError):
        try:
            where = f"{exc.request.method} {exc.request.url}: "
        except RuntimeError:  # an error raised before any request was made
            where = ""
        message = f"{where}{type(exc).__name__}: {exc or 'no detail'}"
    else:
        message = f"{type(exc).__name__}: {exc}"
    print(f"whip-gateway: {message}", file=sys.stderr)
    return 1


def _stop_on_signals() -> "asyncio.Event":
    """Ctrl-C and SIGTERM set the event, so the session is always DELETEd."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals
            pass
    return stop


async def _tick(stop: "asyncio.Event", started: float, duration: float | None) -> bool:
    """Wait up to a second (less if the duration ends sooner); False when it is time to stop."""
    import asyncio

    loop = asyncio.get_running_loop()
    wait = 1.0
    if duration is not None:
        wait = min(wait, started + duration - loop.time())
    if wait > 0 and not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), wait)
        except asyncio.TimeoutError:
            pass
    return not stop.is_set() and (duration is None or loop.time() < started + duration)


async def _end_session(session: Any, pc: Any, status: int) -> int:
    """DELETE the resource and close; a failed DELETE makes the exit status 1."""
    import httpx

    from gateway.clients.whip import WhipClientError

    try:
        if session.location:
            response = await session.delete()
            if response.status_code not in (200, 204):
                status = _client_failure(WhipClientError(response))
    except httpx.HTTPError as exc:
        status = _client_failure(exc)
    finally:
        await pc.close()
        await session.aclose()
    return status


_CODECS = {"vp8": "video/VP8", "h264": "video/H264"}


async def _publish(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from gateway.clients.media import TestPatternTrack, ToneTrack
    from gateway.clients.whip import CountingTrack, WhipClientError, publish, publish_file

    stop = _stop_on_signals()
    codec = _CODECS.get(args.codec) if args.codec else None
    tracks: list[CountingTrack] = []
    try:
        if args.file:
            pc, session, tracks = await publish_file(args.url, args.file, token=args.token,
                                                     video_codec=codec)
        else:
            tracks = [CountingTrack(ToneTrack()), CountingTrack(TestPatternTrack())]
            pc, session = await publish(args.url, list(tracks), token=args.token, video_codec=codec)
    except (WhipClientError, httpx.HTTPError) as exc:
        for track in tracks:
            track.stop()
        return _client_failure(exc)
    except (OSError, ValueError) as exc:  # the file: missing, unreadable, no media
        print(f"whip-gateway: {args.file}: {exc}", file=sys.stderr)
        return 1
    print(f"publishing to {session.location}", flush=True)

    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = _Progress(in_place=True)
    last: dict[str, tuple[int, float]] = {}
    status = 0
    try:
        while await _tick(stop, started, args.duration):
            if _connection_lost(pc, progress):
                status = 1
                break
            now = loop.time()
            parts = [f"{now - started:6.1f}s", f"{pc.connectionState:<10}"]
            sent = {s.kind: s for s in (await pc.getStats()).values() if s.type == "outbound-rtp"}
            for track in tracks:
                stats = sent.get(track.kind)
                total = stats.bytesSent if stats else 0
                before, then = last.get(track.kind, (0, started))
                kbps = (total - before) * 8 / 1000 / max(now - then, 1e-3)
                last[track.kind] = (total, now)
                parts.append(f"{track.kind} {track.frames} frames {kbps:6.0f} kbit/s")
            progress.show(" | ".join(parts))
    finally:
        progress.done()
        for track in tracks:
            track.stop()
        status = await _end_session(session, pc, status)
    frames = ", ".join(f"{t.kind} {t.frames} frames" for t in tracks)
    print(f"stopped after {loop.time() - started:.1f}s: {frames} sent", flush=True)
    return status


def _connection_lost(pc: Any, progress: Any) -> bool:
    """Report a failed or closed PeerConnection; True when the loop must end."""
    if pc.connectionState not in ("failed", "closed"):
        return False
    progress.done()
    print(f"whip-gateway: the connection {pc.connectionState}", file=sys.stderr)
    return True


def publish_command(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_publish(args))


async def _play(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from gateway.clients.whep import play
    from gateway.clients.whip import WhipClientError

    stop = _stop_on_signals()
    try:
        pc, session, counter = await play(
            args.url, token=args.token, mode="counter-offer" if args.counter_offer else "offer",
            video_codec=_CODECS.get(args.codec) if args.codec else None, record=args.record)
    except (WhipClientError, httpx.HTTPError) as exc:
        return _client_failure(exc)
    except (OSError, ValueError) as exc:  # the recording file
        print(f"whip-gateway: {exc}", file=sys.stderr)
        return 1
    print(f"playing {session.location}", flush=True)

    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = _Progress(in_place=not args.stats)
    status = 0
    try:
        while await _tick(stop, started, args.duration):
            if _connection_lost(pc, progress):
                status = 1
                break
            sample = await counter.sample(pc)
            size = f"{counter.width}x{counter.height}" if counter.width else "-"
            first = (f"first frame {counter.first_frame_at - counter.created_at:.2f}s"
                     if counter.first_frame_at else "no frame yet")
            progress.show(" | ".join([
                f"{loop.time() - started:6.1f}s", f"{pc.connectionState:<10}",
                f"video {counter.video_frames} frames {size} {sample.fps:4.1f} fps",
                f"audio {counter.audio_frames} frames", f"{sample.bitrate / 1000:6.0f} kbit/s", first,
            ]))
            if args.stats:
                for kind, stats in sorted(sample.inbound.items()):
                    print(f"  inbound-rtp {kind}: ssrc={stats['ssrc']} packets={stats['packetsReceived']}"
                          f" lost={stats['packetsLost']} jitter={stats['jitter']}", flush=True)
    finally:
        progress.done()
        if pc.connectionState != "closed":
            await counter.sample(pc)  # the final byte count
        await counter.stop()  # finishes the recording
        status = await _end_session(session, pc, status)
    print(f"stopped after {loop.time() - started:.1f}s: video {counter.video_frames} frames"
          f" ({counter.width}x{counter.height}), audio {counter.audio_frames} frames, "
          f"{counter.bytes} bytes received" + (f", recorded to {args.record}" if args.record else ""),
          flush=True)
    if status == 0 and not (counter.video_frames or counter.audio_frames):
        print("whip-gateway: no media was received", file=sys.stderr)
        status = 1
    return status


def play_command(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_play(args))


# Commands that run an aiortc peer: ``serve`` never imports aiortc, so it is an
# optional extra (``[clients]``) and these say so when it is missing.
CLIENT_COMMANDS = frozenset({"publish", "play", "offer"})


def _add_client_commands(commands: Any) -> None:
    p = commands.add_parser("publish", help="publish a file or a test pattern over WHIP")
    p.add_argument("url", help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/cam")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="media file to publish, looped (anything FFmpeg reads)")
    source.add_argument("--test-pattern", action="store_true", help="moving bars and a 440 Hz tone")
    p.add_argument("--token", help="bearer token (the stream key)")
    p.add_argument("--codec", choices=sorted(_CODECS), help="offer only this video codec")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    p.set_defaults(run=publish_command)

    w = commands.add_parser("play", help="play a stream over WHEP and report what arrives")
    w.add_argument("url", help="WHEP endpoint, e.g. http://127.0.0.1:8080/whep/cam")
    w.add_argument("--token", help="bearer token")
    w.add_argument("--record", metavar="FILE", help="also write what arrives to FILE (.mp4, .webm, ...)")
    w.add_argument("--stats", action="store_true", help="print inbound-rtp statistics every second")
    w.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    w.add_argument("--counter-offer", action="store_true",
                   help="ask the server to offer (POST no SDP, PATCH the answer)")
    w.add_argument("--codec", choices=sorted(_CODECS), help="accept only this video codec")
    w.set_defaults(run=play_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whip-gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    s = commands.add_parser("serve", help="run the gateway")
    s.add_argument("--config", type=Path, help="TOML settings file")
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 8080)")
    s.add_argument("--public-url", help="base URL clients use, for Location headers")
    s.add_argument("--janus", action="append", metavar="URL",
                   help="Janus HTTP API URL (repeat for several nodes); none: start a local Janus")
    s.add_argument("--janus-interface", metavar="IFACES",
                   help="managed Janus: gather ICE candidates only on these interfaces")
    s.add_argument("--janus-nat-1-1", metavar="IP",
                   help="managed Janus behind 1:1 NAT: the public IP to put in its candidates")
    s.add_argument("--janus-rtp-ports", metavar="MIN-MAX",
                   help="managed Janus: UDP ports for media (default 20000-40000); open them "
                   "in the firewall for publishers and viewers on other machines")
    s.add_argument("--egress-nodes", type=int, metavar="N",
                   help="managed mode: run N egress Janus processes (default 1; one per core "
                   "or two uses a large machine)")
    s.add_argument("--tls-cert", type=Path, metavar="PEM",
                   help="serve HTTPS with this certificate (chain); needs --tls-key")
    s.add_argument("--tls-key", type=Path, metavar="PEM", help="private key for --tls-cert")
    s.add_argument("--stream-key", action="append", metavar="STREAM=KEY",
                   help='publish key for a stream ("*" for every stream); repeatable')
    s.add_argument("--ice-server", action="append", metavar="URL[,USER,CREDENTIAL]",
                   help="STUN/TURN server announced in Link headers; repeatable")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.add_argument("--log-format", choices=["text", "json"], help="log lines as text or JSON")
    s.add_argument("--viewer-key", action="append", metavar="STREAM=TOKEN",
                   help='viewer token for a stream ("*" for every stream); repeatable')
    s.add_argument("--trusted-proxy", action="append", metavar="ADDRESS|CIDR",
                   help="reverse proxy whose X-Forwarded-For names the client; repeatable")
    s.add_argument("--record", action="append", metavar="STREAM",
                   help='record this stream\'s publish sessions ("*": every stream); repeatable')
    s.set_defaults(run=serve)

    c = commands.add_parser("config", help="check a settings file")
    checks = c.add_subparsers(dest="config_command", required=True)
    cc = checks.add_parser("check", help="print the effective settings as JSON, secrets masked; "
                           "exit 2 naming a bad setting")
    cc.add_argument("file", type=Path, help="TOML settings file")
    cc.set_defaults(run=config_check)

    o = commands.add_parser("offer", help="print an SDP offer (Opus + H.264 or VP8), "
                            "for trying a WHIP or WHEP endpoint with curl")
    o.add_argument("--viewer", action="store_true", help="a recvonly offer, for WHEP")
    o.add_argument("--codec", choices=sorted(_CODECS), default="h264", help="video codec (default h264)")
    o.add_argument("--no-audio", action="store_true", help="video only")
    o.set_defaults(run=offer_command)

    t = commands.add_parser("viewer-token", help="mint a signed viewer token (JWT)")
    t.add_argument("stream", help='the stream it opens ("*" for every stream)')
    t.add_argument("--ttl", type=float, default=3600, help="seconds it stays valid (default 3600)")
    t.add_argument("--config", type=Path, help="TOML settings file holding viewer_jwt_secret")
    t.set_defaults(run=viewer_token)

    _add_client_commands(commands)
    return parser


async def _offer(codec: str, audio: bool, viewer: bool = False) -> str:
    from aiortc import RTCPeerConnection

    from gateway.clients.media import TestPatternTrack, ToneTrack
    from gateway.clients.whip import prefer_codec

    pc = RTCPeerConnection()
    try:
        if viewer:  # WHEP: receive only
            if audio:
                pc.addTransceiver("audio", direction="recvonly")
            pc.addTransceiver("video", direction="recvonly")
        else:
            if audio:
                pc.addTransceiver(ToneTrack(), direction="sendonly")
            pc.addTransceiver(TestPatternTrack(), direction="sendonly")
        prefer_codec(pc, "video", codec)
        # aiortc gathers every candidate before it returns: the offer is complete.
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def offer_command(args: argparse.Namespace) -> int:
    """Print an offer a curl user can POST.  Nothing answers it, so no media
    flows; it shows the HTTP side (201, Location, ETag, the SDP answer)."""
    sys.stdout.write(asyncio.run(_offer(_CODECS[args.codec], not args.no_audio, args.viewer)))
    return 0


def viewer_token(args: argparse.Namespace) -> int:
    from gateway.core.auth import mint_viewer_token

    settings = load_settings(args.config)
    if not settings.viewer_jwt_secret:
        raise SettingsError("viewer_jwt_secret is not set (WHIP_GATEWAY_VIEWER_JWT_SECRET or --config)")
    print(mint_viewer_token(settings.viewer_jwt_secret, args.stream, args.ttl))
    return 0


def config_check(args: argparse.Namespace) -> int:
    """Print the effective settings (file, then environment) with secrets masked."""
    from gateway.configcheck import check

    print(check(args.file))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS and importlib.util.find_spec("aiortc") is None:
        print(f"whip-gateway: '{args.command}' needs the WebRTC client extra: "
              "pip install 'whip-gateway[clients]'", file=sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"whip-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
