"""``GET /api/streams`` and the ``/`` page are public: they must never give
away a publisher's session id, which is the secret part of its WHIP
resource URL (RFC 9725 section 5: resource URLs are capabilities), nor the
names of the Janus nodes.  ``public_listing`` chooses how much they show.

The app runs without its lifespan (no Janus): a publisher is put into the
registry by hand, as ``Ingest.publish`` would after Janus answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest

from gateway.app import create_app
from gateway.backend import Backend
from gateway.config import SettingsError, load_settings
from gateway.core.placement import NodePool
from gateway.core.streams import PublisherSession, PublisherState
from gateway.janus.client import JanusClient
from gateway.janus.node import JanusNode
from gateway.janus.videoroom import PublishedStream
from gateway.sdp import model as sdp
from tests.conftest import read_fixture

NODE = "ingest-node-7"


async def _client(listing: str | None) -> tuple[httpx.AsyncClient, PublisherSession, JanusNode]:
    overrides = {"public_listing": listing} if listing else {}
    settings = load_settings(janus=[{"url": "http://127.0.0.1:9/janus", "name": NODE}], **overrides)
    node = JanusNode(NODE, JanusClient("http://127.0.0.1:9/janus"), role="both", reconnect_interval=60)
    app = create_app(settings, Backend(NodePool([node])))
    publisher = PublisherSession(stream="show", offer=sdp.parse(read_fixture("sdp", "obs_h264.sdp")),
                                 node_name=NODE)
    publisher.backend = SimpleNamespace(  # type: ignore[assignment]
        node=node, answer="", streams=[PublishedStream("0", "audio", "opus"),
                                       PublishedStream("1", "video", "h264")])
    publisher.set_state(PublisherState.LIVE)
    app.state.ingest.registry.put(publisher)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return client, publisher, node


@pytest.fixture(params=[None, "names", "details", "off"])
async def listing(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, httpx.AsyncClient, str]]:
    client, publisher, node = await _client(request.param)
    yield request.param or "names", client, publisher.id
    await client.aclose()
    await node.close()


async def test_listing_never_shows_resource_ids_or_nodes(
        listing: tuple[str, httpx.AsyncClient, str]) -> None:
    mode, client, session_id = listing
    r = await client.get("/api/streams")
    page = await client.get("/")
    if mode == "off":
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert page.status_code == 404
        return
    assert r.status_code == 200 and page.status_code == 200
    assert session_id not in r.text and NODE not in r.text
    streams = r.json()["streams"]
    if mode == "names":  # the default: names and live state only
        assert streams == {"show": {"live": True}}
    else:
        assert streams == {"show": {"live": True, "viewers": 0, "publisher": {
            "state": "live", "since_s": streams["show"]["publisher"]["since_s"],
            "codecs": {"audio": "opus", "video": "h264"}}}}


def test_bad_listing_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="public_listing"):
        load_settings(public_listing="everything")
