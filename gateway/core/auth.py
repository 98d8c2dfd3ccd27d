"""Who may publish: stream keys, checked in constant time.

RFC 9725 section 4.7.1: the key travels as ``Authorization: Bearer <key>``
(OBS puts its "Bearer Token" field there).  A missing key is 401 with a
``WWW-Authenticate: Bearer`` challenge; a wrong one is 403.
"""

from __future__ import annotations

import hmac
import time

import jwt

from gateway.errors import (
    AuthenticationRequired,
    Forbidden,
    PublishKeyRejected,
    PublishKeyRequired,
    ViewerTokenRejected,
    ViewerTokenRequired,
)

ANY_STREAM = "*"


class StreamKeys:
    # What a client is told: a publisher hears of publish keys, a viewer
    # (``ViewerTokens``) of viewer tokens.
    missing: type[AuthenticationRequired] = PublishKeyRequired
    wrong: type[Forbidden] = PublishKeyRejected
    credential = "publish key"

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = {name: key.encode() for name, key in keys.items()}

    def required_for(self, stream: str) -> bool:
        return stream in self._keys or ANY_STREAM in self._keys

    def check(self, stream: str, presented: str | None) -> None:
        """Raise unless ``presented`` is the key for ``stream``."""
        expected = self._keys.get(stream, self._keys.get(ANY_STREAM))
        if expected is None:
            return
        if not presented:
            raise self.missing(f"stream {stream!r} needs a {self.credential}")
        if not hmac.compare_digest(presented.encode(), expected):
            raise self.wrong(f"that {self.credential} is not the one for stream {stream!r}")


class ViewerTokens(StreamKeys):
    """Who may watch: a static token per stream, or a signed JWT.

    With ``jwt_secret`` set, every stream needs a token, and an HS256 JWT
    whose ``stream`` claim names the stream (or ``"*"``) and whose ``exp``
    has not passed is accepted; ``whip-gateway viewer-token`` mints one.
    Static per-stream tokens keep working beside it.
    """

    missing = ViewerTokenRequired
    wrong = ViewerTokenRejected
    credential = "viewer token"

    def __init__(self, keys: dict[str, str], jwt_secret: str | None = None) -> None:
        super().__init__(keys)
        self._secret = jwt_secret

    def required_for(self, stream: str) -> bool:
        return self._secret is not None or super().required_for(stream)

    def check(self, stream: str, presented: str | None) -> None:
        if self._secret is None:
            super().check(stream, presented)
            return
        if not presented:
            raise ViewerTokenRequired(f"stream {stream!r} needs a viewer token")
        if presented.count(".") == 2:
            try:
                claims = jwt.decode(presented, self._secret, algorithms=["HS256"],
                                    options={"require": ["exp", "stream"]})
            except jwt.ExpiredSignatureError:
                raise ViewerTokenRequired("the viewer token has expired",
                                          error="invalid_token") from None
            except jwt.InvalidTokenError:
                raise ViewerTokenRejected("the viewer token is not valid") from None
            if claims["stream"] not in (stream, ANY_STREAM):
                raise ViewerTokenRejected(f"the viewer token is not for stream {stream!r}")
            return
        if stream in self._keys or ANY_STREAM in self._keys:
            super().check(stream, presented)
            return
        raise ViewerTokenRejected("the viewer token is not valid")


def mint_viewer_token(secret: str, stream: str, ttl: float) -> str:
    """An HS256 JWT for ``ViewerTokens``: claims ``stream`` and ``exp``."""
    return jwt.encode({"stream": stream, "exp": int(time.time() + ttl)}, secret, algorithm="HS256")


def token_from(authorization: str | None, query_token: str | None) -> str | None:
    """The presented token: ``Bearer <t>``, a bare token (some players send
    that), or a ``?token=`` query parameter (RFC 9725 section 4.7)."""
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return rest.strip() or None
        return authorization.strip()
    return query_token or None
