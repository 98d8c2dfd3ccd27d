"""Who may publish: stream keys, checked in constant time.

RFC 9725 section 4.7.1: the key travels as ``Authorization: Bearer <key>``
(OBS puts its "Bearer Token" field there).  A missing key is 401 with a
``WWW-Authenticate: Bearer`` challenge; a wrong one is 403.
"""

from __future__ import annotations

import hmac

from .errors import AuthenticationRequired, Forbidden

ANY_STREAM = "*"


class StreamKeys:
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
            raise AuthenticationRequired(f"stream {stream!r} needs a publish key")
        if not hmac.compare_digest(presented.encode(), expected):
            raise Forbidden(f"that key does not publish stream {stream!r}")


def token_from(authorization: str | None, query_token: str | None) -> str | None:
    """The presented token: ``Bearer <t>``, a bare token (some players send
    that), or a ``?token=`` query parameter (RFC 9725 section 4.7)."""
    if authorization:
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return rest.strip() or None
        return authorization.strip()
    return query_token or None
