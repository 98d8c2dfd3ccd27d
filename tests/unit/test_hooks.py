"""Webhook delivery and the auth webhook against a real local HTTP receiver.

Signatures are checked with the ``standardwebhooks`` library, the way a
receiver would; retries, drops and the auth webhook's answers are observed
from the receiver's side and from what a caller is told.
"""

from __future__ import annotations

import asyncio
import base64
import secrets

import pytest
import standardwebhooks

from gateway.config import SettingsError, load_settings
from gateway.core.auth_webhook import AuthPolicy, AuthWebhook
from gateway.core.webhooks import HookPolicy, Webhooks
from gateway.errors import AuthHookForbidden, AuthHookRefused, AuthHookUnavailable
from gateway.janus.process import free_port
from tests.webhook_receiver import Receiver

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
FAST = HookPolicy(retries=3, backoff=0.01, timeout=2.0, queue_size=100, drain_timeout=5.0)


def verify(received) -> dict:  # type: ignore[no-untyped-def]
    return standardwebhooks.Webhook(SECRET).verify(received.body, received.headers)


async def test_events_are_signed_and_verified_by_the_library() -> None:
    receiver = Receiver()
    url = await receiver.start()
    hooks = Webhooks([(url, SECRET, [])], FAST)
    hooks.start()
    try:
        hooks.emit("stream.live", {"stream": "show"})
        hooks.emit("stream.ended", {"stream": "show", "reason": "DELETE by the client"})
        got = await receiver.wait_for(lambda r: len(r) == 2)
        payloads = [verify(r) for r in got]
        assert [p["type"] for p in payloads] == ["stream.live", "stream.ended"]  # in order
        assert payloads[0]["data"] == {"stream": "show"}
        assert got[0].headers["webhook-id"] != got[1].headers["webhook-id"]
        tampered = got[0].body.replace(b"show", b"shoe")
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(SECRET).verify(tampered, got[0].headers)
    finally:
        await hooks.close()
        await receiver.stop()
    assert hooks.receivers[0].delivered == 2


async def test_event_filter() -> None:
    receiver = Receiver()
    url = await receiver.start()
    hooks = Webhooks([(url, SECRET, ["stream.ended"])], FAST)
    hooks.start()
    try:
        hooks.emit("stream.live", {"stream": "a"})
        hooks.emit("stream.ended", {"stream": "a"})
        await receiver.wait_for(lambda r: len(r) == 1)
    finally:
        await hooks.close()
        await receiver.stop()
    assert receiver.types() == ["stream.ended"]


async def test_5xx_is_retried_with_the_same_id_and_a_fresh_valid_signature() -> None:
    answers = iter([500, 503, 204])
    receiver = Receiver(answer=lambda r: next(answers))
    url = await receiver.start()
    hooks = Webhooks([(url, SECRET, [])], FAST)
    hooks.start()
    try:
        hooks.emit("node.down", {"node": "egress"})
        got = await receiver.wait_for(lambda r: len(r) == 3)
    finally:
        await hooks.close()
        await receiver.stop()
    assert len({r.headers["webhook-id"] for r in got}) == 1
    assert all(verify(r)["type"] == "node.down" for r in got)
    stats = hooks.receivers[0]
    assert (stats.delivered, stats.retried, stats.failed) == (1, 2, 0)


async def test_4xx_is_not_retried_and_retries_are_bounded() -> None:
    receiver = Receiver(answer=lambda r: 410 if r.json["type"] == "stream.live" else 500)
    url = await receiver.start()
    hooks = Webhooks([(url, SECRET, [])], FAST)
    hooks.start()
    try:
        hooks.emit("stream.live", {"stream": "a"})
        hooks.emit("stream.ended", {"stream": "a"})
        await receiver.wait_for(lambda r: len(r) == 1 + 1 + FAST.retries)
    finally:
        await hooks.close()
        await receiver.stop()
    assert receiver.types() == ["stream.live"] + ["stream.ended"] * (1 + FAST.retries)
    assert hooks.receivers[0].failed == 2


async def test_a_hanging_receiver_fills_only_its_own_queue() -> None:
    """One receiver never answers: its queue holds ``queue_size`` events and
    the rest are dropped and counted; emit never waits, and a healthy
    receiver beside it gets everything."""
    stuck, healthy = Receiver(hang=True), Receiver()
    stuck_url, healthy_url = await stuck.start(), await healthy.start()
    policy = HookPolicy(retries=0, timeout=30.0, queue_size=2, drain_timeout=0.1)
    hooks = Webhooks([(stuck_url, SECRET, []), (healthy_url, SECRET, [])], policy)
    hooks.start()
    try:
        hooks.emit("viewers.changed", {"n": 0})
        await stuck.wait_for(lambda r: len(r) == 1)  # the first is in flight, hanging
        for n in range(1, 6):
            hooks.emit("viewers.changed", {"n": n})
            await healthy.wait_for(lambda r, n=n: len(r) == n + 1)
        assert hooks.receivers[0].dropped == 3  # 2 queued behind the stuck one
        assert hooks.receivers[1].dropped == 0
    finally:
        await hooks.close()
        await stuck.stop()
        await healthy.stop()
    assert [verify(r)["data"]["n"] for r in healthy.received] == list(range(6))


async def test_unreachable_receiver_gives_up_after_the_retries() -> None:
    hooks = Webhooks([(f"http://127.0.0.1:{free_port()}/gone", SECRET, [])], FAST)
    hooks.start()
    hooks.emit("node.up", {"node": "x"})
    await asyncio.wait_for(hooks.receivers[0].queue.join(), 10)
    await hooks.close()
    assert (hooks.receivers[0].failed, hooks.receivers[0].retried) == (1, FAST.retries)


async def test_auth_webhook_decides_caches_and_fails_closed() -> None:
    def decide(received) -> int:  # type: ignore[no-untyped-def]
        token = received.json["token"]
        return {"good": 204, None: 401}.get(token, 403)

    receiver = Receiver(answer=decide)
    url = await receiver.start()
    auth = AuthWebhook(AuthPolicy(url=url, secret=SECRET, cache_ttl=60, retry_after=7))
    try:
        await auth.check("publish", "show", "good", "127.0.0.2")
        await auth.check("publish", "show", "good", "127.0.0.2")  # cached
        assert len(receiver.received) == 1
        asked = verify(receiver.received[0])  # signed too, when a secret is set
        assert asked == {"action": "publish", "stream": "show", "token": "good",
                         "client": "127.0.0.2"}
        with pytest.raises(AuthHookRefused) as refused:
            await auth.check("view", "show", None, "127.0.0.2")
        assert refused.value.status == 401
        with pytest.raises(AuthHookForbidden) as forbidden:
            await auth.check("view", "show", "bad", "127.0.0.2")
        assert forbidden.value.status == 403
        with pytest.raises(AuthHookForbidden):  # a refusal is cached as well
            await auth.check("view", "show", "bad", "127.0.0.2")
        assert len(receiver.received) == 3
        assert (auth.calls, auth.cache_hits) == (3, 2)
        receiver.answer = lambda r: 500
        with pytest.raises(AuthHookUnavailable) as broken:
            await auth.check("view", "other", "good", "127.0.0.2")
        assert (broken.value.status, broken.value.retry_after) == (503, 7)
    finally:
        await receiver.stop()
    with pytest.raises(AuthHookUnavailable):  # the receiver is down: fail closed
        await auth.check("view", "third", "good", "127.0.0.2")
    await auth.close()


def test_webhook_settings_are_checked() -> None:
    settings = load_settings(webhooks=[{"url": "http://127.0.0.1:9/h", "secret": SECRET,
                                        "events": ["stream.live"]}])
    assert settings.webhooks[0].events == ["stream.live"]
    with pytest.raises(SettingsError, match="unknown event"):
        load_settings(webhooks=[{"url": "http://h/", "secret": SECRET, "events": ["stream.up"]}])
    with pytest.raises(SettingsError, match="whsec_"):
        load_settings(webhooks=[{"url": "http://h/", "secret": "not base64!"}])
    with pytest.raises(SettingsError, match="turn"):
        load_settings(turn_urls=["stun:h:3478"])
