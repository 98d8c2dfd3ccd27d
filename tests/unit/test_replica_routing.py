"""Which requests a replica forwards to the stream's owner (``gateway.http.replicas``)."""

from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.core.cluster import replica_url
from gateway.http.replicas import routed


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("POST", "/whip/show", ("show", True)),  # a new publisher claims an unowned stream
    ("POST", "/whep/show", ("show", False)),  # a viewer goes where the publisher is
    ("PATCH", "/whip/show/abc", ("show", False)),
    ("DELETE", "/whep/show/abc", ("show", False)),
    ("HEAD", "/whep/show/abc", ("show", False)),
    ("GET", "/whep/show/abc/sse/def", ("show", False)),
    ("POST", "/whep/show/abc/layer", ("show", False)),
    ("OPTIONS", "/whip/show/abc", None),  # preflights hold no state
    ("GET", "/whep/show", None),
    ("HEAD", "/whip/show", None),
    ("POST", "/whip/bad name", None),  # the app answers 400 itself
    ("GET", "/api/streams", None),
    ("GET", "/", None),
])
def test_routed(method: str, path: str, expected: tuple[str, bool] | None) -> None:
    assert routed({"type": "http", "method": method, "path": path}) == expected


def test_replica_url_and_settings() -> None:
    assert replica_url("127.0.0.1", 8080, None) == "http://127.0.0.1:8080"
    assert replica_url("0.0.0.0", 8080, "http://gw-1:8080") == "http://gw-1:8080"
    assert load_settings().redis_url is None  # the embedded default: no replicas
    janus = [{"url": "http://127.0.0.1:8088/janus"}]
    settings = load_settings(redis_url="redis://127.0.0.1:6379/0", replica_url="http://gw-1:8080/",
                             janus=janus)
    assert settings.replica_url == "http://gw-1:8080"
    with pytest.raises(ValueError, match="redis_url"):
        load_settings(redis_url="http://nope", janus=janus)
    with pytest.raises(ValueError, match="needs Janus nodes"):  # a managed Janus dies with its replica
        load_settings(redis_url="redis://127.0.0.1:6379/0")


async def test_forwarded_requests_skip_the_rate_limits_once_counted() -> None:
    """A request another replica forwarded was counted there; the owner does not count it again."""
    from types import SimpleNamespace
    from typing import Any

    from gateway.http.replicas import REPLICA_HEADER, UnlessForwarded

    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append("app")

    class Counting:
        def __init__(self, inner: Any, label: str) -> None:
            self.inner, self.label = inner, label

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            seen.append(self.label)
            await self.inner(scope, receive, send)

    cluster: Any = SimpleNamespace(secret="s3cret")
    middleware = UnlessForwarded(app, cluster=cluster,
                                 middleware=lambda inner: Counting(inner, "limits"))

    def scope(value: str | None) -> dict[str, Any]:
        headers = [(REPLICA_HEADER.encode(), value.encode())] if value else []
        return {"type": "http", "method": "PATCH", "path": "/whip/s/x", "headers": headers}

    await middleware(scope(None), None, None)
    await middleware(scope("guess"), None, None)  # a client cannot skip them
    assert seen == ["limits", "app", "limits", "app"]
    seen.clear()
    await middleware(scope("s3cret"), None, None)
    assert seen == ["app"]
