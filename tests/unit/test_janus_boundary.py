"""The janus/ package is a port: its failures leave it as gateway errors, by one
rule, and nothing outside it speaks Janus (issue 12, points 2 and 3).

The status rule: Janus refusing SDP the client wrote is the client's 400 or
422, a Janus that does not answer is 503 (with Retry-After), and anything
else is the media server's 502.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.errors import (
    GatewayError,
    MalformedSdp,
    MediaServerRejected,
    MediaServerUnavailable,
    StreamBusy,
    StreamNotLive,
    UnsupportedMedia,
)
from gateway.janus.client import JanusError, JanusPluginError, JanusSessionLost, JanusUnreachable
from gateway.janus.failures import janus_call
from gateway.sdp.model import SdpError

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


def raised(exc: Exception, *, client_sdp: bool) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        with janus_call("node0", client_sdp=client_sdp):
            raise exc
    return caught.value


@pytest.mark.parametrize("exc,client_sdp,expected", [
    (JanusPluginError("janus.plugin.videoroom", 0, "no codec"), True, UnsupportedMedia),
    (JanusError(JanusError.INVALID_SDP, "Error processing SDP"), True, MalformedSdp),
    (JanusError(490, "something else"), True, MediaServerRejected),
    (JanusPluginError("janus.plugin.streaming", 456, "exists"), False, MediaServerRejected),
    (JanusError(JanusError.INVALID_SDP, "Error processing SDP"), False, MediaServerRejected),
    (JanusUnreachable("refused"), True, MediaServerUnavailable),
    (JanusSessionLost("gone"), False, MediaServerUnavailable),
    (SdpError("Janus sent garbage"), False, MediaServerRejected),
])
def test_one_rule_sets_the_status(exc: Exception, client_sdp: bool, expected: type) -> None:
    error = raised(exc, client_sdp=client_sdp)
    assert type(error) is expected
    assert error.__cause__ is exc  # the Janus detail stays in the log's traceback


def test_gateway_errors_pass_through_unchanged() -> None:
    original = StreamNotLive("left while we set up")
    assert raised(original, client_sdp=False) is original


def test_retry_after_is_decided_per_error_class() -> None:
    assert MediaServerUnavailable("x").retry_after == 2
    assert StreamBusy("x").retry_after == 5
    assert StreamNotLive("x").retry_after == 5
    assert MalformedSdp("x").retry_after is None
    assert MediaServerUnavailable("x", retry_after=7).retry_after == 7


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_ingest_and_egress_do_not_import_each_other() -> None:
    core = GATEWAY / "core"
    assert not {n for n in _imports(core / "egress.py") if n.startswith("gateway.core.ingest")}
    assert not {n for n in _imports(core / "ingest.py") if n.startswith("gateway.core.egress")}


def test_janus_errors_and_vocabulary_stay_inside_janus() -> None:
    janus_words = ("JanusError", "JanusUnreachable", "JanusPluginError", "BASE_PT",
                   "MOUNTPOINT_MID", "NATIVE_OFFER_VERSION", "admin_key\"", "\"substream\"",
                   "\"jsep\"", "sdpMLineIndex")
    offenders = []
    for path in GATEWAY.rglob("*.py"):
        relative = path.relative_to(GATEWAY)
        if relative.parts[0] == "janus":
            continue
        # backend.py is where the app is wired: it builds the Janus clients.
        domain = relative.parts[0] in ("core", "http", "sdp")
        if domain and any(n.startswith("gateway.janus.client") for n in _imports(path)):
            offenders.append(f"{relative} imports gateway.janus.client")
        text = path.read_text()
        offenders += [f"{relative}: {w}" for w in janus_words if w in text]
    assert offenders == []


def test_http_resources_reach_janus_only_through_the_domain() -> None:
    """HTTP resource -> domain -> backend: no module under http/ imports janus/
    (the node admin routes once asked Janus's admin API themselves)."""
    offenders = [f"http/{path.name}: {name}" for path in (GATEWAY / "http").glob("*.py")
                 for name in _imports(path) if name.startswith("gateway.janus")]
    assert offenders == []
