"""What differs between WHIP and WHEP, and how a rule written once becomes
a check of each.

WHEP copies WHIP's resource model almost word for word: POST an offer,
201 + Location, GET/OPTIONS, PATCH with ETags, DELETE, bearer tokens.  So
the rules for that model (``checks/rules/``) are written once, against a
``Protocol``: the endpoint and offer it POSTs (``Protocol.kind``), the
answer direction it expects, the statuses a valid POST may get, and the
name each spec gives the section a rule comes from.  ``@rule`` records a
rule with its level and title; ``register`` turns it into the check
``whip.<name>`` under RFC 9725's section and ``whep.<name>`` under
draft-03's.

Run order matters (the checks share memoised sessions, and a fixed WHIP
URL has one publisher at a time), so the rules are recorded in run order
and ``whip.py``/``whep.py`` register them a stretch at a time, between
their own checks: each module still reads in the order its checks run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..context import Context, Kind
from ..runner import PHASE_WHEP, PHASE_WHIP, RFC9725, WHEP, Level, check

T = TypeVar("T")

# topic: (RFC 9725's section, WHEP draft-03's section).  The draft numbers
# nothing, so its sections go by name; where it states nothing of its own,
# the WHEP check cites RFC 9725 as well.
SECTIONS: dict[str, tuple[str, str]] = {
    "http": ("4.1 HTTP usage", "HTTP Usage"),
    "setup": ("4.2 Ingest session setup", "Playback Session Set Up / Server Accepts Client Offer"),
    "errors": ("4.2 Ingest session setup", "Playback Session Set Up / Error Conditions"),
    "direction": ("4.2 Ingest session setup", "Playback Session Set Up / Media Direction Attributes"),
    "termination": ("4.2 Ingest session setup", "Playback Session Termination"),
    "patch": ("4.3.1 HTTP PATCH request usage", "ICE Support / HTTP PATCH Request Usage"),
    "trickle": ("4.3.2 Trickle ICE", "ICE Support / Trickle ICE"),
    "restart": ("4.3.3 ICE restarts", "ICE Support / ICE Restarts"),
    "bundle": ("4.4.1 SDP bundle", "WebRTC Constraints / SDP Bundle"),
    "dtls": ("4.4.4 DTLS setup role", "Playback Session Set Up / Server Accepts Client Offer"),
    "ice-lite": ("4.4.5 Trickle ICE and ICE restarts", "WebRTC Constraints / Trickle ICE and ICE Restarts"),
    "redirects": ("4.5 Load balancing and redirections", "Load Balancing and Redirections"),
    "ice-servers": ("4.6 STUN/TURN server configuration", "STUN/TURN Server Configuration"),
    "preflight-ice": ("4.6 STUN/TURN server configuration",
                      "STUN/TURN Server Configuration (RFC 9725 §4.6)"),
    "auth": ("4.7.1 Bearer token authentication",
             "Authentication and Authorization / Bearer Token Authentication"),
    "extensions": ("4.9 Protocol extensions", "Protocol Extensions"),
    "security": ("5 Security considerations", "Security Considerations"),
}


@dataclass(frozen=True)
class Protocol:
    """One of the two protocols, as the shared rules see it."""

    kind: Kind  # the endpoint, offer and token the suite uses ("whip": publisher, "whep": viewer)
    spec: str
    phase: int
    column: int  # its column in SECTIONS
    token_need: str  # the Config field holding its token: what the auth checks need
    answer: str  # the direction of every m-line of a 201's answer
    refused_directions: tuple[str, ...]  # offer directions the server must turn down
    created: tuple[int, ...]  # what a valid offer's POST may get (WHEP: a 406 counter-offer too)
    empty_offer_is_malformed: bool  # an empty WHEP POST asks for a counter-offer instead

    def section(self, topic: str) -> str:
        return SECTIONS[topic][self.column]

    def pick(self, value: T | Mapping[Kind, T]) -> T:
        """``value``, or this protocol's entry when it differs per protocol."""
        if isinstance(value, Mapping):
            return value[self.kind]  # type: ignore[no-any-return]
        return value


WHIP_PROTOCOL = Protocol("whip", RFC9725, PHASE_WHIP, 0, "token", answer="recvonly",
                         refused_directions=("recvonly", "inactive"), created=(201,),
                         empty_offer_is_malformed=True)
WHEP_PROTOCOL = Protocol("whep", WHEP, PHASE_WHEP, 1, "viewer_token", answer="sendonly",
                         refused_directions=("sendonly", "inactive"), created=(201, 406),
                         empty_offer_is_malformed=False)

RuleFunc = Callable[[Context, Protocol], Awaitable[str]]


@dataclass(frozen=True)
class Rule:
    """A requirement both specs state; ``name`` and ``title`` may use
    ``{kind}`` and ``{answer}``; a dict gives each protocol its own."""

    name: str
    title: str | Mapping[Kind, str]
    topic: str
    level: Level | Mapping[Kind, Level]
    func: RuleFunc
    needs_token: bool = False
    phase: int | None = None  # None: the protocol's phase

    def check_id(self, p: Protocol) -> str:
        return f"{p.kind}." + self.name.format(kind=p.kind, answer=p.answer)


RULES: list[Rule] = []  # in run order
_next: dict[Kind, int] = {}  # how many of RULES each protocol has registered


def rule(name: str, *, title: str | Mapping[Kind, str], topic: str,
         level: Level | Mapping[Kind, Level], needs_token: bool = False,
         phase: int | None = None) -> Callable[[RuleFunc], RuleFunc]:
    """Record a shared rule (see the module docstring); its section is the
    one each spec gives ``topic``."""
    if topic not in SECTIONS:
        raise ValueError(f"rule {name}: no section for topic {topic!r}")

    def record(func: RuleFunc) -> RuleFunc:
        RULES.append(Rule(name, title, topic, level, func, needs_token, phase))
        return func

    return record


def register(p: Protocol, *, through: str | None = None) -> None:
    """Register the rules ``p`` has not registered yet, in order, up to and
    including the one named ``through`` (every one left when None)."""
    from . import rules  # noqa: F401  (the rules record themselves on import, in run order)

    start = _next.get(p.kind, 0)
    names = [r.name for r in RULES]
    if through is not None and through not in names[start:]:
        raise ValueError(f"{p.kind}: no rule {through!r} left to register (registered: {names[:start]})")
    end = len(RULES) if through is None else names.index(through, start) + 1
    for r in RULES[start:end]:
        _register_one(p, r)
    _next[p.kind] = end


def _register_one(p: Protocol, r: Rule) -> None:
    async def run(ctx: Context) -> str:
        return await r.func(ctx, p)

    run.__qualname__ = run.__name__ = r.check_id(p)
    run.__doc__ = r.func.__doc__
    needs = (p.kind, p.token_need) if r.needs_token else (p.kind,)
    title = p.pick(r.title).format(kind=p.kind, answer=p.answer)
    check(r.check_id(p), title=title, spec=p.spec, section=p.section(r.topic), level=p.pick(r.level),
          phase=p.phase if r.phase is None else r.phase, needs=needs)(run)
