"""What a client learns besides the answer: GET and OPTIONS on the endpoint
and the session, CORS for browser clients, and the Link headers
(ice-server, extensions)."""

from __future__ import annotations

import httpx

from gateway.clients.whep import parse_links

from ...context import SDP, Context, Kind, describe, expect
from ...runner import MUST, SHOULD, Skip
from ..common import created, fresh_session, offer_for, stream_for
from ..protocol import Protocol, rule

ORIGIN = "https://conformance.invalid"
ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


# -- GET, OPTIONS -------------------------------------------------------------------------


@rule("get.endpoint", title="GET on the endpoint: 2xx, no content", topic="http", level=MUST)
async def get_endpoint(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "get")
    r = await ctx.request("GET", ctx.endpoint_url(p.kind, stream), kind=p.kind)
    expect(r.is_success, f"GET on the endpoint answered {describe(r)}; expected 2xx")
    expect(not r.content, f"GET on the endpoint returned {len(r.content)} bytes; expected no content")
    return f"{r.status_code}, no content"


@rule("get.resource", title="GET on the session: 2xx, no content", topic="http", level=MUST)
async def get_resource(ctx: Context, p: Protocol) -> str:
    session = await fresh_session(ctx, p.kind, "getres")
    r = await ctx.request("GET", session.location, kind=p.kind)
    expect(r.is_success, f"GET on the session answered {describe(r)}; expected 2xx")
    expect(not r.content, f"GET on the session returned {len(r.content)} bytes; expected no content")
    return f"{r.status_code}, no content"


@rule("options.accept-post", title="OPTIONS: 200 with Accept-Post: application/sdp", topic="termination",
      level=SHOULD)
async def options_accept_post(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "options")
    r = await ctx.request("OPTIONS", ctx.endpoint_url(p.kind, stream), kind=p.kind)
    expect(r.status_code == 200, f"OPTIONS answered {describe(r)}; expected 200")
    accept = [v.split(";")[0].strip().lower() for v in r.headers.get("accept-post", "").split(",")]
    expect(SDP in accept, f"Accept-Post is {r.headers.get('accept-post')!r}; expected {SDP}")
    return f"200, Accept-Post: {r.headers['accept-post']}"


# -- CORS -----------------------------------------------------------------------------------


async def _preflight(ctx: Context, url: str, kind: Kind, method: str, request_headers: str) -> httpx.Response:
    """A browser's CORS preflight: no credentials, ever (Fetch)."""
    return await ctx.request("OPTIONS", url, kind=kind, auth=None, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": request_headers})


async def endpoint_preflight(ctx: Context, kind: Kind) -> httpx.Response:
    """The preflight of a POST, made once per run and protocol."""
    async def build() -> httpx.Response:
        stream = await stream_for(ctx, kind, "preflight")
        url = ctx.endpoint_url(kind, stream)
        return await _preflight(ctx, url, kind, "POST", "authorization, content-type")
    return await ctx.memo(f"{kind}.preflight", build)


def _listed(value: str | None, wanted: str) -> bool:
    items = {v.strip().lower() for v in (value or "").split(",")}
    return wanted.lower() in items or "*" in items


def _allows_origin(r: httpx.Response) -> bool:
    return r.headers.get("access-control-allow-origin") in ("*", ORIGIN)


@rule("options.cors-preflight", topic="termination", level=MUST,
      title="CORS preflights (POST on the endpoint, PATCH/DELETE on the session) are answered")
async def cors_preflight(ctx: Context, p: Protocol) -> str:
    r = await endpoint_preflight(ctx, p.kind)
    expect(r.is_success, f"CORS preflight for POST answered {describe(r)}; expected 200")
    expect(_allows_origin(r), "the preflight has no Access-Control-Allow-Origin for the origin "
                              f"(got {r.headers.get('access-control-allow-origin')!r})")
    methods = r.headers.get("access-control-allow-methods")
    expect(methods is None or _listed(methods, "POST"),
           f"Access-Control-Allow-Methods {methods!r} lacks POST")
    allow_headers = r.headers.get("access-control-allow-headers", "")
    expect(_listed(allow_headers, "content-type"),
           f"Access-Control-Allow-Headers {allow_headers!r} lacks Content-Type")
    if ctx.token_for(p.kind):  # "*" does not cover Authorization (Fetch)
        items = {v.strip().lower() for v in allow_headers.split(",")}
        expect("authorization" in items,
               f"Access-Control-Allow-Headers {allow_headers!r} lacks Authorization, which a browser "
               "client needs for the bearer token")
    session = await fresh_session(ctx, p.kind, "preflight")
    seen = [f"POST -> {r.status_code}"]
    for method, headers in (("PATCH", "content-type, if-match"), ("DELETE", "")):
        rr = await _preflight(ctx, session.location, p.kind, method, headers or "authorization")
        expect(rr.is_success and _allows_origin(rr),
               f"CORS preflight for {method} on the session answered {describe(rr)} "
               f"(Access-Control-Allow-Origin {rr.headers.get('access-control-allow-origin')!r})")
        m = rr.headers.get("access-control-allow-methods")
        expect(m is None or _listed(m, method), f"{method} preflight: Allow-Methods {m!r} lacks {method}")
        if method == "PATCH":
            h = rr.headers.get("access-control-allow-headers")
            expect(_listed(h, "if-match"), f"PATCH preflight: Allow-Headers {h!r} lacks If-Match")
        seen.append(f"{method} -> {rr.status_code}")
    return ", ".join(seen)


def ice_server_links(response: httpx.Response, base: str) -> list[dict[str, str]]:
    """The response's ``rel="ice-server"`` Links (parsed as the gateway's client does)."""
    return [link for link in parse_links(response.headers.get_list("link"), base)
            if "ice-server" in link.get("rel", "").split()]


@rule("options.preflight-no-ice-servers", title="A CORS preflight gets no ice-server Links",
      topic="preflight-ice", level=SHOULD)
async def preflight_without_ice_servers(ctx: Context, p: Protocol) -> str:
    r = await endpoint_preflight(ctx, p.kind)
    links = ice_server_links(r, str(r.url))
    expect(not links, f"the CORS preflight carries {len(links)} ice-server Link(s); preflights "
                      "should not (TURN credentials may be costly to mint)")
    return "no ice-server Link on the preflight"


@rule("cors.expose-headers", title="A cross-origin POST exposes Location (and ETag, Link) to the browser",
      topic="termination", level=SHOULD)
async def cors_exposed_headers(ctx: Context, p: Protocol) -> str:
    stream = await stream_for(ctx, p.kind, "cors")
    r, session = await ctx.post(p.kind, stream, await offer_for(ctx, p.kind), headers={"Origin": ORIGIN})
    if session is None:
        raise Skip(f"the POST with an Origin answered {describe(r)}")
    expect(_allows_origin(r), "a cross-origin POST got no Access-Control-Allow-Origin: browsers "
                              "cannot read the answer")
    exposed = r.headers.get("access-control-expose-headers", "")
    needed = ["location"] + [h for h in ("etag", "link") if h in r.headers]
    missing = [h for h in needed if not _listed(exposed, h)]
    expect(not missing, f"Access-Control-Expose-Headers {exposed!r} lacks {missing}: a browser "
                        "client cannot read them")
    return f"exposes {', '.join(needed)}"


# -- Link headers ---------------------------------------------------------------------------


@rule("link.ice-server", title="ice-server Links are well formed (if any)", topic="ice-servers", level=MUST)
async def link_ice_servers(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    links = ice_server_links(b.response, str(b.response.url))
    if not links:
        raise Skip("the server advertises no STUN/TURN servers (Link rel=ice-server)")
    for link in links:
        url = link["url"]
        expect(url.startswith(ICE_SCHEMES), f"ice-server Link target {url!r} is not a stun:/turn: URI")
        ctype = link.get("credential-type", "password")
        expect(ctype == "password", f"credential-type {ctype!r} on {url}: only \"password\" is defined")
        if url.startswith(("turn:", "turns:")):
            expect(link.get("username") and link.get("credential"),
                   f"TURN server {url} comes without username/credential")
    return f"{len(links)} ice-server Link(s), well formed"


@rule("link.extensions", title="Extension Links use urn:ietf:params:{kind}:ext: (if any)",
      topic="extensions", level=MUST)
async def extension_links(ctx: Context, p: Protocol) -> str:
    b = await created(ctx, p.kind)
    if b.response.status_code != 201:
        raise Skip("extensions are advertised on a 201; the server answered with a counter-offer")
    prefix = f"urn:ietf:params:{p.kind}:"
    found = []
    for link in b.session.links if b.session else []:
        for rel in link.get("rel", "").split():
            if rel.startswith(prefix):
                expect(rel.startswith(prefix + "ext:"),
                       f"Link rel {rel!r}: extension URNs start with {prefix}ext:")
                expect(link["url"].startswith(("http://", "https://")),
                       f"Link {rel} has no usable URL: {link['url']!r}")
                found.append(rel)
    if not found:
        raise Skip(f"the server advertises no {p.kind.upper()} extensions")
    return ", ".join(found)
