"""Who may POST (bearer tokens) and how a POST may be sent elsewhere
(redirects).  The redirect rule looks back over every request of the run,
so it runs in the final phase."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from ...context import Context, describe, expect
from ...runner import MUST, PHASE_FINAL, Skip
from ..common import offer_for, stream_for
from ..protocol import Protocol, rule


@rule("auth.missing-token", title="No token: 401 with WWW-Authenticate: Bearer", topic="auth", level=MUST,
      needs_token=True)
async def auth_missing(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "noauth")
    r, _ = await ctx.post(p.kind, stream, await offer_for(ctx, p.kind), auth=None)
    expect(r.status_code == 401, f"a POST without Authorization answered {describe(r)}; expected 401")
    challenge = r.headers.get("www-authenticate", "")
    expect(challenge.lower().startswith("bearer"),
           f"the 401 carries WWW-Authenticate {challenge!r}; expected a Bearer challenge (RFC 6750)")
    return f"401, WWW-Authenticate: {challenge}"


@rule("auth.wrong-token", title="A wrong token: 401 or 403", topic="auth", level=MUST, needs_token=True)
async def auth_wrong(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "badauth")
    r, _ = await ctx.post(p.kind, stream, await offer_for(ctx, p.kind),
                          auth=f"Bearer conformance-wrong-{secrets.token_hex(6)}")
    expect(r.status_code in (401, 403),
           f"a POST with a wrong token answered {describe(r)}; expected 401 or 403")
    return f"{r.status_code} for a wrong token"


@rule("redirects", title="POSTs are never redirected with 301/302 (307 only)", topic="redirects",
      level=MUST, phase=PHASE_FINAL)
async def redirects(ctx: Context, p: Protocol) -> str:
    base = ctx.config.endpoint(p.kind)
    assert base is not None
    host = urlsplit(base).netloc
    mine = [(m, u, s) for m, u, s in ctx.redirects if urlsplit(u).netloc == host]
    bad = [f"{m} {u} -> {s}" for m, u, s in mine if s in (301, 302, 303)]
    expect(not bad, f"redirects that turn POST into GET: {bad}; use 307")
    if not ctx.posts[p.kind]:
        raise Skip("no POST was made in this run")
    if not mine:
        return f"no redirect in {ctx.posts[p.kind]} POSTs"
    return f"{len(mine)} redirect(s), all 307/308"
