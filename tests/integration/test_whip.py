"""WHIP (RFC 9725) against a real Janus 1.1.2: every status of the checklist.

Each test ends with the ``start_gateway`` fixture asking Janus's admin API
whether any room, handle or session was left behind.
"""

from __future__ import annotations

import asyncio
import base64
import secrets

import httpx
import pytest

from gateway.sdp import model as sdp
from gateway.clients.whip import WhipSession
from tests.conftest import GatewayFactory, Leaks, RunningGateway
from tests.publishers import aiortc_publisher, answer, obs_shaped, wait_connected, wait_for_janus_packets

SDP = "application/sdp"
PROBLEM = "application/problem+json"


async def stream_state(http: httpx.AsyncClient, gw: RunningGateway, stream: str) -> dict | None:
    streams = (await http.get(f"{gw.url}/api/streams")).json()["streams"]
    return streams.get(stream)


async def wait_stream(http: httpx.AsyncClient, gw: RunningGateway, stream: str, *, live: bool | None,
                      timeout: float = 10.0) -> None:
    """Poll the gateway's status API until the stream is live / not live / gone."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state = await stream_state(http, gw, stream)
        if (live is None and state is None) or (state is not None and state["live"] == live):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"stream {stream} never reached live={live}: {state}")
        await asyncio.sleep(0.1)


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- POST: RFC 9725 section 4.2 ------------------------------------------------


@pytest.mark.parametrize("codec,janus_codec", [("video/VP8", "vp8"), ("video/H264", "h264")])
async def test_publish_reaches_janus_and_delete_frees_it(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient, codec: str, janus_codec: str
) -> None:
    pc = await aiortc_publisher(video_codec=codec)
    whip = WhipSession(gateway.whip("cam"), http=http)
    try:
        response = await whip.post_offer(pc.localDescription.sdp)
        assert response.status_code == 201, response.text
        assert response.headers["content-type"].startswith(SDP)
        location = response.headers["location"]
        assert location.startswith(f"{gateway.url}/whip/cam/"), "Location must be absolute"
        resource_id = location.rsplit("/", 1)[1]
        assert len(base64.urlsafe_b64decode(resource_id + "==")) * 8 >= 128
        etag = response.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"'), "a strong ETag (RFC 9725 4.3.1)"
        assert response.headers["accept-patch"] == "application/trickle-ice-sdpfrag"
        answer_sdp = sdp.parse(response.text)
        assert [m.direction for m in answer_sdp.media] == ["recvonly", "recvonly"]
        assert answer_sdp.candidates, "the answer carries all of the server's candidates (4.3.2)"

        await answer(pc, whip)
        await wait_connected(pc)
        seen = await wait_for_janus_packets(leaks.admin, {"audio", "video"})
        assert seen["codecs"] == {"audio": "opus", "video": janus_codec}
        await wait_stream(http, gateway, "cam", live=True)

        assert (await whip.delete()).status_code == 200
        assert_problem(await whip.delete(), 404)
        assert await stream_state(http, gateway, "cam") is None
        assert await leaks.rooms() == []
    finally:
        await pc.close()


async def test_obs_shaped_offer_connects_without_candidates_or_patch(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """OBS: session-level ICE, no candidates, one H.264 codec, never PATCHes.
    Janus must learn OBS's address from its connectivity checks."""
    pc = await aiortc_publisher(video_codec="video/H264")
    offer = obs_shaped(pc.localDescription.sdp)
    parsed = sdp.parse(offer)
    assert parsed.candidates == [] and parsed.attribute("ice-ufrag")
    assert [c.pt for c in parsed.media[1].codecs()] == [96]
    whip = WhipSession(gateway.whip("obs"), http=http)
    try:
        response = await whip.post_offer(offer)
        assert response.status_code == 201, response.text
        await answer(pc, whip)
        await wait_connected(pc)
        seen = await wait_for_janus_packets(leaks.admin, {"audio", "video"})
        assert seen["codecs"]["video"] == "h264"
        await wait_stream(http, gateway, "obs", live=True)
        assert (await whip.delete()).status_code == 200
    finally:
        await pc.close()


async def test_link_headers_announce_ice_servers(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(ice_servers=[
        {"url": "stun:127.0.0.1:3478"},
        {"url": "turn:127.0.0.1:3478?transport=udp", "username": "u", "credential": "p\"w"},
    ])
    pc = await aiortc_publisher()
    try:
        response = await http.post(gw.whip("links"), content=pc.localDescription.sdp,
                                   headers={"Content-Type": SDP})
        assert response.status_code == 201
        links = response.headers.get_list("link")
        assert links[0] == '<stun:127.0.0.1:3478>; rel="ice-server"'
        assert links[1] == ('<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="u"; '
                            'credential="p\\"w"; credential-type="password"')
        options = await http.options(gw.whip("links"))
        assert "link" not in options.headers, "OPTIONS never carries ICE servers"
        assert (await http.delete(response.headers["location"])).status_code == 200
    finally:
        await pc.close()


# -- rejections: each a precise status with a problem+json body ---------------


async def test_wrong_content_type_is_415(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    pc = await aiortc_publisher()
    try:
        r = await http.post(gateway.whip("x"), content=pc.localDescription.sdp,
                            headers={"Content-Type": "text/plain"})
        assert_problem(r, 415)
    finally:
        await pc.close()


@pytest.mark.parametrize("body", ["", "hello", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n",
                                  "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x RTP 96\r\n"])
async def test_malformed_sdp_is_400(gateway: RunningGateway, http: httpx.AsyncClient, body: str) -> None:
    assert_problem(await http.post(gateway.whip("x"), content=body, headers={"Content-Type": SDP}), 400)


async def _offer_with(edit) -> str:  # type: ignore[no-untyped-def]
    pc = await aiortc_publisher()
    try:
        desc = sdp.parse(pc.localDescription.sdp)
        edit(desc)
        return str(desc)
    finally:
        await pc.close()


def _recvonly(desc: sdp.SessionDescription) -> None:
    for m in desc.media:
        m.remove_attributes("sendonly", "sendrecv")
        m.lines.append(sdp.Line("a", "recvonly"))


def _no_supported_audio(desc: sdp.SessionDescription) -> None:
    audio = desc.media[0]
    audio.keep_codecs({c.pt: c.pt for c in audio.codecs() if c.key in ("pcmu", "pcma")})


def _two_video_tracks(desc: sdp.SessionDescription) -> None:
    video = desc.media[1]
    twin = sdp.MediaSection(video.kind, video.port, video.proto, list(video.formats),
                            [sdp.Line("a", "mid:2") if ln.attribute and ln.attribute[0] == "mid" else ln
                             for ln in video.lines])
    desc.media.append(twin)


@pytest.mark.parametrize("edit,why", [
    (_recvonly, "recvonly"), (_no_supported_audio, "no supported audio"),
    (_two_video_tracks, "more than one video"),
])
async def test_unsupported_media_is_422_and_nothing_is_created(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient, edit, why: str  # type: ignore[no-untyped-def]
) -> None:
    """RFC 9725 section 4.4.3: no partially successful answers."""
    offer = await _offer_with(edit)
    body = assert_problem(await http.post(gateway.whip("x"), content=offer,
                                          headers={"Content-Type": SDP}), 422)
    assert body["detail"], why
    assert await leaks.rooms() == []
    assert await stream_state(http, gateway, "x") is None


# -- authentication: RFC 9725 section 4.7 --------------------------------------


async def test_stream_keys(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(stream_keys={"secure": "s3cret"})
    pc = await aiortc_publisher()
    offer = pc.localDescription.sdp
    try:
        r = await http.post(gw.whip("secure"), content=offer, headers={"Content-Type": SDP})
        assert_problem(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = await http.post(gw.whip("secure"), content=offer,
                            headers={"Content-Type": SDP, "Authorization": "Bearer wrong"})
        assert_problem(r, 403)
        # A raw token (no "Bearer "), as some clients send it.
        r = await http.post(gw.whip("secure"), content=offer,
                            headers={"Content-Type": SDP, "Authorization": "s3cret"})
        assert r.status_code == 201, r.text
        location = r.headers["location"]
        assert_problem(await http.delete(location), 401)
        assert_problem(await http.delete(location, headers={"Authorization": "Bearer nope"}), 403)
        assert (await http.delete(location, headers={"Authorization": "Bearer s3cret"})).status_code == 200
        # The key in the URL works too.
        r = await http.post(gw.whip("secure") + "?token=s3cret", content=offer,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201, r.text
        assert (await http.delete(r.headers["location"] + "?token=s3cret")).status_code == 200
        # Streams without a key stay open.
        r = await http.post(gw.whip("open"), content=offer, headers={"Content-Type": SDP})
        assert r.status_code == 201
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await pc.close()


# -- OPTIONS, GET, HEAD: RFC 9725 sections 4.1 and 4.2 -------------------------


async def test_options_get_head(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    r = await http.options(gateway.whip("any"))
    assert r.status_code == 200 and r.headers["accept-post"] == SDP
    r = await http.options(gateway.whip("any"), headers={
        "Origin": "https://player.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "https://player.example")
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    for method in ("GET", "HEAD"):
        r = await http.request(method, gateway.whip("any"))
        assert 200 <= r.status_code < 300 and r.content == b""

    pc = await aiortc_publisher()
    try:
        r = await http.post(gateway.whip("any"), content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP, "Origin": "https://player.example"})
        assert r.status_code == 201
        exposed = r.headers["access-control-expose-headers"].lower()
        assert "location" in exposed and "etag" in exposed
        location = r.headers["location"]
        for method in ("GET", "HEAD"):
            got = await http.request(method, location)
            assert 200 <= got.status_code < 300 and got.content == b""
        r = await http.options(location)
        assert r.status_code == 200 and r.headers["accept-patch"] == "application/trickle-ice-sdpfrag"
        assert (await http.delete(location)).status_code == 200
    finally:
        await pc.close()


# -- PATCH: RFC 9725 section 4.3 ----------------------------------------------

SDPFRAG = "application/trickle-ice-sdpfrag"


async def test_patch_trickle_and_ice_restart(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    pc = await aiortc_publisher()
    whip = WhipSession(gateway.whip("patch"), http=http)
    try:
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_connected(pc)
        offer = sdp.parse(pc.localDescription.sdp)
        ufrag, pwd = offer.ice_credentials()
        cand = offer.candidates[0]
        trickle = (f"a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
                   f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=candidate:{cand}\r\n"
                   f"a=end-of-candidates\r\n")
        loc = whip.location
        assert loc

        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDPFRAG})
        assert_problem(r, 428)
        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDPFRAG, "If-Match": '"stale"'})
        assert_problem(r, 412)
        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDP, "If-Match": whip.etag})
        assert_problem(r, 415)
        r = await http.patch(loc, content="a=candidate:bad\r\n",
                             headers={"Content-Type": SDPFRAG, "If-Match": whip.etag})
        assert_problem(r, 400)
        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDPFRAG, "If-Match": whip.etag})
        assert r.status_code == 204 and r.content == b"" and "etag" not in r.headers
        # MediaMTX-style trickle with If-Match: "*"
        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDPFRAG, "If-Match": "*"})
        assert r.status_code == 204

        # ICE restart: new ufrag/pwd, If-Match "*" -> 200, sdpfrag, new ETag (4.3.3)
        old_answer = sdp.parse(whip.answer or "")
        new_ufrag, new_pwd = secrets.token_hex(4), secrets.token_hex(16)
        restart = (f"a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\n"
                   f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
                   f"a=ice-ufrag:{new_ufrag}\r\na=ice-pwd:{new_pwd}\r\n")
        r = await http.patch(loc, content=restart, headers={"Content-Type": SDPFRAG, "If-Match": "*"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(SDPFRAG)
        new_etag = r.headers["etag"]
        assert new_etag != whip.etag
        frag = sdp.parse_fragment(r.text)
        assert frag.ice_ufrag and frag.ice_pwd
        assert frag.ice_ufrag != old_answer.ice_credentials()[0], "Janus restarted ICE"
        assert frag.candidates and frag.end_of_candidates
        # The old ETag now names a past ICE session.
        r = await http.patch(loc, content=trickle, headers={"Content-Type": SDPFRAG, "If-Match": whip.etag})
        assert_problem(r, 412)
        assert (await whip.delete()).status_code == 200
    finally:
        await pc.close()


# -- one publisher per stream, and reconnects ---------------------------------


async def test_second_publisher_gets_409_while_first_is_healthy(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    first = await aiortc_publisher()
    second = await aiortc_publisher()
    whip = WhipSession(gateway.whip("busy"), http=http)
    try:
        assert (await whip.post_offer(first.localDescription.sdp)).status_code == 201
        await answer(first, whip)
        await wait_stream(http, gateway, "busy", live=True)
        r = await http.post(gateway.whip("busy"), content=second.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert_problem(r, 409)
        assert int(r.headers["retry-after"]) > 0
        assert len(await leaks.rooms()) == 1
        assert (await whip.delete()).status_code == 200
    finally:
        await first.close()
        await second.close()


async def test_reconnecting_publisher_replaces_one_whose_media_stopped(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    """OBS after a network drop: a new POST, same stream, no DELETE of the old one."""
    gw = await start_gateway(publisher_media_timeout=30)
    dropped = await aiortc_publisher()
    old = WhipSession(gw.whip("obs"), http=http)
    assert (await old.post_offer(dropped.localDescription.sdp)).status_code == 201
    await answer(dropped, old)
    await wait_stream(http, gw, "obs", live=True)
    for sender in dropped.getSenders():  # the network drops: media stops, nothing is signalled
        sender.replaceTrack(None)
    await wait_stream(http, gw, "obs", live=False)

    back = await aiortc_publisher()
    new = WhipSession(gw.whip("obs"), http=http)
    try:
        r = await new.post_offer(back.localDescription.sdp)
        assert r.status_code == 201, r.text
        await answer(back, new)
        await wait_stream(http, gw, "obs", live=True)
        assert_problem(await old.delete(), 404)
        assert len(await leaks.rooms()) == 1, "the old room was freed"
        assert (await new.delete()).status_code == 200
    finally:
        await back.close()
        await dropped.close()


# -- lifecycle: gone publishers are detected and freed ------------------------


@pytest.mark.parametrize("how", ["hangs up", "goes silent"])
async def test_publisher_that_leaves_without_delete_is_dropped(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient, how: str
) -> None:
    """Hang-up (DTLS close) ends at once; silence ends after the media timeout."""
    gw = await start_gateway(publisher_media_timeout=1.0)
    pc = await aiortc_publisher()
    whip = WhipSession(gw.whip("gone"), http=http)
    try:
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gw, "gone", live=True)
        if how == "hangs up":
            await pc.close()
        else:
            for sender in pc.getSenders():
                sender.replaceTrack(None)
            await wait_stream(http, gw, "gone", live=False)
        await wait_stream(http, gw, "gone", live=None)
        await gw.app.state.ingest.settled()
        assert await leaks.rooms() == []
        assert_problem(await whip.delete(), 404)
    finally:
        await pc.close()


async def test_publisher_that_never_connects_is_dropped(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(publisher_connect_timeout=1.0)
    pc = await aiortc_publisher()
    try:
        r = await http.post(gw.whip("silent"), content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201
        assert len(await leaks.rooms()) == 1
        await wait_stream(http, gw, "silent", live=None)  # the answer is never applied
        await gw.app.state.ingest.settled()
        assert await leaks.rooms() == []
    finally:
        await pc.close()


async def test_unknown_and_foreign_resources_are_404(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    pc = await aiortc_publisher()
    try:
        r = await http.post(gateway.whip("mine"), content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP})
        location = r.headers["location"]
        resource = location.rsplit("/", 1)[1]
        assert_problem(await http.delete(gateway.whip("mine") + "/" + secrets.token_urlsafe(24)), 404)
        assert_problem(await http.delete(gateway.whip("other") + "/" + resource), 404)
        assert_problem(await http.patch(gateway.whip("other") + "/" + resource, content="",
                                        headers={"Content-Type": SDPFRAG, "If-Match": "*"}), 404)
        assert_problem(await http.post(gateway.whip("bad name!"), content="", headers={"Content-Type": SDP}), 404)
        assert (await http.delete(location)).status_code == 200
    finally:
        await pc.close()


# -- OBS's codecs: H.264, AV1 and HEVC in one video codec ----------------------


@pytest.mark.parametrize("fixture,codec", [("obs_h264.sdp", "H264"), ("obs_av1.sdp", "AV1"),
                                           ("obs_hevc.sdp", "H265")])
async def test_obs_offers_for_each_codec_are_answered(
    gateway: RunningGateway, leaks: Leaks, http: httpx.AsyncClient, fixture: str, codec: str
) -> None:
    """Offers shaped exactly as OBS 30-32 sends them (tests/fixtures/sdp/README.md):
    the room takes the one video codec, the answer keeps OBS's payload types."""
    from tests.conftest import read_fixture

    r = await http.post(gateway.whip("obs"), content=read_fixture("sdp", fixture),
                        headers={"Content-Type": SDP, "Authorization": "Bearer anything"})
    assert r.status_code == 201, r.text
    answer_sdp = sdp.parse(r.text)
    audio, video = answer_sdp.media
    assert (audio.port, video.port) != (0, 0)
    assert [(c.pt, c.name.upper()) for c in audio.codecs()] == [(111, "OPUS")]
    assert [(c.pt, c.name.upper()) for c in video.codecs() if c.key != "rtx"] == [(96, codec)]
    rooms = await leaks.rooms()
    assert len(rooms) == 1
    assert (await http.delete(r.headers["location"])).status_code == 200
