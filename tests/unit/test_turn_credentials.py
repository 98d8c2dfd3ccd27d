"""TURN REST credentials in the Link headers: fresh per POST, in coturn's scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac

from gateway.config import load_settings
from gateway.core.turn import turn_credentials
from gateway.http.exchange import ice_server_links


def test_credential_is_coturns_use_auth_secret_scheme() -> None:
    servers = turn_credentials("s3cret-s3cret-s3cret", 600,
                               ["turn:t.example:3478?transport=udp",
                                "turn:t.example:3478?transport=tcp"], "show", now=1_000_000)
    assert [s.username for s in servers] == ["1000600:show"] * 2
    expected = base64.b64encode(hmac.new(b"s3cret-s3cret-s3cret", b"1000600:show",
                                         hashlib.sha1).digest()).decode()
    assert {s.credential for s in servers} == {expected}
    links = ice_server_links(servers)
    assert links[1] == ('<turn:t.example:3478?transport=tcp>; rel="ice-server"; '
                        f'username="1000600:show"; credential="{expected}"; '
                        'credential-type="password"')


def test_without_a_name_usernames_are_random() -> None:
    a, b = (turn_credentials("s3cret-s3cret-s3cret", 60, ["turn:h:1"], now=0)[0].username
            for _ in range(2))
    assert a != b and a.startswith("60:")


def test_settings() -> None:
    settings = load_settings(turn_secret="0123456789abcdef", turn_urls=["turn:h:3478"])
    assert settings.turn_ttl == 86400
