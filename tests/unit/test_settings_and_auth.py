"""Small pieces: settings precedence, stream keys, If-Match, Link headers."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from gateway.core.auth import StreamKeys, ViewerTokens, token_from
from gateway.config import IceServer, SettingsError, load_settings
from gateway.errors import (
    AuthenticationRequired,
    Forbidden,
    PreconditionFailed,
    PreconditionRequired,
)
from gateway.http.exchange import check_if_match, ice_server_links


def test_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('port = 81\nvideo_codecs = "VP8, h264"\n[stream_keys]\nlive = "k"\n'
                      '[[janus]]\nurl = "http://10.0.0.5:8088/janus"\n')
    settings = load_settings(config)
    assert (settings.port, settings.video_codecs, settings.stream_keys) == (81, "vp8,h264", {"live": "k"})
    assert not settings.managed_janus
    monkeypatch.setenv("WHIP_GATEWAY_PORT", "82")
    assert load_settings(config).port == 82
    assert load_settings(config, port=83).port == 83


@pytest.mark.parametrize("overrides,needle", [
    ({"port": 70000}, "port"),
    ({"public_url": "not a url"}, "public_url"),
    ({"stream_keys": {"live": ""}}, "stream_keys"),
    ({"audio_codecs": "mp3"}, "audio_codecs"),
    ({"janus": [{"url": "janus.local"}]}, "janus.0.url"),
    ({"ice_servers": [{"url": "http://x"}]}, "ice_servers.0.url"),
])
def test_bad_settings_name_the_setting(overrides: dict, needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_stream_keys() -> None:
    keys = StreamKeys({"live": "s3cret", "*": "default"})
    keys.check("live", "s3cret")
    keys.check("other", "default")
    with pytest.raises(AuthenticationRequired) as missing:
        keys.check("live", None)
    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(Forbidden):
        keys.check("live", "default")
    StreamKeys({}).check("anything", None)  # open gateway
    assert not StreamKeys({"a": "b"}).required_for("c")


@pytest.mark.parametrize("tokens", [ViewerTokens({"live": "v"}), ViewerTokens({"*": "v"}),
                                    ViewerTokens({"live": "v"}, jwt_secret="0123456789abcdef0")])
def test_viewer_tokens_say_viewer_token(tokens: ViewerTokens) -> None:
    """A viewer is never told about publish keys: 401 "needs a viewer token"
    without one (RFC 6750 section 3 challenge), 403 for a wrong one."""
    with pytest.raises(AuthenticationRequired) as missing:
        tokens.check("live", None)
    assert missing.value.status == 401 and "needs a viewer token" in missing.value.detail
    assert missing.value.type_slug == "viewer-token-required"
    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(Forbidden) as wrong:
        tokens.check("live", "not-it")
    assert wrong.value.status == 403 and "viewer token" in wrong.value.detail
    assert "publish" not in missing.value.detail + wrong.value.detail
    tokens.check("live", "v")


def test_publish_keys_say_publish_key() -> None:
    keys = StreamKeys({"live": "k"})
    with pytest.raises(AuthenticationRequired) as missing:
        keys.check("live", None)
    assert "needs a publish key" in missing.value.detail
    assert missing.value.type_slug == "publish-key-required"
    with pytest.raises(Forbidden) as wrong:
        keys.check("live", "nope")
    assert "publish" in wrong.value.detail


@pytest.mark.parametrize("header,query,expected", [
    ("Bearer abc", None, "abc"), ("bearer  abc ", None, "abc"), ("abc", None, "abc"),
    (None, "q", "q"), ("Bearer ", None, None), (None, None, None),
])
def test_token_from(header: str | None, query: str | None, expected: str | None) -> None:
    assert token_from(header, query) == expected


def _request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "PATCH", "headers": raw, "path": "/"})


def test_if_match_rules() -> None:
    """RFC 9725 section 4.3.1: 428 without If-Match, 412 when stale."""
    with pytest.raises(PreconditionRequired):
        check_if_match(_request({}), '"a"')
    with pytest.raises(PreconditionFailed):
        check_if_match(_request({"If-Match": '"b"'}), '"a"')
    with pytest.raises(PreconditionFailed):
        check_if_match(_request({"If-Match": 'W/"a"'}), '"a"')  # weak never matches strongly
    check_if_match(_request({"If-Match": '"a"'}), '"a"')
    check_if_match(_request({"If-Match": '"x", "a"'}), '"a"')
    check_if_match(_request({"If-Match": "*"}), '"a"')


@pytest.mark.parametrize("value", ['"*"', ' "*" ', '"x", "*"'])
def test_quoted_wildcard_if_match(value: str) -> None:
    """RFC 9725 section 4.3.3 shows the ICE-restart header as ``If-Match: "*"``
    (quoted), and clients copy it: it is the wildcard too.  The gateway never
    issues ``"*"`` as an ETag, so nothing it means is lost."""
    check_if_match(_request({"If-Match": value}), '"a"')


def test_ice_server_links() -> None:
    """RFC 9725 section 4.6."""
    links = ice_server_links([
        IceServer(url="stun:stun.example.net"),
        IceServer(url="turn:turn.example.net?transport=udp", username="user", credential="pa\"ss"),
    ])
    assert links == [
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; '
        'credential="pa\\"ss"; credential-type="password"',
    ]
