"""The conformance suite (``conformance/``) against our own gateway.

The gateway runs on Janus 1.1.2 with a publish key, a viewer key and two
ICE servers configured, so the auth checks, the Link checks and the
Eyevinn raw-token profile all apply.  Every MUST must pass; SHOULD
failures are listed in the assertion message (and in the reports written
to the test's tmp dir) but do not fail the test.  The ``start_gateway``
fixture then checks that the suite left nothing behind in Janus: every
session it made was DELETEd.

The CLI (``python -m conformance``) and the pytest plugin are run as
subprocesses against a second gateway, on a few quick checks, to prove the
entry points, the exit status and the report files.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from conformance import Config, Level, Status, all_checks, run_suite
from conformance.offers import BROWSER_PAYLOAD_TYPES
from conformance.report import to_json, to_markdown
from gateway.sdp import model as sdp
from tests.conftest import FIXTURES, RATE_LIMITS_OFF, GatewayFactory, RunningGateway

PUBLISH_KEY = "conformance-publish-key"
VIEWER_KEY = "conformance-viewer-key"
ICE_SERVERS = [
    {"url": "stun:127.0.0.1:3478"},
    {"url": "turn:127.0.0.1:3478?transport=udp", "username": "user", "credential": "pass"},
]


async def _gateway(start_gateway: GatewayFactory) -> RunningGateway:
    # The rate limits are off: the suite makes about a hundred POST/PATCH/DELETE
    # requests in seconds (and some bad tokens on purpose), and this test is
    # about conformance, not about rate limiting.
    return await start_gateway(stream_keys={"*": PUBLISH_KEY}, viewer_keys={"*": VIEWER_KEY},
                               ice_servers=ICE_SERVERS, **RATE_LIMITS_OFF)


def _config(gw: RunningGateway) -> Config:
    return Config(whip=gw.whip("{stream}"), whep=gw.whep("{stream}"),
                  token=PUBLISH_KEY, viewer_token=VIEWER_KEY)


async def test_gateway_passes_every_must(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = await _gateway(start_gateway)
    report = await run_suite(_config(gw))

    json_path, md_path = tmp_path / "report.json", tmp_path / "report.md"
    json_path.write_text(to_json(report))
    md_path.write_text(to_markdown(report))

    # Every registered check ran and has a verdict with a reason.
    ids = [c.id for c in all_checks()]
    assert [r.check.id for r in report.results] == ids
    assert all(r.reason for r in report.results)

    data = json.loads(json_path.read_text())
    assert set(data) >= {"tool", "version", "started_at", "duration_s", "target", "summary", "results"}
    assert data["target"] == {"whip": gw.whip("{stream}"), "whep": gw.whep("{stream}"), "token": True,
                              "viewer_token": True, "stream": None}, "tokens never reach the report"
    assert PUBLISH_KEY not in json_path.read_text() and VIEWER_KEY not in md_path.read_text()
    summary = data["summary"]
    assert summary["total"] == len(ids) == summary["pass"] + summary["fail"] + summary["skip"]
    for item in data["results"]:
        assert set(item) >= {"id", "title", "spec", "section", "level", "status", "reason",
                             "duration_s", "exchanges"}
        assert item["level"] in ("MUST", "SHOULD", "MAY")
        assert item["status"] in ("pass", "fail", "skip")
    markdown = md_path.read_text()
    assert markdown.startswith("# WHIP/WHEP conformance report")
    assert "| Result | Level | Check | Spec | Reason |" in markdown
    assert markdown.count("\n| ") == len(ids) + 1  # a row per check, plus the header

    # Things this configuration must exercise, not skip.
    ran = {r.check.id: r for r in report.results}
    for must_run in ("whip.auth.missing-token", "whep.auth.missing-token", "whip.link.ice-server",
                     "media.whep.frames", "profile.obs.publish", "profile.firefox.whep-viewer",
                     "ext.sse.event-format", "whep.no-publisher.409", "whep.counter-offer.exchange",
                     "profile.eyevinn.raw-token-whep"):
        assert ran[must_run].status is not Status.SKIP, f"{must_run}: {ran[must_run].reason}"

    # Issue 7's checks: RFC 9725's quoted If-Match: "*", restart answers with each
    # candidate once, answers in the viewer's own formats (H.264 profile), and
    # an event-stream URL that works without Authorization: each passes here.
    for must_pass in ("whip.patch.quoted-wildcard", "whep.patch.quoted-wildcard",
                      "whip.patch.ice-restart.candidates-once", "whep.patch.ice-restart.candidates-once",
                      "whep.answer.offered-formats", "ext.sse.url-without-token"):
        assert ran[must_pass].status is Status.PASS, f"{must_pass}: {ran[must_pass].reason}"

    should = "\n".join(f"  {r.check.id} ({r.check.reference}): {r.reason}" for r in report.should_failures)
    must = "\n".join(f"  {r.check.id} ({r.check.reference}): {r.reason}" for r in report.must_failures)
    assert not report.must_failures, f"MUST failures:\n{must}\nSHOULD failures:\n{should or '  none'}"
    assert summary["conformant"] is True and report.exit_code == 0


def test_browser_payload_types_match_fixtures() -> None:
    """The browser profiles' payload types are the real offers' (tests/fixtures/sdp)."""
    for browser, pts in BROWSER_PAYLOAD_TYPES.items():
        desc = sdp.parse((FIXTURES / "sdp" / f"{browser}_view.sdp").read_text())
        found = {}
        for media in desc.media:
            want = "opus" if media.kind == "audio" else "vp8"
            found[media.kind] = next(c.pt for c in media.codecs() if c.key == want)
        assert found == pts, browser


async def _run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).parents[2]), env={"PATH": "/usr/bin:/bin", "COLUMNS": "200",
                                                  "WHIP_GATEWAY_SANDBOX": "1"})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_and_pytest_plugin(start_gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = await _gateway(start_gateway)
    target = ["--whip", gw.whip("{stream}"), "--whep", gw.whep("{stream}"),
              "--token", PUBLISH_KEY, "--viewer-token", VIEWER_KEY]
    quick = "whip.options.*,whep.head.*,whip.post.created,whip.auth.*"

    # The CLI: a rich table, the two report files, exit status 0.
    rc, out, err = await _run("-m", "conformance", *target, "--only", quick,
                              "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"))
    assert rc == 0, out + err
    assert "whip.options.cors-preflight" in out and "CONFORMANT" in out
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    assert {r["id"] for r in results} == {"whip.options.accept-post", "whip.options.cors-preflight",
                                          "whip.options.preflight-no-ice-servers",
                                          "whep.head.discoverability", "whip.post.created",
                                          "whip.auth.missing-token", "whip.auth.wrong-token"}
    assert (tmp_path / "r.md").read_text().count("✅ pass") == len(results)

    # A MUST failure exits 1: a WHIP URL where nothing answers POST.
    rc, out, err = await _run("-m", "conformance", "--whip", f"{gw.url}/nowhere/{{stream}}",
                              "--only", "whip.post.created", "-q")
    assert rc == 1, out + err
    assert "NOT CONFORMANT" in out

    # Without rich: a one-line hint, then plain lines.
    rc, out, err = await _run("-c", "import sys; sys.modules['rich'] = None; "
                                    "from conformance.__main__ import main; sys.exit(main(sys.argv[1:]))",
                              *target, "--only", "whep.head.discoverability", "-q")
    assert rc == 0, out + err
    assert err.strip().splitlines()[0].startswith("conformance: install rich")
    assert out.startswith("pass  SHOULD  whep.head.discoverability")

    # The pytest plugin: one item per selected check.
    rc, out, err = await _run("-m", "pytest", "-p", "conformance.pytest_plugin", "-p", "no:cacheprovider",
                              "--pyargs", "conformance.test_server", "-q",
                              "--conformance-whip", gw.whip("{stream}"),
                              "--conformance-whep", gw.whep("{stream}"),
                              "--conformance-token", PUBLISH_KEY, "--conformance-viewer-token", VIEWER_KEY,
                              "--conformance-only", quick)
    assert rc == 0, out + err
    assert "7 passed" in out, out


def test_levels_and_sections_are_declared() -> None:
    """Every check says which spec section it tests, at which level."""
    for c in all_checks():
        assert c.level in (Level.MUST, Level.SHOULD, Level.MAY)
        assert c.spec and c.section and c.title, c.id
        if c.spec == "RFC 9725":
            assert c.section.split()[0][0].isdigit(), c.id


def _broken_server():  # type: ignore[no-untyped-def]
    """A WHIP endpoint that gets much wrong, to prove the checks can fail:
    it takes anything as an offer, echoes it back not recvonly, hands out
    sequential relative Locations and a weak ETag, answers GET with 405 or a
    body, has no Accept-Post or CORS, puts an ice-server Link on preflights
    and an http: one on the 201, and forgets nothing on DELETE."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    count = iter(range(1, 1000))

    async def endpoint(request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Link": '<stun:127.0.0.1:3478>; rel="ice-server"'})
        if request.method == "GET":
            return Response("use POST", status_code=405)
        offer = (await request.body()).decode()
        return Response(offer.replace("a=sendonly", "a=sendrecv"), status_code=201,
                        media_type="application/sdp",
                        headers={"Location": f"s/{next(count)}", "ETag": 'W/"1"',
                                 "Link": '<http://127.0.0.1/stun>; rel="ice-server"'})

    async def resource(request: Request) -> Response:
        if request.method == "DELETE":
            return Response(status_code=200)
        return Response("session", status_code=200)

    return Starlette(routes=[Route("/whip/{stream}", endpoint, methods=["POST", "GET", "OPTIONS"]),
                             Route("/whip/s/{n}", resource, methods=["GET", "DELETE"])])


async def test_suite_flags_a_broken_server() -> None:
    import uvicorn

    from gateway.janus.process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_broken_server(), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        report = await run_suite(Config(whip=f"http://127.0.0.1:{port}/whip/{{stream}}"),
                                 only=["whip.post.*", "whip.get.*", "whip.options.*", "whip.link.ice-server",
                                       "whip.resource.entropy", "whip.delete"])
    finally:
        server.should_exit = True
        await task
    status = {r.check.id: r.status for r in report.results}
    assert status.pop("whip.post.created") is Status.PASS  # 201, application/sdp, a Location
    assert status.pop("whip.post.answer-candidates") is Status.PASS  # it echoed aiortc's candidates
    assert status.pop("whip.delete.ignores-if-match") is Status.PASS  # it ignores If-Match, rightly
    assert status == dict.fromkeys(status, Status.FAIL), {
        r.check.id: r.reason for r in report.results if r.status is not Status.FAIL}
    assert set(status) == {
        "whip.post.answer-recvonly", "whip.post.wrong-content-type", "whip.post.malformed-sdp",
        "whip.post.offer-direction", "whip.post.location-form", "whip.resource.entropy",
        "whip.get.endpoint", "whip.get.resource", "whip.options.accept-post", "whip.options.cors-preflight",
        "whip.options.preflight-no-ice-servers", "whip.link.ice-server", "whip.delete"}
    assert report.exit_code == 1
