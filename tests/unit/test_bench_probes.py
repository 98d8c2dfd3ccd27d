"""bench/probes.py: the benches' probe kit turns the gateway's hooks into records.

Without Janus or a network: a fake ASGI app that goes through the same
hooks as a WHIP POST (body, parse, three Janus requests, the event from the
pump) must give one record, and the stages whip_setup reports.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway import probes as hooks

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import probes as kit  # noqa: E402  (bench/probes.py)


@pytest.fixture(autouse=True)
def no_listeners() -> Any:
    saved = dict(hooks._listeners)
    hooks._listeners.clear()
    yield
    hooks._listeners.clear()
    hooks._listeners.update(saved)


@hooks.timed("janus.request")
async def janus_post(_client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(0.001)
    if body.get("transaction") == "t1":
        hooks.emit("janus.event", {"janus": "event", "transaction": "t1"})  # the pump, mid-POST
    return {"janus": "ack" if body["janus"] == "message" else "success"}


@hooks.timed("janus.message")
async def janus_message(_handle: Any, body: dict[str, Any]) -> None:
    await janus_post(None, "/1/2", {"janus": "message", "body": body, "transaction": "t1"})
    await asyncio.sleep(0.001)


@hooks.timed("sdp.parse")
def parse(_text: str) -> None:
    return None


async def whip_post(scope: Any, receive: Any, send: Any) -> None:
    parse("v=0")
    await janus_post(None, "/1/9", {"janus": "message", "body": {"request": "create"}})
    await janus_post(None, "/1", {"janus": "attach"})
    await janus_message(None, {"request": "joinandconfigure"})
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"location", b"/whip/bench-3/abc")]})
    await send({"type": "http.response.body", "body": b"v=0"})


def test_a_whip_post_becomes_one_record_and_its_stages(tmp_path: Path) -> None:
    out = io.StringIO()
    recorder = kit.Recorder(out)
    recorder.ticker = object()  # type: ignore[assignment]  # no lag ticker in this test
    recorder.install()

    async def send(_message: Any) -> None:
        return None

    app = hooks.AsgiHooks(whip_post)
    asyncio.run(app({"type": "http", "method": "POST", "path": "/whip/bench-3"}, None, send))
    asyncio.run(app({"type": "http", "method": "GET", "path": "/healthz"}, None, send))
    (line,) = out.getvalue().splitlines()  # only the POST is recorded
    record = json.loads(line)
    assert record["status"] == 201 and record["session"] == "abc" and record["stream"] == "bench-3"
    assert set(kit.steps_by_key(record)) == {
        "sdp.parse", "janus.request:create", "janus.request:attach",
        "janus.request:joinandconfigure", "janus.message:joinandconfigure"}
    stages = kit.whip_stages(record)
    assert {"asgi", "asgi_to_headers", "sdp_parse", "janus_create", "janus_attach",
            "janus_joinandconfigure", "ack_to_event", "event_to_resume", "cpu"} <= stages.keys()
    assert stages["ack_to_event"] < 0 < stages["event_to_resume"]  # the event came before the ack
    (tmp_path / "p.jsonl").write_text(line + "\n")
    assert "1 sequential POSTs" in kit.summarize(tmp_path / "p.jsonl")


def test_session_types_resolve_where_the_classes_live_now() -> None:
    names = kit.session_types()
    assert "gateway.core.viewers.ViewerSession" in names
    with pytest.raises(AttributeError):
        kit.session_types((("gateway.core.egress", "NoSuchSession"),))
