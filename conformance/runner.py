"""The check registry, results, and the loop that runs checks one after another.

A check is an ``async def check(ctx) -> str | None`` registered with
``@check(...)``: it passes by returning (optionally a note saying what it
saw), and ends otherwise by raising ``Fail`` or ``Skip`` with a reason a
server author can act on.  Any other exception, or running past the
check's timeout, is a failure too: a black-box suite cannot tell a server
that hangs from one that is broken, and both are worth reporting.

Checks run sequentially, in phase order (WHIP before WHEP, so that a server
with a single fixed URL never has a viewer waiting on a publisher that a
later WHIP check tears down), and within a phase in registration order.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Config, Context


class Level(str, Enum):
    """BCP 14 strength of the requirement a check tests."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    MAY = "MAY"


MUST, SHOULD, MAY = Level.MUST, Level.SHOULD, Level.MAY


class Status(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


class Fail(Exception):
    """The server did something the requirement forbids (or failed to do what it demands)."""


class Skip(Exception):
    """The requirement does not apply to this server, or cannot be tested here."""


class RateLimited(Skip):
    """The server answered 429 and kept answering it: the check could not
    conclude.  Reported as a skip whose reason starts with "rate-limited",
    and the summary calls the run incomplete."""


RFC9725 = "RFC 9725"
WHEP = "WHEP draft-03"
WHEP_EXT = "WHEP extensions"
HABIT = "Client habit"

CheckFunc = Callable[["Context"], Awaitable[str | None]]


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    spec: str
    section: str
    level: Level
    func: CheckFunc
    phase: int
    needs: tuple[str, ...] = ()  # "whip", "whep", "token", "viewer_token"
    timeout: float = 30.0

    @property
    def reference(self) -> str:
        return f"{self.spec} §{self.section}"


@dataclass
class Result:
    check: Check
    status: Status
    reason: str
    duration: float
    exchanges: list[str] = field(default_factory=list)

    @property
    def failed_must(self) -> bool:
        return self.status is Status.FAIL and self.check.level is Level.MUST

    def as_dict(self) -> dict[str, object]:
        c = self.check
        return {
            "id": c.id, "title": c.title, "spec": c.spec, "section": c.section,
            "level": c.level.value, "status": self.status.value, "reason": self.reason,
            "duration_s": round(self.duration, 3), "exchanges": self.exchanges,
        }


REGISTRY: list[Check] = []

# Phases: the order in which groups of checks run.
PHASE_WHIP = 10
PHASE_WHIP_MEDIA = 20
PHASE_WHEP = 30
PHASE_WHEP_EXT = 40
PHASE_PROFILES = 50
PHASE_FINAL = 90


def check(
    id: str, *, title: str, spec: str, section: str, level: Level, phase: int,
    needs: Iterable[str] = (), timeout: float = 30.0,
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check.  ``needs`` names what must be configured for it to
    apply; a check whose needs are missing is skipped, saying which."""

    def register(func: CheckFunc) -> CheckFunc:
        if any(c.id == id for c in REGISTRY):
            raise ValueError(f"duplicate check id {id}")
        REGISTRY.append(Check(id, title, spec, section, level, func, phase, tuple(needs), timeout))
        return func

    return register


def all_checks() -> list[Check]:
    """Every registered check, in the order the suite runs them."""
    from . import checks  # noqa: F401  (the checks register themselves on import)

    order = {c.id: i for i, c in enumerate(REGISTRY)}
    return sorted(REGISTRY, key=lambda c: (c.phase, order[c.id]))


def select(checks: list[Check], only: Iterable[str] | None) -> list[Check]:
    """Filter by ``--only`` patterns: a glob (``whip.patch.*``) or, without
    wildcards, a substring of the id (``whep`` picks every WHEP check)."""
    patterns = [p.strip() for item in (only or []) for p in item.split(",") if p.strip()]
    if not patterns:
        return checks

    def hit(check_id: str) -> bool:
        for p in patterns:
            if any(ch in p for ch in "*?["):
                if fnmatch.fnmatchcase(check_id, p):
                    return True
            elif p in check_id:
                return True
        return False

    return [c for c in checks if hit(c.id)]


@dataclass
class Report:
    results: list[Result]
    target: dict[str, object]
    started_at: datetime
    duration: float

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out

    @property
    def must_failures(self) -> list[Result]:
        return [r for r in self.results if r.failed_must]

    @property
    def should_failures(self) -> list[Result]:
        return [r for r in self.results
                if r.status is Status.FAIL and r.check.level is Level.SHOULD]

    @property
    def rate_limited(self) -> list[Result]:
        """Checks that could not conclude because the server kept answering 429."""
        return [r for r in self.results if r.status is Status.SKIP and r.reason.startswith("rate-limited")]

    @property
    def exit_code(self) -> int:
        """1 when any MUST failed: SHOULD and MAY findings do not fail a run."""
        return 1 if self.must_failures else 0

    def result(self, check_id: str) -> Result:
        for r in self.results:
            if r.check.id == check_id:
                return r
        raise KeyError(check_id)


ResultCallback = Callable[[Result], None]
StartCallback = Callable[[Check], None]


async def run_suite(
    config: Config,
    *,
    only: Iterable[str] | None = None,
    on_start: StartCallback | None = None,
    on_result: ResultCallback | None = None,
) -> Report:
    """Run the selected checks against one server and return every result.

    Everything the suite creates on the server (sessions, event streams) is
    deleted before this returns, whatever the checks did.
    """
    from .context import Context

    checks = select(all_checks(), only)
    started_at = datetime.now(timezone.utc)
    t0 = time.monotonic()
    results: list[Result] = []
    ctx = Context(config)
    try:
        for c in checks:
            if on_start:
                on_start(c)
            result = await _run_one(ctx, c)
            results.append(result)
            if on_result:
                on_result(result)
    finally:
        await ctx.aclose()
    return Report(results=results, target=config.describe(), started_at=started_at,
                  duration=time.monotonic() - t0)


async def _run_one(ctx: Context, c: Check) -> Result:
    missing = ctx.missing(c.needs)
    if missing:
        return Result(c, Status.SKIP, missing, 0.0)
    t0 = time.monotonic()
    scope = ctx.open_scope(c.id)
    status, reason = Status.PASS, ""
    try:
        async with asyncio.timeout(c.timeout):
            note = await c.func(ctx)
        reason = note or "ok"
    except Fail as exc:
        status, reason = Status.FAIL, str(exc)
    except Skip as exc:
        status, reason = Status.SKIP, str(exc)
    except TimeoutError:
        status, reason = Status.FAIL, f"no conclusion within {c.timeout:g} s"
    except Exception as exc:
        status, reason = Status.FAIL, f"error: {type(exc).__name__}: {exc}"
    finally:
        await ctx.close_scope(scope)
    return Result(c, status, reason, time.monotonic() - t0, scope.exchanges)
