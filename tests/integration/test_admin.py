"""The operator API (/api/streams, /api/sessions) over real HTTP, on a real Janus 1.1.2.

A stream defined through the API is published by aiortc with its key and
watched with its viewer token; the operator sees it live with its node,
codecs and viewers, reads a viewer's RTC statistics (from Janus's admin
``handle_info``) and deletes the stream, which ends the publisher and the
viewer.  The ``start_gateway`` fixture then asks Janus whether anything was
left behind.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from jsonschema import Draft202012Validator

from gateway.clients.whip import WhipSession
from gateway.http.openapi import DOCUMENT
from tests.conftest import GatewayFactory, Leaks, RunningGateway
from tests.integration.test_whep import watch
from tests.integration.test_whip import assert_problem, wait_stream
from tests.publishers import aiortc_publisher, answer
from tests.viewers import aiortc_viewer

SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
TOKEN = "operator-" + "t" * 31
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def conforms(body: Any, schema: str) -> None:
    """``body`` is what /openapi.json promises for ``schema``."""
    Draft202012Validator({**DOCUMENT, "$ref": f"#/components/schemas/{schema}"}).validate(body)


async def api(http: httpx.AsyncClient, gw: RunningGateway, method: str, path: str,
              headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    return await http.request(method, gw.url + path, headers={**ADMIN, **(headers or {})},
                              **kwargs)


async def wait_viewer_packets(http: httpx.AsyncClient, gw: RunningGateway, session_id: str,
                              timeout: float = 10.0) -> dict[str, Any]:
    """Janus's counters move without an event: read them until video was sent."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await api(http, gw, "GET", f"/api/sessions/{session_id}")
        assert r.status_code == 200, r.text
        session = r.json()
        video = [m for m in session["stats"] or [] if m["kind"] == "video"]
        if video and video[0]["packets_out"] > 0:
            return session
        assert asyncio.get_running_loop().time() < deadline, f"no packets: {session}"
        await asyncio.sleep(0.2)


async def events_until_closed(http: httpx.AsyncClient, url: str, first: asyncio.Event) -> list[str]:
    """Every event name on an event stream until the gateway closes it."""
    names = []
    async with http.stream("GET", url, timeout=15) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                names.append(line[6:].strip())
                first.set()
    return names


async def test_stream_lifecycle_with_live_publisher_and_viewer(
    start_gateway: GatewayFactory, leaks: Leaks, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(admin_token=TOKEN)
    r = await api(http, gw, "POST", "/api/streams", json={"name": "op", "viewer_policy": "token"})
    assert r.status_code == 201, r.text
    created = r.json()
    conforms(created, "Stream")
    assert created["defined_by"] == "api" and created["live"] is False
    key, viewer_token = created["publish_key"], created["viewer_token"]
    assert_problem(await api(http, gw, "POST", "/api/streams", json={"name": "op"}), 409)
    assert_problem(await api(http, gw, "POST", "/api/streams", json={"name": "bad/name"}), 400)

    pc = await aiortc_publisher()
    viewer_pc, frames = await aiortc_viewer()
    try:
        assert_problem(await WhipSession(gw.whip("op"), http=http)
                       .post_offer(pc.localDescription.sdp), 401)
        whip = WhipSession(gw.whip("op"), token=key, http=http)
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gw, "op", live=True)

        assert_problem(await watch(http, gw.whep("op"), viewer_pc), 401)
        r = await watch(http, gw.whep("op"), viewer_pc,
                        headers={"Authorization": f"Bearer {viewer_token}"})
        assert r.status_code == 201, r.text
        viewer_location = r.headers["location"]
        sse = {link["rel"]: link["url"] for link in r.links.values()}[SSE_REL]
        made = await http.post(sse, json=[], headers={"Authorization": f"Bearer {viewer_token}"})
        assert made.status_code == 201, made.text
        heard = asyncio.Event()
        events = asyncio.create_task(events_until_closed(http, made.headers["location"], heard))
        await asyncio.wait_for(heard.wait(), 10)
        await frames.wait(5)

        r = await api(http, gw, "GET", "/api/streams/op")
        assert r.status_code == 200, r.text
        stream = r.json()
        assert stream["live"] is True and stream["viewer_policy"] == "token"
        assert stream["publisher"]["node"] == "janus0"
        assert stream["publisher"]["codecs"] == {"audio": "opus", "video": "vp8"}
        assert isinstance(stream["publisher"]["bitrate"], int)
        assert stream["viewers"] == {"total": 1, "by_node": {"janus0": 1}}
        assert "publish_key" not in stream, "credentials show only in the create answer"
        conforms(stream, "Stream")
        listed = (await api(http, gw, "GET", "/api/streams")).json()["streams"]
        assert [s["name"] for s in listed] == ["op"]
        assert isinstance(listed[0]["publisher"]["bitrate"], int)

        sessions = (await api(http, gw, "GET", "/api/sessions")).json()["sessions"]
        assert sorted(s["kind"] for s in sessions) == ["publisher", "viewer"]
        viewer_id = next(s["id"] for s in sessions if s["kind"] == "viewer")
        assert viewer_location.endswith(viewer_id)
        session = await wait_viewer_packets(http, gw, viewer_id)
        assert session["stream"] == "op" and session["node"] == "janus0"
        conforms(session, "Session")
        for listed_session in sessions:
            conforms(listed_session, "Session")
        assert {m["kind"]: m["codec"] for m in session["stats"]} == {"audio": "opus", "video": "vp8"}

        r = await api(http, gw, "POST", "/api/streams/op/rotate-key")
        assert r.status_code == 200 and r.json()["publish_key"] != key
        # The live publisher keeps going; the old key no longer publishes.
        assert (await api(http, gw, "GET", "/api/streams/op")).json()["live"] is True
        assert_problem(await WhipSession(gw.whip("op"), token=key, http=http)
                       .post_offer(pc.localDescription.sdp), 403)

        assert (await api(http, gw, "DELETE", "/api/streams/op")).status_code == 204
        # The viewer's event stream ends, with no "reconnect": nothing is coming back.
        names = await asyncio.wait_for(events, 10)
        assert "active" in names and "reconnect" not in names, names
        # Their resources are gone: the clients' own DELETEs find nothing.
        assert_problem(await http.delete(viewer_location), 404)
        assert_problem(await whip.delete(), 404)
        assert_problem(await api(http, gw, "GET", "/api/streams/op"), 404)
        assert (await api(http, gw, "GET", "/api/sessions")).json()["sessions"] == []
        await gw.app.state.egress.settled()
        await leaks.assert_only_control_handles()  # Janus holds no room, mountpoint or handle
    finally:
        await viewer_pc.close()
        await pc.close()


async def test_kick_a_viewer_then_the_publisher(start_gateway: GatewayFactory,
                                                http: httpx.AsyncClient) -> None:
    gw = await start_gateway(admin_token=TOKEN)
    pc = await aiortc_publisher()
    viewer_pc, frames = await aiortc_viewer()
    try:
        whip = WhipSession(gw.whip("kick"), http=http)
        assert (await whip.post_offer(pc.localDescription.sdp)).status_code == 201
        await answer(pc, whip)
        await wait_stream(http, gw, "kick", live=True)
        r = await watch(http, gw.whep("kick"), viewer_pc)
        assert r.status_code == 201, r.text
        await frames.wait(1)
        sessions = (await api(http, gw, "GET", "/api/sessions")).json()["sessions"]
        ids = {s["kind"]: s["id"] for s in sessions}
        assert (await api(http, gw, "DELETE", f"/api/sessions/{ids['viewer']}")).status_code == 204
        assert_problem(await http.delete(r.headers["location"]), 404)
        assert (await api(http, gw, "GET", "/api/streams/kick")).json()["viewers"]["total"] == 0

        sid = ids["publisher"]
        assert (await api(http, gw, "DELETE", f"/api/sessions/{sid}")).status_code == 204
        assert_problem(await api(http, gw, "GET", f"/api/sessions/{sid}"), 404)
        assert_problem(await api(http, gw, "DELETE", f"/api/sessions/{sid}"), 404)
        assert_problem(await whip.delete(), 404)
        assert (await api(http, gw, "GET", "/api/sessions")).json()["sessions"] == []
    finally:
        await viewer_pc.close()
        await pc.close()


async def test_who_may_call(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    off = await start_gateway(instance_name="api-off")  # its own tag: not reaped by the next
    body = assert_problem(await http.get(f"{off.url}/api/sessions", headers=ADMIN), 404)
    assert "admin_token" in body["detail"]
    gw = await start_gateway(admin_token=TOKEN)
    r = await http.get(f"{gw.url}/api/sessions")
    assert assert_problem(r, 401)["request_id"] == r.headers["x-request-id"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_problem(await http.delete(f"{gw.url}/api/streams/x",
                                     headers={"Authorization": "Bearer nope"}), 403)
    # Without any Authorization, /api/streams stays the public listing.
    assert (await http.get(f"{gw.url}/api/streams")).json() == {"streams": {}}
    assert_problem(await http.get(f"{gw.url}/api/streams",
                                  headers={"Authorization": "Bearer nope"}), 403)
    assert_problem(await api(http, gw, "GET", "/api/sessions/nope"), 404)
    assert_problem(await api(http, gw, "POST", "/api/streams", content="{",
                             headers={"Content-Type": "application/json"}), 400)
    assert_problem(await api(http, gw, "POST", "/api/streams", json={"name": "x", "oops": 1}), 400)
    assert_problem(await api(http, gw, "POST", "/api/streams/x/rotate-key"), 404)


async def test_serve_writes_json_logs_with_request_ids(janus: Any, leaks: Leaks,
                                                       http: httpx.AsyncClient) -> None:
    """``whip-gateway serve --log-format json``: uvicorn's access lines and the
    gateway's own come out as JSON objects carrying the request id, tokens redacted."""
    import json
    import os
    import signal
    import sys

    from gateway.janus.process import free_port
    from tests.integration.test_embedded import wait_health

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--janus",
        janus.cfg.api_url, "--log-format", "json", "--log-level", "info",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "WHIP_GATEWAY_ADMIN_TOKEN": TOKEN,
             "WHIP_GATEWAY_INSTANCE_NAME": "json-logs"})
    try:
        await wait_health(http, url, ok=True)
        r = await http.get(f"{url}/api/sessions?token=s3cret-in-the-url",
                           headers={"X-Request-Id": "probe-1"})
        body = assert_problem(r, 401)
        assert body["request_id"] == r.headers["x-request-id"] == "probe-1"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), 15)
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("request_id") == "probe-1"]
    assert {line["logger"] for line in mine} >= {"gateway.http.problems", "uvicorn.access"}, lines
    access = next(line for line in mine if line["logger"] == "uvicorn.access")
    assert "token=[redacted]" in access["message"]
    assert b"s3cret" not in output
    assert all("time" in line and "level" in line for line in lines)
    await leaks.assert_nothing()
