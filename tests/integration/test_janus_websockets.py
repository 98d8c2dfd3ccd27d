"""The managed Janus can serve its WebSocket transport too (``websockets=True``).

janode-based peers (Meetecho's WHIP/WHEP servers, run beside the gateway in
bench/) and a WebSocket Janus client speak to Janus only that way.  Without
the flag the transport stays disabled, as before.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from gateway.janus.process import JanusProcessConfig, ManagedJanus, write_configs
from tests.compose_files import parse_jcfg
from tests.sandbox import INTERFACE


def test_transport_disabled_unless_asked(tmp_path: Path) -> None:
    write_configs(tmp_path, JanusProcessConfig().resolved())
    disabled = parse_jcfg((tmp_path / "janus.jcfg").read_text())["transports"]["disable"]
    assert "libjanus_websockets.so" in disabled
    assert not (tmp_path / "janus.transport.websockets.jcfg").exists()
    with pytest.raises(ValueError):
        _ = JanusProcessConfig().resolved().ws_url


async def test_janus_answers_over_websocket() -> None:
    janus = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, websockets=True))
    await asyncio.to_thread(janus.start)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(janus.cfg.ws_url, protocols=("janus-protocol",)) as ws:
                await ws.send_str(json.dumps({"janus": "create", "transaction": "t"}))
                reply = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
                assert reply["janus"] == "success" and reply["data"]["id"] > 0
                await ws.send_str(json.dumps({"janus": "destroy", "transaction": "d",
                                              "session_id": reply["data"]["id"]}))
                assert json.loads(await asyncio.wait_for(ws.receive_str(), 10))["janus"] == "success"
    finally:
        await asyncio.to_thread(janus.stop)
