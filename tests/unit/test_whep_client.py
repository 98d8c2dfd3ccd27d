"""The WHEP client's small pieces: Link headers, server-sent events, statuses.

HTTP is ``httpx.MockTransport``.  The last tests put a real aiortc peer
behind the mock transport, so ``play()`` negotiates, connects over the
sandbox interface and decodes frames in both of the draft's modes.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Awaitable, Callable

import av
import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.clients import media
from gateway.clients.whep import (
    LAYER_REL,
    SSE_REL,
    FrameCounter,
    SseParser,
    WhepClientError,
    WhepSession,
    links_by_rel,
    parse_link_header,
    parse_links,
    parse_sse,
    play,
)
from gateway.clients.whip import WhipClientError
from gateway.config import IceServer
from gateway.http.exchange import ice_server_links

BASE = "https://whep.example.org/whep/cam"
Handler = Callable[[httpx.Request], Awaitable[httpx.Response] | httpx.Response]


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


# -- Link ------------------------------------------------------------------------


def test_link_with_quoted_commas_and_relative_url() -> None:
    links = parse_link_header(
        '</whep/cam/abc/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; '
        'events="active,inactive,layers,reconnect,viewercount,scte35", '
        '<layer>; rel="urn:ietf:params:whep:ext:core:layer"', BASE)
    assert links == [
        {"url": "https://whep.example.org/whep/cam/abc/sse", "rel": SSE_REL,
         "events": "active,inactive,layers,reconnect,viewercount,scte35"},
        {"url": "https://whep.example.org/whep/layer", "rel": LAYER_REL},
    ]


def test_link_as_the_extension_draft_writes_it() -> None:
    """Folded over lines, and no ";" between rel and events."""
    value = ('<https://whep.ietf.org/resource/213786HF/sse>;\r\n'
             '      rel="urn:ietf:params:whep:ext:core:server-sent-events"\r\n'
             '      events="active,inactive,layers,reconnect,viewercount,scte35"')
    (link,) = parse_link_header(value, BASE)
    assert link["url"] == "https://whep.ietf.org/resource/213786HF/sse"
    assert link["rel"] == SSE_REL and link["events"].split(",")[-1] == "scte35"


def test_link_token_params_escapes_and_first_param_wins() -> None:
    (link,) = parse_link_header(r'<x>; REL=next; title="a \"q\"; b"; rel=other; flag', BASE)
    assert link == {"url": "https://whep.example.org/whep/x", "rel": "next",
                    "title": 'a "q"; b', "flag": ""}


def test_several_link_fields_and_the_gateways_own_ice_servers() -> None:
    fields = ice_server_links([
        IceServer(url="stun:127.0.0.1:3478"),
        IceServer(url="turn:127.0.0.1:3478?transport=udp", username='u"1', credential="p,w;d"),
    ])
    fields.append('</whep/cam/r/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; events="active"')
    links = parse_links(fields, BASE)
    assert [link["url"] for link in links] == [
        "stun:127.0.0.1:3478", "turn:127.0.0.1:3478?transport=udp", "https://whep.example.org/whep/cam/r/sse"]
    assert links[1]["username"] == 'u"1' and links[1]["credential"] == "p,w;d"
    assert links[1]["credential-type"] == "password"
    by_rel = links_by_rel(links)
    assert by_rel["ice-server"]["url"] == "stun:127.0.0.1:3478", "the first of a rel wins"
    assert by_rel[SSE_REL]["events"] == "active"


def test_multiple_rels_and_garbage() -> None:
    assert links_by_rel(parse_link_header('<a>; rel="x y"', BASE)).keys() == {"x", "y"}
    assert parse_link_header("", BASE) == []
    assert parse_link_header("no brackets; rel=x", BASE) == []
    assert parse_link_header("<unterminated; rel=x", BASE) == []


# -- SSE -------------------------------------------------------------------------


def test_sse_events_comments_and_multiline_data() -> None:
    text = (": keepalive\n\n"
            "event: active\ndata: {}\n\n"
            ":ping\r\nevent:viewercount\r\ndata: {\"viewercount\":3}\r\nid: 7\r\n\r\n"
            "data: line1\ndata: line2\n\n"
            "event: layers\nunknown: field\ndata: {\"0\": []}\n\n"
            "event: scte35\ndata: /DA8AAAAAAAAAP\n\n"
            "event: inactive\n\n"  # no data: not dispatched
            "event: trailing\ndata: {}")  # no blank line yet: incomplete
    events = parse_sse(text)
    assert [(e.event, e.json()) for e in events] == [
        ("active", {}),
        ("viewercount", {"viewercount": 3}),
        ("message", {"data": "line1\nline2"}),
        ("layers", {"0": []}),
        ("scte35", {"data": "/DA8AAAAAAAAAP"}),
    ]
    assert events[1].id == "7" and events[2].id == "7"


def test_sse_parser_retry_bom_and_space_rules() -> None:
    parser = SseParser()
    assert parser.feed("\ufeffretry: 2500") is None
    assert parser.retry == 2.5
    parser.feed("retry: soon")  # not digits: ignored
    assert parser.retry == 2.5
    parser.feed("data:  two spaces")
    event = parser.feed("")
    assert event is not None and event.data == " two spaces", "only one leading space is stripped"
    parser.feed("data")
    assert parser.feed("").data == ""  # a bare field name is an empty value


# -- statuses --------------------------------------------------------------------


async def test_201_keeps_answer_location_etag_links() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, text="v=0 answer", headers=[
            ("Content-Type", "application/sdp"), ("Location", "/whep/cam/res1"), ("ETag", '"e1"'),
            ("Link", '<stun:127.0.0.1:3478>; rel="ice-server"'),
            ("Link", '</whep/cam/res1/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events";'
                     ' events="active,inactive,viewercount"'),
            ("Link", '</whep/cam/res1/layer>; rel="urn:ietf:params:whep:ext:core:layer"'),
        ])

    session = WhepSession(BASE, "tok", http=client(handler))
    response = await session.post_offer("v=0 offer")
    assert response.status_code == 201
    request = seen[0]
    assert request.headers["content-type"] == "application/sdp"
    assert request.headers["authorization"] == "Bearer tok"
    assert request.content == b"v=0 offer"
    assert session.answer == "v=0 answer" and session.counter_offer is None
    assert session.location == "https://whep.example.org/whep/cam/res1"
    assert session.etag == '"e1"'
    assert session.links[SSE_REL]["url"] == "https://whep.example.org/whep/cam/res1/sse"
    assert session.links[LAYER_REL]["url"] == "https://whep.example.org/whep/cam/res1/layer"
    assert session.advertised_events == ["active", "inactive", "viewercount"]
    assert session.ice_servers == [{"url": "stun:127.0.0.1:3478", "rel": "ice-server"}]


async def test_406_keeps_counter_offer_and_patch_answers_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(406, text="v=0 server offer", headers={
                "Content-Type": 'application/sdp; valid-until="Wed, 09 Oct 2024 10:00:00 GMT"',
                "Location": "https://other.example.org/session/9"})
        return httpx.Response(204)

    session = WhepSession(BASE, http=client(handler))
    assert (await session.post_empty()).status_code == 406
    assert seen[0].content == b"" and "authorization" not in seen[0].headers
    assert session.counter_offer == "v=0 server offer" and session.answer is None
    assert session.counter_offer_valid_until == "Wed, 09 Oct 2024 10:00:00 GMT"
    assert session.location == "https://other.example.org/session/9"
    assert (await session.patch_answer("v=0 my answer")).status_code == 204
    assert seen[1].method == "PATCH" and str(seen[1].url) == session.location
    assert seen[1].headers["content-type"] == "application/sdp"


async def test_409_keeps_nothing_but_retry_after_and_play_raises() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, headers={"Retry-After": "5"}, json={
            "type": "urn:whip-gateway:problem:no-publisher", "title": "No publisher",
            "status": 409, "detail": "nobody is publishing 'cam'"})

    session = WhepSession(BASE, http=client(handler))
    assert (await session.post_offer("v=0")).status_code == 409
    assert session.location is None and session.answer is None and session.retry_after == 5

    http = client(handler)
    with pytest.raises(WhepClientError) as caught:
        await play(BASE, http=http)
    assert isinstance(caught.value, WhipClientError)
    assert caught.value.response.status_code == 409
    assert caught.value.summary == "409 Conflict: nobody is publishing 'cam' (retry after 5 s)"
    with pytest.raises(WhepClientError):
        await play(BASE, http=http, mode="counter-offer")
    await http.aclose()


async def test_201_without_location_is_an_error() -> None:
    http = client(lambda r: httpx.Response(201, text="v=0", headers={"Content-Type": "application/sdp"}))
    with pytest.raises(WhepClientError):
        await play(BASE, http=http)


async def test_trickle_if_match_and_restart_etag() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("if-match") == '"*"':
            return httpx.Response(200, text="a=ice-ufrag:new", headers={"ETag": '"e2"'})
        return httpx.Response(204)

    session = WhepSession(BASE, http=client(handler), location=BASE + "/r", etag='"e1"')
    assert (await session.trickle("a=candidate:x", if_match='"e1"')).status_code == 204
    assert seen[0].headers["content-type"] == "application/trickle-ice-sdpfrag"
    assert seen[0].headers["if-match"] == '"e1"' and session.etag == '"e1"'
    assert (await session.trickle("a=ice-ufrag:x", if_match='"*"')).status_code == 200
    assert session.etag == '"e2"'
    assert (await session.delete()).status_code == 204 and seen[-1].method == "DELETE"


async def test_subscribe_events_select_layer() -> None:
    seen: list[httpx.Request] = []
    gets = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal gets
        seen.append(request)
        path = request.url.path
        if path == "/r/sse" and request.method == "POST":
            if json.loads(request.content) == ["nope"]:
                return httpx.Response(400)
            return httpx.Response(201, headers={"Location": "stream/1"})
        if path == "/r/stream/1" and request.method == "GET":
            gets += 1
            if gets == 1:  # the first connection drops after two events
                return httpx.Response(200, headers={"Content-Type": "text/event-stream"},
                                      text=": hi\n\nretry: 10\nid: 1\nevent: active\ndata: {}\n\n"
                                           "event: viewercount\ndata: {\"viewercount\":2}\n\n"
                                           "event: cut\ndata: {")
            if gets == 2:
                return httpx.Response(200, text="event: inactive\ndata: {}\n\n")
            return httpx.Response(404)  # deleted: the iteration ends
        if path == "/r/layer":
            return httpx.Response(200)
        return httpx.Response(418)

    session = WhepSession("https://h/whep/cam", http=client(handler), location="https://h/r", links={
        SSE_REL: {"url": "https://h/r/sse", "events": "active"}, LAYER_REL: {"url": "https://h/r/layer"}})
    assert (await session.subscribe(["nope"])).status_code == 400 and session.events_location is None
    assert (await session.subscribe(["active", "inactive"])).status_code == 201
    assert json.loads(seen[-1].content) == ["active", "inactive"]
    assert seen[-1].headers["content-type"] == "application/json"
    assert session.events_location == "https://h/r/stream/1"
    got = [item async for item in session.events()]
    assert got == [("active", {}), ("viewercount", {"viewercount": 2}), ("inactive", {})]
    second_get = [r for r in seen if r.method == "GET"][1]
    assert second_get.headers["last-event-id"] == "1"
    assert second_get.headers["accept"] == "text/event-stream"

    assert (await session.select_layer({"mediaId": "0", "rid": "h"})).status_code == 200
    assert json.loads(seen[-1].content) == {"mediaId": "0", "rid": "h"}


async def test_events_error_status_raises_and_missing_links() -> None:
    session = WhepSession(BASE, http=client(lambda r: httpx.Response(500, text="boom")),
                          events_location=BASE + "/ev")
    with pytest.raises(WhepClientError):
        async for _ in session.events():
            pass
    with pytest.raises(LookupError):
        await session.subscribe(["active"])
    with pytest.raises(LookupError):
        await session.select_layer({"mediaId": "0"})


# -- play() against an aiortc peer behind the mock transport -------------------------


class LoopbackServer:
    """A WHEP endpoint in-process: an aiortc peer sending a test pattern and a tone."""

    def __init__(self, counter_offer: bool) -> None:
        self.counter_offer = counter_offer
        self.pc: RTCPeerConnection | None = None
        self.requests: list[str] = []

    def _peer(self) -> RTCPeerConnection:
        self.pc = RTCPeerConnection()
        return self.pc

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path == "/whep/cam":
            if self.counter_offer:
                pc = self._peer()
                pc.addTransceiver(media.ToneTrack(), direction="sendonly")
                pc.addTransceiver(media.TestPatternTrack(), direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                return httpx.Response(406, text=pc.localDescription.sdp, headers={
                    "Content-Type": "application/sdp", "Location": "/whep/cam/s1"})
            pc = self._peer()
            await pc.setRemoteDescription(RTCSessionDescription(request.content.decode(), "offer"))
            for transceiver in pc.getTransceivers():
                pc.addTrack(media.ToneTrack() if transceiver.kind == "audio" else media.TestPatternTrack())
            await pc.setLocalDescription(await pc.createAnswer())
            return httpx.Response(201, text=pc.localDescription.sdp, headers={
                "Content-Type": "application/sdp", "Location": "/whep/cam/s1", "ETag": '"1"'})
        if request.method == "PATCH" and request.headers["content-type"] == "application/sdp":
            assert self.pc is not None
            await self.pc.setRemoteDescription(RTCSessionDescription(request.content.decode(), "answer"))
            return httpx.Response(204)
        if request.method == "DELETE":
            return httpx.Response(200)
        return httpx.Response(405)

    async def close(self) -> None:
        if self.pc:
            await self.pc.close()


@pytest.mark.parametrize("counter_offer", [False, True], ids=["offer", "counter-offer"])
async def test_play_decodes_frames(counter_offer: bool) -> None:
    server = LoopbackServer(counter_offer)
    http = client(server)
    pc, session, counter = await play(
        "http://whep.test/whep/cam", http=http, mode="counter-offer" if counter_offer else "offer")
    try:
        assert session.location == "http://whep.test/whep/cam/s1"
        directions = [line for line in pc.localDescription.sdp.splitlines()
                      if line in ("a=recvonly", "a=sendrecv", "a=sendonly", "a=inactive")]
        assert directions == ["a=recvonly", "a=recvonly"]
        await counter.wait_first_frame(timeout=15)
        while counter.video_frames < 10 or counter.audio_frames < 10:
            await asyncio.sleep(0.1)
        assert (counter.width, counter.height) == (320, 240)
        sample = await counter.sample(pc)
        assert sample.bytes > 0 and sample.inbound["video"]["packetsReceived"] > 0
        assert set(sample.inbound) == {"audio", "video"}
    finally:
        await counter.stop()
        assert (await session.delete()).status_code == 200
        await pc.close()
        await server.close()
        await http.aclose()
    assert server.requests[-1] == "DELETE /whep/cam/s1"
    if counter_offer:
        assert server.requests[:2] == ["POST /whep/cam", "PATCH /whep/cam/s1"]


async def test_offer_rejected_with_406_is_answered(tmp_path: Path) -> None:
    """Sent an offer, got a counter-offer: play() answers it on a fresh peer, and records."""
    server = LoopbackServer(counter_offer=True)
    http = client(server)
    out = tmp_path / "out.mp4"
    pc, session, counter = await play("http://whep.test/whep/cam", http=http, record=str(out),
                                      video_codec="video/VP8")
    try:
        assert server.requests[:2] == ["POST /whep/cam", "PATCH /whep/cam/s1"]
        await counter.wait_first_frame(timeout=15)
        while counter.video_frames < 30:
            await asyncio.sleep(0.1)
    finally:
        await counter.stop()
        await pc.close()
        await server.close()
        await http.aclose()
    with av.open(str(out)) as container:
        kinds = {s.type for s in container.streams}
        assert kinds == {"audio", "video"}
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (320, 240)
        assert sum(1 for _ in container.decode(video=0)) >= 20


async def test_frame_counter_without_tracks_stops_cleanly(tmp_path: Path) -> None:
    counter = FrameCounter()
    await counter.stop()
    assert counter.video_frames == 0 and counter.first_frame_at is None
    with pytest.raises(asyncio.TimeoutError):
        await counter.wait_first_frame(timeout=0.01)
