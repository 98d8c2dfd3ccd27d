"""Limits and security: body size and time, rate limits, CORS, tokens in logs."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Awaitable, Callable

import httpx
import pytest

from gateway.http.logredact import RedactTokens
from gateway.janus.process import free_port
from tests.conftest import RATE_LIMITS_OFF, GatewayFactory, read_fixture
from tests.nginx_proxy import nginx_proxy
from tests.webinar import join_and_leave
from tests.integration.test_whip import assert_problem
from tests.publishers import aiortc_publisher

SDP = "application/sdp"


async def test_oversized_body_is_413(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(max_body_bytes=4096)
    body = "v=0\r\n" + "a=x-padding:" + "x" * 8000 + "\r\n"
    assert_problem(await http.post(gw.whip("big"), content=body, headers={"Content-Type": SDP}), 413)
    assert_problem(await http.post(gw.whep("big"), content=body, headers={"Content-Type": SDP}), 413)


async def test_oversized_request_head_is_refused(gateway, http: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    """Request heads are capped at 16 KiB (gateway.http.server; httptools alone has no cap)."""
    r = await http.post(gateway.whip("h"), content="x", headers={
        "Content-Type": SDP, "Authorization": "Bearer " + "x" * 65536})
    assert r.status_code in (400, 431)


async def test_stalled_body_is_cut_off_with_408(start_gateway: GatewayFactory) -> None:
    """A client that announces a body and stops sending it is not waited for."""
    gw = await start_gateway(body_timeout=0.5)
    host, port = gw.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /whip/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
                     b"Content-Length: 1000\r\n\r\nv=0\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 408"), head
        assert b"application/problem+json" in head
    finally:
        writer.close()


async def _until_refused(send: Callable[[], Awaitable[httpx.Response]], limit: int,
                         admitted: int) -> tuple[int, httpx.Response]:
    """Send until the first 429; (how many got through, the 429).

    The budgets are sliding-window counters: at the edge of a window one
    request more than ``limit`` may pass (README, "Rate limits"), never more.
    """
    passed = 0
    for _ in range(limit + 2):
        r = await send()
        if r.status_code == 429:
            return passed, r
        assert r.status_code == admitted, r.text
        passed += 1
    raise AssertionError(f"no 429 after {limit + 2} requests (budget {limit})")


def assert_too_many(r: httpx.Response, slug: str = "too-many-requests") -> dict:
    """RFC 6585 section 4: 429, problem+json, and a Retry-After within the window."""
    body = assert_problem(r, 429)
    assert body["type"].endswith(slug), body
    assert 0 < int(r.headers["retry-after"]) <= 60
    return body


async def test_rate_limits_per_client_and_per_stream(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_per_stream": "3/minute"})
    # Malformed offers are cheap to send and still count: the budget guards
    # the gateway and Janus, whatever the outcome.
    passed, r = await _until_refused(
        lambda: http.post(gw.whip("hot"), content="x", headers={"Content-Type": SDP}), 3, 400)
    assert passed in (3, 4)
    assert_too_many(r)
    assert_problem(await http.post(gw.whip("cold"), content="x", headers={"Content-Type": SDP}), 400)

    gw2 = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_per_client": "2/minute"})
    streams = iter(f"s{i}" for i in range(10))
    passed, r = await _until_refused(
        lambda: http.post(gw2.whep(next(streams)), content="x", headers={"Content-Type": SDP}), 2, 400)
    assert passed in (2, 3)
    assert_too_many(r)
    # Reads are not limited.
    assert (await http.get(f"{gw2.url}/api/streams")).status_code == 200
    # Browsers get the 429 through CORS, Retry-After readable.
    r = await http.post(gw2.whep("s"), content="x",
                        headers={"Content-Type": SDP, "Origin": "https://player.example"})
    assert_too_many(r)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "retry-after" in r.headers["access-control-expose-headers"].lower()


async def test_publishers_have_a_tighter_budget_than_viewers(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_publish_per_client": "2/minute",
                                "rate_limit_view_per_client": "20/minute"})
    streams = iter(f"p{i}" for i in range(10))
    passed, r = await _until_refused(
        lambda: http.post(gw.whip(next(streams)), content="x", headers={"Content-Type": SDP}), 2, 400)
    assert passed in (2, 3)
    assert "WHIP sessions" in assert_too_many(r)["detail"]
    for i in range(5):  # viewers still get in from the same address
        assert_problem(await http.post(gw.whep(f"v{i}"), content="x",
                                       headers={"Content-Type": SDP}), 400)


async def test_a_webinar_of_1000_viewers_from_one_address_gets_in_with_the_defaults(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    """The issue's case: a whole audience behind one NAT (or one proxy) joins at once.

    Each viewer POSTs its offer, trickles two candidates and leaves.  Nobody
    publishes, so the POST gets 409 and the PATCH/DELETE 404, but all pass
    the limiter first, which sits before the domain: none may get 429.  At
    full speed, so all 4000 requests fall within one window of the budgets.
    """
    gw = await start_gateway()
    offer = read_fixture("sdp", "chrome_view.sdp")
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(20)

    async def viewer(i: int) -> None:
        async with gate:
            await join_and_leave(http, gw.whep("webinar"), f"{gw.whep('webinar')}/viewer{i}",
                                 offer, statuses)

    await asyncio.wait_for(asyncio.gather(*(viewer(i) for i in range(1000))), 100)
    assert statuses == {409: 1000, 404: 3000}, statuses


async def test_token_guessing_is_cut_off_and_good_viewers_are_not(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    """401/403 answers have their own strict budget per address (the default, 30/minute)."""
    gw = await start_gateway(viewer_keys={"private": "the-right-token"})
    guesses = iter(f"guess-{i}" for i in range(100))
    passed, r = await _until_refused(
        lambda: http.post(gw.whep("private"), content="x", headers={
            "Content-Type": SDP, "Authorization": f"Bearer {next(guesses)}"}), 30, 403)
    assert passed in (30, 31)
    body = assert_too_many(r, "authentication-failures-exceeded")
    assert "failed authentications from 127.0.0.1" in body["detail"]
    # Still cut off, whatever the token: guessing learns nothing more here.
    assert_too_many(await http.post(gw.whep("private") + "?token=the-right-token", content="x",
                                    headers={"Content-Type": SDP}), "authentication-failures-exceeded")
    # A request without a token is not a guess: open streams still work from here.
    assert_problem(await http.post(gw.whep("open"), content="x", headers={"Content-Type": SDP}), 400)
    # Another address is not affected: its good token gets through to the domain.
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.3"),
                                 timeout=15) as other:
        assert_problem(await other.post(gw.whep("private"), content="x", headers={
            "Content-Type": SDP, "Authorization": "Bearer the-right-token"}), 400)


async def test_spoofed_forwarded_for_from_an_untrusted_address_changes_nothing(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    # 127.0.0.1 (where this test connects from) is not a trusted proxy here.
    for trusted in ([], ["127.0.0.3"]):
        gw = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_per_client": "2/minute",
                                    "trusted_proxies": trusted})
        spoofs = iter(f"198.51.100.{i}" for i in range(10))
        passed, r = await _until_refused(lambda: http.post(gw.whep("s"), content="x", headers={
            "Content-Type": SDP, "X-Forwarded-For": next(spoofs)}), 2, 400)
        assert passed in (2, 3), "a new X-Forwarded-For must not buy a new budget"
        assert "from 127.0.0.1" in assert_too_many(r)["detail"]
    assert any("X-Forwarded-For" in m or "x-forwarded-for" in m for m in caplog.messages)
    assert not any("198.51.100." in m for m in caplog.messages)
    # Nor does it move Location.
    gw = await start_gateway()
    pc = await aiortc_publisher()
    try:
        r = await http.post(gw.whip("s"), content=pc.localDescription.sdp, headers={
            "Content-Type": SDP, "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
            "Forwarded": 'for=198.51.100.1;host=evil.example;proto=https'})
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith(gw.url + "/whip/s/")
        assert (await http.delete(r.headers["location"])).status_code == 200
    finally:
        await pc.close()


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    gw = await start_gateway(access_log=True, **{**RATE_LIMITS_OFF, "rate_limit_per_client": "2/minute",
                                                 "trusted_proxies": ["127.0.0.0/30"]})
    access = logging.getLogger("uvicorn.access")  # uvicorn does not propagate it
    access.addHandler(caplog.handler)
    try:
        def post(client: str, stream: str = "s") -> Awaitable[httpx.Response]:
            # What a proxy that appends to the header sends: a client's own claim, then the client.
            return http.post(gw.whep(stream), content="x", headers={
                "Content-Type": SDP, "X-Forwarded-For": f"10.9.9.9, {client}"})

        passed, r = await _until_refused(lambda: post("192.0.2.10"), 2, 400)
        assert passed in (2, 3)
        assert "from 192.0.2.10" in assert_too_many(r)["detail"]
        # Each client behind the proxy has a budget of its own.
        assert_problem(await post("192.0.2.11"), 400)
        assert_problem(await post("192.0.2.12"), 400)
    finally:
        access.removeHandler(caplog.handler)
    assert any(m.startswith("192.0.2.11:") for m in caplog.messages), caplog.messages

    # Location carries the host and scheme the client used, as the proxy says.
    pc = await aiortc_publisher()
    try:
        r = await http.post(gw.whip("s"), content=pc.localDescription.sdp, headers={
            "Content-Type": SDP, "X-Forwarded-For": "192.0.2.20",
            "X-Forwarded-Host": "live.example.com", "X-Forwarded-Proto": "https"})
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith("https://live.example.com/whip/s/")
        path = r.headers["location"].removeprefix("https://live.example.com")
        assert (await http.delete(gw.url + path)).status_code == 200
    finally:
        await pc.close()


async def test_behind_a_real_nginx_each_viewer_has_its_own_budget(
    start_gateway: GatewayFactory
) -> None:
    """nginx set up as the README says, in front of a gateway that trusts it (127.0.0.1).

    Clients connect to nginx from 127.0.0.3 and 127.0.0.4: each is its own
    client, what a client writes into X-Forwarded-For itself changes
    nothing, and Location names the proxy, where the client came in.
    """
    gw = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_per_client": "3/minute",
                                "trusted_proxies": ["127.0.0.1"]})
    try:
        proxy_cm = nginx_proxy(gw.url)
        proxy = await proxy_cm.__aenter__()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    try:
        clients = [httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=a), timeout=15)
                   for a in ("127.0.0.3", "127.0.0.4")]
        one, two = clients
        post = lambda c, **h: c.post(f"{proxy}/whep/s", content="x",  # noqa: E731
                                     headers={"Content-Type": SDP, **h})
        passed, r = await _until_refused(lambda: post(one, **{"X-Forwarded-For": "198.51.100.1"}),
                                         3, 400)
        assert passed in (3, 4)
        assert "from 127.0.0.3" in assert_too_many(r)["detail"]
        assert_problem(await post(two), 400)  # 1 of 3 for 127.0.0.4

        pc = await aiortc_publisher()  # and a publish with its DELETE: 3 of 3
        try:
            r = await two.post(f"{proxy}/whip/s", content=pc.localDescription.sdp,
                               headers={"Content-Type": SDP})
            assert r.status_code == 201, r.text
            assert r.headers["location"].startswith(f"{proxy}/whip/s/")
            assert (await two.delete(r.headers["location"])).status_code == 200
        finally:
            await pc.close()
            for c in clients:
                await c.aclose()
    finally:
        await proxy_cm.__aexit__(None, None, None)


async def test_rfc7239_forwarded_from_a_trusted_proxy(
    start_gateway: GatewayFactory, http: httpx.AsyncClient
) -> None:
    gw = await start_gateway(**{**RATE_LIMITS_OFF, "rate_limit_per_client": "1/minute",
                                "trusted_proxies": ["127.0.0.1"], "forwarded_header": "forwarded"})

    def post(node: str) -> Awaitable[httpx.Response]:
        return http.post(gw.whep("s"), content="x", headers={
            "Content-Type": SDP, "Forwarded": f'for={node};proto=https, for="[::1]"',
            "X-Forwarded-For": "203.0.113.99"})  # not the header this gateway was told to read

    # [::1] is not trusted, so it is the client for all three.
    passed, r = await _until_refused(lambda: post('"[2001:db8::1]:4711"'), 1, 400)
    assert "from ::1" in assert_too_many(r)["detail"]


async def test_replicas_share_budgets_through_redis(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, redis_url: str
) -> None:
    """Two gateway apps, one Redis: a client cannot double its budget by switching replicas."""
    settings = {**RATE_LIMITS_OFF, "rate_limit_per_client": "3/minute",
                "rate_limit_auth_failures_per_client": "2/minute",
                "rate_limit_storage": redis_url, "viewer_keys": {"private": "right"}}
    replicas = [await start_gateway(**settings, instance_name=f"replica-{i}") for i in range(2)]
    passed = 0
    for i in range(5):
        r = await http.post(replicas[i % 2].whep("s"), content="x", headers={"Content-Type": SDP})
        if r.status_code == 429:
            break
        assert_problem(r, 400)
        passed += 1
    assert passed in (3, 4), passed
    assert_too_many(r)
    assert_too_many(await http.post(replicas[(i + 1) % 2].whep("s"), content="x",
                                    headers={"Content-Type": SDP}))
    # Token guessing, spread over the replicas (GETs: not counted, but authenticated).
    failures = 0
    for i in range(5):
        r = await http.get(replicas[i % 2].whep("private") + "/x",
                           headers={"Authorization": f"Bearer guess-{i}"})
        if r.status_code == 429:
            break
        assert r.status_code in (401, 403), r.text
        failures += 1
    assert failures in (2, 3), failures
    assert_too_many(r, "authentication-failures-exceeded")


async def test_a_failing_limit_storage_lets_requests_through(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis gone: the limits must not become the outage (logged, requests served)."""
    caplog.set_level(logging.WARNING, logger="gateway")
    gw = await start_gateway(rate_limit_storage=f"redis://127.0.0.1:{free_port()}/0",
                             rate_limit_per_client="1/minute")
    for _ in range(3):
        assert_problem(await http.post(gw.whep("s"), content="x", headers={"Content-Type": SDP}), 400)
    assert sum("rate-limit storage failed" in m for m in caplog.messages) == 1


async def test_cors_origins_are_configurable(start_gateway: GatewayFactory, http: httpx.AsyncClient) -> None:
    gw = await start_gateway(cors_origins=["https://player.example"])
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type, authorization"}
    ok = await http.options(gw.whep("s"), headers={"Origin": "https://player.example", **preflight})
    assert ok.headers["access-control-allow-origin"] == "https://player.example"
    bad = await http.options(gw.whep("s"), headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in bad.headers


async def test_tokens_never_reach_the_logs(
    start_gateway: GatewayFactory, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cret-stream-key-0123456789"
    gw = await start_gateway(access_log=True, stream_keys={"priv": secret},
                             viewer_keys={"priv": secret + "v"})
    caplog.set_level(logging.DEBUG)
    access_logger = logging.getLogger("uvicorn.access")  # uvicorn does not propagate it
    access_logger.addHandler(caplog.handler)
    pc = await aiortc_publisher()
    try:
        r = await http.post(gw.whip("priv") + f"?token={secret}", content=pc.localDescription.sdp,
                            headers={"Content-Type": SDP})
        assert r.status_code == 201
        await http.post(gw.whip("priv"), content="x",
                        headers={"Content-Type": SDP, "Authorization": f"Bearer {secret}x"})
        await http.post(gw.whep("priv") + f"?token={secret}v", content="x", headers={"Content-Type": SDP})
        assert (await http.delete(r.headers["location"], headers={"Authorization": secret})).status_code == 200
    finally:
        await pc.close()
        access_logger.removeHandler(caplog.handler)
    ours = [r for r in caplog.records if r.name.split(".")[0] in ("gateway", "uvicorn")]
    access = [r.getMessage() for r in ours if r.name == "uvicorn.access"]
    assert any("/whip/priv?token=[redacted]" in line for line in access), access
    assert not any(secret in r.getMessage() for r in ours)


def test_access_log_lines_are_redacted() -> None:
    """uvicorn's access log record carries the full path with its query."""
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "POST", "/whip/x?token=abc&b=1", "1.1", 201), None)
    RedactTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "POST /whip/x?token=[redacted]&b=1 HTTP/1.1" 201'
