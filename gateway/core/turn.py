"""TURN REST credentials (the coturn ``use-auth-secret`` scheme).

A TURN server and the gateway share one secret; the gateway hands each
client a username ``<expiry>:<name>`` and the password
base64(HMAC-SHA1(secret, username)).  The TURN server recomputes the
password and refuses it once ``expiry`` (Unix seconds) has passed, so a
leaked credential is worth little and nothing is stored anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from gateway.config import IceServer


def turn_password(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def turn_credentials(secret: str, ttl: int, urls: list[str], name: str | None = None,
                     now: float | None = None) -> list[IceServer]:
    """One ``IceServer`` per URL, all with the same fresh credential.

    ``name`` (the stream) makes the TURN server's logs say who relayed;
    without it a random one keeps usernames unlinkable.
    """
    expiry = int(now if now is not None else time.time()) + ttl
    username = f"{expiry}:{name or secrets.token_hex(8)}"
    password = turn_password(secret, username)
    return [IceServer(url=url, username=username, credential=password) for url in urls]
