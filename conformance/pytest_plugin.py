"""Run the conformance suite under pytest: one test item per check.

    pytest -p conformance.pytest_plugin --pyargs conformance.test_server \\
        --conformance-whip 'http://host/whip/{stream}' --conformance-whep 'http://host/whep/{stream}' \\
        [--conformance-token T] [--conformance-viewer-token T] [--conformance-only PATTERN] \\
        [--conformance-json report.json] [--conformance-markdown report.md]

The whole suite runs once per pytest session (checks share a live publisher
and build on each other's sessions, so running them one by one would be
slow and would change what they see); each item then reports its check's
result: a MUST failure fails the item, a SHOULD or MAY failure passes it with
a ``ConformanceWarning`` (so CI stays green on recommendations but the
warnings summary lists them), a skip is a pytest skip with the suite's reason.

A project's own conftest can override the ``conformance_config`` fixture to
point the items at a server it starts itself.
"""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path

import pytest

from .context import Config
from .report import to_json, to_markdown
from .runner import Check, Level, Report, Result, Status, all_checks, run_suite, select


class ConformanceWarning(UserWarning):
    """A SHOULD or MAY requirement the server does not meet."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "WHIP/WHEP conformance suite")
    group.addoption("--conformance-whip", metavar="URL", help="WHIP endpoint URL (may hold {stream})")
    group.addoption("--conformance-whep", metavar="URL", help="WHEP endpoint URL (may hold {stream})")
    group.addoption("--conformance-token", metavar="T", help="publish token")
    group.addoption("--conformance-viewer-token", metavar="T", help="viewer token")
    group.addoption("--conformance-stream", metavar="NAME", help="stream name to use instead of made-up ones")
    group.addoption("--conformance-only", metavar="PATTERN", action="append",
                    help="only checks whose id matches (glob or substring)")
    group.addoption("--conformance-json", metavar="FILE", help="write the JSON report here")
    group.addoption("--conformance-markdown", metavar="FILE", help="write the Markdown report here")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize any test that takes ``conformance_check`` over the checks."""
    if "conformance_check" in metafunc.fixturenames:
        checks = select(all_checks(), metafunc.config.getoption("conformance_only"))
        metafunc.parametrize("conformance_check", checks, ids=[c.id for c in checks])


@pytest.fixture(scope="session")
def conformance_config(pytestconfig: pytest.Config) -> Config:
    opt = pytestconfig.getoption
    whip, whep = opt("conformance_whip"), opt("conformance_whep")
    if not whip and not whep:
        pytest.skip("no server: pass --conformance-whip and/or --conformance-whep")
    return Config(whip=whip, whep=whep, token=opt("conformance_token"),
                  viewer_token=opt("conformance_viewer_token"), stream=opt("conformance_stream"))


@pytest.fixture(scope="session")
def conformance_report(conformance_config: Config, pytestconfig: pytest.Config) -> Report:
    """The whole (selected) suite, run once for the pytest session."""
    only = pytestconfig.getoption("conformance_only")
    report = asyncio.run(run_suite(conformance_config, only=only))
    if pytestconfig.getoption("conformance_json"):
        Path(pytestconfig.getoption("conformance_json")).write_text(to_json(report))
    if pytestconfig.getoption("conformance_markdown"):
        Path(pytestconfig.getoption("conformance_markdown")).write_text(to_markdown(report))
    return report


def assert_conformant(result: Result) -> None:
    """Turn one result into a pytest outcome (see the module docstring)."""
    c = result.check
    where = f"{c.id} ({c.level.value}, {c.reference})"
    if result.status is Status.SKIP:
        pytest.skip(f"{where}: {result.reason}")
    if result.status is Status.FAIL:
        if c.level is Level.MUST:
            pytest.fail(f"{where}: {result.reason}", pytrace=False)
        warnings.warn(ConformanceWarning(f"{where}: {result.reason}"), stacklevel=2)


__all__ = ["Check", "ConformanceWarning", "assert_conformant"]
