"""Which transport the gateway talks to each Janus node over (``janus_transport``)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.backend import build_backend
from gateway.config import JanusNodeSettings, load_settings
from gateway.janus.transport import HttpTransport
from gateway.janus.websocket import WebSocketTransport, _ids

NODE = {"url": "http://127.0.0.1:8088/janus", "ws_url": "ws://127.0.0.1:8188"}


def transports(**settings: object) -> list[type]:
    backend = build_backend(load_settings(**settings))
    return [type(node.client.transport) for node in backend.pool.nodes]


def test_websocket_where_the_node_has_one() -> None:
    bare = {"url": "http://127.0.0.1:8089/janus", "name": "bare"}
    assert transports(janus=[NODE, bare]) == [WebSocketTransport, HttpTransport]


def test_http_when_asked() -> None:
    assert transports(janus=[NODE], janus_transport="http") == [HttpTransport]


def test_replicas_stay_on_http() -> None:
    """A WebSocket session dies with its socket: another replica could not take it over."""
    assert transports(janus=[NODE], janus_transport="websocket",
                      redis_url="redis://127.0.0.1:6379/0") == [HttpTransport]


def test_managed_janus_serves_the_websocket_unless_http() -> None:
    backend = build_backend(load_settings())
    assert all(m.cfg.websockets for m in backend.managed)
    for node, managed in zip(backend.pool.nodes, backend.managed):
        assert isinstance(node.client.transport, WebSocketTransport)
        assert node.client.ws_url == managed.cfg.ws_url
    assert not any(m.cfg.websockets
                   for m in build_backend(load_settings(janus_transport="http")).managed)


def test_ws_url_must_be_a_websocket_url() -> None:
    with pytest.raises(ValidationError):
        JanusNodeSettings(url=NODE["url"], ws_url="http://127.0.0.1:8188")


def test_rest_paths_become_ids() -> None:
    assert _ids("") == {}
    assert _ids("/12") == {"session_id": 12}
    assert _ids("/12/34") == {"session_id": 12, "handle_id": 34}
