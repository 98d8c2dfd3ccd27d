"""The operator API's pieces without Janus: stream definitions and their gates,
and how Janus's ``handle_info`` becomes per-medium statistics."""

from __future__ import annotations

import jwt
import pytest

from gateway.core.auth import StreamKeys, ViewerTokens, mint_viewer_token
from gateway.core.catalog import StreamCatalog
from gateway.errors import (
    MalformedBody,
    PublishKeyRejected,
    PublishKeyRequired,
    StreamExists,
    StreamNotDefined,
    ViewerTokenRejected,
    ViewerTokenRequired,
)
from gateway.janus.stats import read_handle_info


def catalog() -> StreamCatalog:
    return StreamCatalog(StreamKeys({"fromsettings": "settings-key"}), ViewerTokens({}))


def test_a_defined_stream_needs_its_own_key_and_settings_keys_still_work() -> None:
    c = catalog()
    made = c.create("live", publish_key="k" * 16)
    with pytest.raises(PublishKeyRequired):
        c.publish_gate.check("live", None)
    with pytest.raises(PublishKeyRejected):
        c.publish_gate.check("live", "settings-key")
    c.publish_gate.check("live", made.publish_key)
    c.publish_gate.check("fromsettings", "settings-key")
    c.publish_gate.check("other", None)  # neither: open, as before
    old = made.publish_key
    c.rotate("live")
    with pytest.raises(PublishKeyRejected):
        c.publish_gate.check("live", old)
    c.remove("live")
    c.publish_gate.check("live", None)


def test_viewer_policies() -> None:
    c = catalog()
    c.create("open")
    token = c.create("tok", viewer_policy="token").viewer_token
    secret = c.create("signed", viewer_policy="jwt").jwt_secret
    assert token and secret and len(token) >= 32
    c.viewer_gate.check("open", None)
    with pytest.raises(ViewerTokenRequired):
        c.viewer_gate.check("tok", None)
    c.viewer_gate.check("tok", token)
    c.viewer_gate.check("signed", mint_viewer_token(secret, "signed", 60))
    with pytest.raises(ViewerTokenRejected):
        c.viewer_gate.check("signed", mint_viewer_token(secret, "tok", 60))
    with pytest.raises(ViewerTokenRejected):
        c.viewer_gate.check("signed", jwt.encode({"stream": "signed", "exp": 2**40}, "x" * 32))
    assert c.viewer_gate.required_for("tok") and not c.viewer_gate.required_for("open")


@pytest.mark.parametrize("name, kwargs, error", [
    ("a/b", {}, MalformedBody),
    ("ok", {"viewer_policy": "maybe"}, MalformedBody),
    ("ok", {"publish_key": "short"}, MalformedBody),
])
def test_bad_definitions(name: str, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        catalog().create(name, **kwargs)


def test_duplicates_and_unknown_streams() -> None:
    c = catalog()
    c.create("s")
    with pytest.raises(StreamExists):
        c.create("s")
    with pytest.raises(StreamNotDefined):
        c.rotate("fromsettings")


def test_handle_info_statistics() -> None:
    info = {"webrtc": {"media": {"v": {
        "type": "video", "codecs": {"pt": 97, "codec": "vp8"},
        "rtcp": {"main": {"rtt": 12, "lost": 2, "lost-by-remote": 1},
                 "video-simulcast-1": {"rtt": 30, "lost": 0}},
        "stats": {"in": {"packets": 0, "bytes_lastsec": 0, "nacks": 3},
                  "out": {"packets": 70, "bytes_lastsec": 1000, "nacks": 4}}}}}}
    [video] = read_handle_info(info)
    assert (video.kind, video.codec, video.packets_out, video.bitrate_out) == ("video", "vp8", 70, 8000)
    assert (video.packets_lost, video.rtt_ms, video.nacks_in, video.nacks_out) == (3, 30, 3, 4)
    assert video.plis is None  # Janus 1.1.2 counts none
