"""``python -m conformance``: run the suite against any WHIP/WHEP server.

    python -m conformance --whip 'http://host/whip/{stream}' --whep 'http://host/whep/{stream}' \\
        [--token T] [--viewer-token T] [--json report.json] [--markdown report.md] [--only PATTERN]

``{stream}`` in a URL is replaced by a stream name the suite makes up for
each publish (``conf-<run>-<n>-<purpose>``), so runs never collide with real
streams.  A URL without it is used as is for every request: then the
server sees one stream, and the suite publishes to it one session at a time.

Exit status: 0 when every MUST passed, 1 when any MUST failed, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .context import Config
from .report import print_plain, print_table, to_json, to_markdown
from .runner import Check, Result, all_checks, run_suite, select

RICH_HINT = ("conformance: install rich for a table (pip install rich, or the [conformance] extra); "
             "plain output follows")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m conformance",
        description="Black-box WHIP (RFC 9725) and WHEP (draft-ietf-wish-whep-03) conformance suite.",
        epilog="Without {stream} in a URL the URL is used as is for every publish and view; "
               "pass --stream NAME when only one of the two URLs has the placeholder, or to watch a "
               "stream someone else publishes when there is no --whip.",
    )
    p.add_argument("--whip", metavar="URL", help="WHIP endpoint URL, e.g. http://host/whip/{stream}")
    p.add_argument("--whep", metavar="URL", help="WHEP endpoint URL, e.g. http://host/whep/{stream}")
    p.add_argument("--token", metavar="T", help="publish token (sent as Authorization: Bearer T)")
    p.add_argument("--viewer-token", metavar="T", help="viewer token for the WHEP endpoint")
    p.add_argument("--stream", metavar="NAME", help="use this stream name instead of made-up ones")
    p.add_argument("--json", metavar="FILE", type=Path, help="write the JSON report here")
    p.add_argument("--markdown", metavar="FILE", type=Path, help="write the Markdown report here")
    p.add_argument("--only", metavar="PATTERN", action="append",
                   help="run checks whose id matches: a glob (whip.patch.*) or a substring (whep); "
                        "repeat or comma-separate for several")
    p.add_argument("--timeout", metavar="S", type=float, default=30.0,
                   help="seconds one check may take before it counts as failed (default 30)")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--list", action="store_true", help="list the checks and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines while running")
    return p


def list_checks(checks: list[Check]) -> None:
    for c in checks:
        print(f"{c.id:44} {c.level.value:6} {c.reference}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checks = select(all_checks(), args.only)
    if args.list:
        list_checks(checks)
        return 0
    if not args.whip and not args.whep:
        build_parser().error("give --whip and/or --whep")
    if not checks:
        build_parser().error(f"no check matches {args.only}")
    config = Config(whip=args.whip, whep=args.whep, token=args.token, viewer_token=args.viewer_token,
                    stream=args.stream, verify_tls=not args.insecure)
    try:
        import rich  # noqa: F401
        has_rich = True
    except ImportError:
        has_rich = False
        print(RICH_HINT, file=sys.stderr)

    def progress(result: Result) -> None:
        if not args.quiet:
            mark = {"pass": "+", "fail": "x", "skip": "-"}[result.status.value]
            print(f"  {mark} {result.check.id}", file=sys.stderr, flush=True)

    report = asyncio.run(run_suite(config, only=args.only, on_result=progress))
    if not (has_rich and print_table(report)):
        print_plain(report, sys.stdout)
    if args.json:
        args.json.write_text(to_json(report))
    if args.markdown:
        args.markdown.write_text(to_markdown(report))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
