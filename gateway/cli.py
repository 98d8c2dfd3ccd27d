"""``whip-gateway``: the one command-line entry point.

``serve`` runs the gateway.  Settings come from ``--config`` (TOML), then
``WHIP_GATEWAY_*`` environment variables, then these flags.  A bad setting
ends the program with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from .config import IceServer, JanusNodeSettings, SettingsError, load_settings


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
        "stream_keys": _pairs(args.stream_key, "--stream-key"),
        "ice_servers": [_ice_server(v) for v in args.ice_server] if args.ice_server else None,
        "log_level": args.log_level,
    }


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .nodes import build_backend

    try:
        settings = load_settings(args.config, **_serve_overrides(args))
        backend = build_backend(settings)
    except (SettingsError, FileNotFoundError, ValueError) as exc:
        print(f"whip-gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Janus call is noise
    if not settings.stream_keys:
        logging.getLogger("gateway").warning(
            "no stream keys configured: anyone who can reach the gateway may publish"
        )
    app = create_app(settings, backend)
    where = f"http://{settings.host}:{settings.port}"
    logging.getLogger("gateway").info("WHIP endpoint: %s/whip/<stream>", settings.public_url or where)
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            log_level=settings.log_level, proxy_headers=True)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


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
    s.add_argument("--stream-key", action="append", metavar="STREAM=KEY",
                   help='publish key for a stream ("*" for every stream); repeatable')
    s.add_argument("--ice-server", action="append", metavar="URL[,USER,CREDENTIAL]",
                   help="STUN/TURN server announced in Link headers; repeatable")
    s.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    s.set_defaults(run=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"whip-gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
