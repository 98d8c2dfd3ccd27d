"""The WHEP core extensions, when the server advertises them in Link headers:
"Server Sent Events extension" and "Video Layer Selection extension".

A server that does not advertise an extension gets a skip saying so;
extensions are optional.  One event stream is opened on the shared media
viewer and read for a few seconds; the events are checked as they came on
the wire (one ``data:`` line each), not as a forgiving parser would join them.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Literal

import httpx

from gateway.clients.whep import LAYER_REL, SSE_REL

from .. import offers
from ..context import Context, Session, describe, expect
from ..runner import MUST, PHASE_WHEP_EXT, SHOULD, WHEP_EXT, Fail, Skip, check
from .common import fresh_session, media_viewer

S_SSE = "Server Sent Events extension"
S_LAYER = "Video Layer Selection extension"
X = {"spec": WHEP_EXT, "phase": PHASE_WHEP_EXT, "needs": ("whep",)}
KNOWN_EVENTS = ("active", "inactive", "layers", "reconnect", "viewercount", "scte35")
READ_FOR = 3.0  # seconds of event stream to read


@dataclass
class WireEvent:
    """One event as sent: its ``event`` name and every ``data`` line apart."""

    name: str
    data: list[str] = field(default_factory=list)


async def read_events(ctx: Context, url: str, seconds: float, want: int = 4,
                      auth: str | None | Literal["default"] = "default",
                      ) -> tuple[int, str, list[WireEvent]]:
    """GET an event stream for up to ``seconds`` (or ``want`` events):
    (status, content type, events).  ``auth=None`` sends no Authorization,
    as a browser's EventSource does."""
    events: list[WireEvent] = []
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    status, ctype = 0, ""
    current: WireEvent | None = None
    try:
        async with asyncio.timeout(seconds):
            async with ctx.http.stream("GET", url, headers=ctx.headers("whep", auth=auth, extra=headers)) as r:
                status, ctype = r.status_code, r.headers.get("content-type", "")
                if status != 200:
                    await r.aread()
                    return status, ctype, events
                async for line in r.aiter_lines():
                    line = line.rstrip("\r\n")
                    if not line:
                        if current is not None and (current.data or current.name):
                            events.append(current)
                            if len(events) >= want:
                                break
                        current = None
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    current = current or WireEvent("")
                    if name == "event":
                        current.name = value
                    elif name == "data":
                        current.data.append(value)
    except TimeoutError:
        pass
    return status, ctype, events


def _sse_link(session: Session) -> dict[str, str]:
    link = session.links_by_rel.get(SSE_REL)
    if not link:
        raise Skip("the server does not advertise the server-sent events extension")
    return link


def _advertised(link: dict[str, str]) -> list[str]:
    return [e.strip() for e in link.get("events", "").split(",") if e.strip()]


@dataclass
class SseProbe:
    link: dict[str, str]
    subscribed: list[str]
    subscribe: httpx.Response
    location: str | None = None
    stream_status: int = 0
    stream_type: str = ""
    events: list[WireEvent] = field(default_factory=list)
    unknown: httpx.Response | None = None
    delete: httpx.Response | None = None
    after_delete: int | None = None


async def sse_probe(ctx: Context) -> SseProbe:
    async def build() -> SseProbe:
        viewer = await media_viewer(ctx)
        assert viewer.session is not None
        link = _sse_link(viewer.session)
        advertised = _advertised(link)
        wanted = [e for e in advertised if e in ("active", "inactive", "viewercount", "layers")] \
            or advertised or ["active", "inactive", "viewercount"]
        r = await ctx.request("POST", link["url"], kind="whep", content=json.dumps(wanted),
                              content_type="application/json")
        probe = SseProbe(link, wanted, r)
        if r.status_code == 201 and r.headers.get("location"):
            probe.location = str(httpx.URL(link["url"]).join(r.headers["location"]))
            ctx.scope.urls.append(("whep", probe.location))
            probe.stream_status, probe.stream_type, probe.events = await read_events(
                ctx, probe.location, READ_FOR)
        known = wanted[0] if wanted else "active"
        probe.unknown = await ctx.request("POST", link["url"], kind="whep",
                                          content=json.dumps([known, "x-conformance-unknown"]),
                                          content_type="application/json")
        if probe.unknown.status_code == 201 and probe.unknown.headers.get("location"):
            made = httpx.URL(link["url"]).join(probe.unknown.headers["location"])
            ctx.scope.urls.append(("whep", str(made)))
        if probe.location:
            probe.delete = await ctx.request("DELETE", probe.location, kind="whep")
            probe.after_delete = (await read_events(ctx, probe.location, 3.0, want=1))[0]
        return probe

    return await ctx.memo("sse", build)


async def _subscribed(ctx: Context) -> SseProbe:
    probe = await sse_probe(ctx)
    if probe.location is None:
        raise Skip(f"subscribing failed: {describe(probe.subscribe)}")
    return probe


@check("ext.sse.subscribe", title="POST the event list: 201 + Location; GET it: text/event-stream",
       section=S_SSE, level=MUST, **X)
async def sse_subscribe(ctx: Context) -> str:
    probe = await sse_probe(ctx)
    r = probe.subscribe
    expect(r.status_code == 201, f"POST {probe.subscribed} answered {describe(r)}; expected 201")
    expect(probe.location, "the 201 has no Location for the event stream")
    expect(probe.stream_status == 200, f"GET on the event stream answered {probe.stream_status}")
    expect(probe.stream_type.split(";")[0].strip() == "text/event-stream",
           f"the event stream is {probe.stream_type!r}, not text/event-stream")
    return f"subscribed to {probe.subscribed}: {len(probe.events)} event(s) in {READ_FOR:g} s"


@check("ext.sse.unknown-event", title="An unknown event name: 400, no stream made", section=S_SSE,
       level=MUST, **X)
async def sse_unknown(ctx: Context) -> str:
    probe = await sse_probe(ctx)
    assert probe.unknown is not None
    expect(probe.unknown.status_code == 400,
           f"subscribing to an unknown event answered {describe(probe.unknown)}; expected 400")
    return "400"


@check("ext.sse.event-format", title="Each event: an event name and exactly one data line of JSON",
       section=S_SSE, level=MUST, **X)
async def sse_format(ctx: Context) -> str:
    probe = await _subscribed(ctx)
    if not probe.events:
        raise Skip(f"no event arrived within {READ_FOR:g} s")
    for event in probe.events:
        expect(event.name, f"an event without an event field: data {event.data}")
        expect(len(event.data) == 1, f"event {event.name!r} has {len(event.data)} data lines; exactly one "
                                     "is allowed")
        if event.name != "scte35":  # base64, not JSON
            try:
                json.loads(event.data[0])
            except ValueError:
                raise Fail(f"event {event.name!r}: data {event.data[0]!r} is not JSON") from None
        expect(event.name in probe.subscribed or event.name not in KNOWN_EVENTS,
               f"event {event.name!r} arrived though only {probe.subscribed} were asked for")
    return ", ".join(f"{e.name} {e.data[0]}" for e in probe.events)


@check("ext.sse.inactive-not-first", title="inactive is never the first event", section=S_SSE,
       level=MUST, **X)
async def sse_inactive_first(ctx: Context) -> str:
    probe = await _subscribed(ctx)
    if "inactive" not in probe.subscribed:
        raise Skip("the server does not advertise the inactive event")
    if not probe.events:
        raise Skip(f"no event arrived within {READ_FOR:g} s")
    expect(probe.events[0].name != "inactive", "the first event is inactive")
    return f"first event: {probe.events[0].name}"


@check("ext.sse.delete", title="DELETE the event stream; it is 404 afterwards", section=S_SSE,
       level=MUST, **X)
async def sse_delete(ctx: Context) -> str:
    probe = await _subscribed(ctx)
    assert probe.delete is not None
    expect(probe.delete.is_success, f"DELETE on the event stream answered {describe(probe.delete)}")
    expect(probe.after_delete in (404, 410), f"GET after DELETE answered {probe.after_delete}; expected 404")
    return f"DELETE {probe.delete.status_code}, then GET {probe.after_delete}"


@check("ext.sse.ends-with-session", title="Deleting the WHEP session destroys its event streams",
       section=S_SSE, level=MUST, **X)
async def sse_ends_with_session(ctx: Context) -> str:
    session = await fresh_session(ctx, "whep", "sse")
    link = _sse_link(session)
    events = _advertised(link)[:1] or ["active"]
    r = await ctx.request("POST", link["url"], kind="whep", content=json.dumps(events),
                          content_type="application/json")
    if r.status_code != 201 or not r.headers.get("location"):
        raise Skip(f"subscribing failed: {describe(r)}")
    stream = str(httpx.URL(link["url"]).join(r.headers["location"]))
    ctx.scope.urls.append(("whep", stream))
    deleted = await ctx.delete(session)
    expect(deleted.is_success, f"DELETE of the session answered {describe(deleted)}")
    status, _, events = await read_events(ctx, stream, 3.0, want=1)
    expect(status in (404, 410), f"after the session was deleted its event stream answered {status}"
                                 + (f" and sent {[e.name for e in events]}" if events else ""))
    return f"event stream {status} after the session's DELETE"


@check("ext.sse.url-without-token", title="The event-stream URL works without Authorization "
       "(EventSource cannot send it) once an authorized POST made it", section=S_SSE, level=SHOULD,
       spec=WHEP_EXT, phase=PHASE_WHEP_EXT, needs=("whep", "viewer_token"))
async def sse_url_without_token(ctx: Context) -> str:
    """A browser reads server-sent events with EventSource, which sends no
    Authorization header: on a server that needs viewer tokens, the URL the
    (authorized) subscribing POST returns must do on its own, as an
    unguessable capability (like a resource URL, RFC 9725 section 5)."""
    session = await fresh_session(ctx, "whep", "sse-token")
    link = _sse_link(session)
    events = _advertised(link)[:1] or ["active"]
    r = await ctx.request("POST", link["url"], kind="whep", content=json.dumps(events),
                          content_type="application/json")
    if r.status_code != 201 or not r.headers.get("location"):
        raise Skip(f"subscribing (with the viewer token) failed: {describe(r)}")
    stream = str(httpx.URL(link["url"]).join(r.headers["location"]))
    ctx.scope.urls.append(("whep", stream))
    status, ctype, _ = await read_events(ctx, stream, 2.0, want=1, auth=None)
    await ctx.delete(session)
    expect(status == 200, f"GET on the event stream without Authorization answered {status}: a "
                          "browser's EventSource can never read it")
    expect(ctype.split(";")[0].strip() == "text/event-stream", f"it is {ctype!r}, not text/event-stream")
    return "200 text/event-stream without Authorization"


@check("ext.layer.requires-sse", title="Layer selection comes with server-sent events and the layers event",
       section=S_LAYER, level=MUST, **X)
async def layer_requires_sse(ctx: Context) -> str:
    viewer = await media_viewer(ctx)
    assert viewer.session is not None
    links = viewer.session.links_by_rel
    if LAYER_REL not in links:
        raise Skip("the server does not advertise the layer selection extension")
    expect(SSE_REL in links, "layer selection is advertised without the server-sent events extension")
    advertised = _advertised(links[SSE_REL])
    expect(not advertised or "layers" in advertised,
           f"the events attribute {advertised} lacks \"layers\"")
    return "server-sent events advertised" + (" with layers" if advertised else "")


@check("ext.layer.select", title="POST {mediaId} (back to automatic): 200", section=S_LAYER,
       level=SHOULD, **X)
async def layer_select(ctx: Context) -> str:
    viewer = await media_viewer(ctx)
    assert viewer.session is not None
    link = viewer.session.links_by_rel.get(LAYER_REL)
    if not link:
        raise Skip("the server does not advertise the layer selection extension")
    desc = offers.parse(viewer.session.remote_sdp)
    index = next((i for i, m in enumerate(desc.media) if m.kind == "video"), None)
    if index is None:
        raise Skip("no video m-line")
    body = {"mediaId": str(index)}
    r = await ctx.request("POST", link["url"], kind="whep", content=json.dumps(body),
                          content_type="application/json")
    expect(r.status_code == 200, f"POST {json.dumps(body)} answered {describe(r)}; expected 200 "
                                 "(returning to automatic selection can always be done)")
    return f"200 for {json.dumps(body)}"
