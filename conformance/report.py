"""Three views of one run: a terminal table (rich, or plain text without it),
JSON for machines, Markdown for issues and pull requests.

All three list every check with its spec section and level, so a server
author can go from a red line straight to the paragraph it is about.
"""

from __future__ import annotations

import json
from typing import IO, Any

from .runner import Level, Report, Result, Status

STATUS_STYLE = {Status.PASS: "green", Status.FAIL: "red", Status.SKIP: "yellow"}
LEVEL_STYLE = {Level.MUST: "bold", Level.SHOULD: "", Level.MAY: "dim"}


def summary_line(report: Report) -> str:
    c = report.counts()
    musts, shoulds = len(report.must_failures), len(report.should_failures)
    verdict = "CONFORMANT (every MUST passed)" if not musts else f"NOT CONFORMANT: {musts} MUST failure(s)"
    if report.rate_limited and not musts:
        verdict = (f"INCOMPLETE: no MUST failed, but {len(report.rate_limited)} check(s) were "
                   "rate-limited (429) and could not conclude")
    return (f"{verdict}; {c['pass']} passed, {c['fail']} failed ({shoulds} SHOULD), "
            f"{c['skip']} skipped in {report.duration:.1f} s")


def as_dict(report: Report) -> dict[str, Any]:
    counts = report.counts()
    return {
        "tool": "whip-whep-conformance",
        "version": 1,
        "started_at": report.started_at.isoformat(),
        "duration_s": round(report.duration, 3),
        "target": report.target,
        "summary": {
            **counts,
            "total": len(report.results),
            "must_failures": len(report.must_failures),
            "should_failures": len(report.should_failures),
            "conformant": not report.must_failures,
            "rate_limited": len(report.rate_limited),
        },
        "results": [r.as_dict() for r in report.results],
    }


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    t = report.target
    lines = [
        "# WHIP/WHEP conformance report",
        "",
        f"- WHIP: `{t.get('whip') or '-'}`",
        f"- WHEP: `{t.get('whep') or '-'}`",
        (f"- Tokens: publish {'yes' if t.get('token') else 'no'}, "
         f"viewer {'yes' if t.get('viewer_token') else 'no'}"),
        f"- Run: {report.started_at.isoformat(timespec='seconds')}, {report.duration:.1f} s",
        "",
        f"**{summary_line(report)}**",
        "",
        "| Result | Level | Check | Spec | Reason |",
        "|---|---|---|---|---|",
    ]
    icon = {Status.PASS: "✅ pass", Status.FAIL: "❌ fail", Status.SKIP: "⏭ skip"}
    for r in report.results:
        c = r.check
        lines.append(f"| {icon[r.status]} | {c.level.value} | `{c.id}`<br>{_md(c.title)} | "
                     f"{_md(c.reference)} | {_md(r.reason)} |")
    return "\n".join(lines) + "\n"


def print_table(report: Report, file: IO[str] | None = None) -> bool:
    """Print the table with rich; return False (printing nothing) without it."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console(file=file, soft_wrap=False)
    table = Table(title="WHIP/WHEP conformance", show_lines=False, expand=False)
    table.add_column("Result", no_wrap=True)
    table.add_column("Level", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Spec §", overflow="fold", max_width=38)
    table.add_column("Reason", overflow="fold")
    for r in report.results:
        c = r.check
        style = STATUS_STYLE[r.status]
        table.add_row(f"[{style}]{r.status.value}[/]", f"[{LEVEL_STYLE[c.level]}]{c.level.value}[/]"
                      if LEVEL_STYLE[c.level] else c.level.value, c.id, c.reference, _escape(r.reason))
    console.print(table)
    style = "bold green" if not report.must_failures else "bold red"
    console.print(f"[{style}]{_escape(summary_line(report))}[/]")
    return True


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def print_plain(report: Report, file: IO[str]) -> None:
    """The table without rich: one line per check."""
    width = max((len(r.check.id) for r in report.results), default=10)
    for r in report.results:
        print(f"{r.status.value:4}  {r.check.level.value:6}  {r.check.id:{width}}  "
              f"{r.check.reference}  {r.reason}", file=file)
    print(summary_line(report), file=file)


def result_line(result: Result) -> str:
    return f"{result.status.value:4} {result.check.level.value:6} {result.check.id}: {result.reason}"
