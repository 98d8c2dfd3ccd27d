"""The operator API under ``/api``: who may call it, and its routes.

Every operator route (streams, sessions, nodes, recordings) runs
``require_admin`` first.  Without an ``admin_token`` the routes do not exist
(404), so a gateway started with defaults exposes nothing to operate; with
one, a missing token is 401 with a Bearer challenge (RFC 6750 section 3) and
a wrong one 403.  The public ``/api/streams`` listing is not an operator
route: ``public_listing`` governs it.

Each resource module (``admin_streams``, ``admin_nodes``, ``recordings`` ...)
exports ``routes``; ``routes`` below gathers them for ``app.py``.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.routing import BaseRoute

from gateway.config import Settings
from gateway.core.auth import token_from
from gateway.errors import AdminApiOff, AdminTokenRejected, AdminTokenRequired


def require_admin(request: Request) -> None:
    """Raise unless the request carries the operator's token."""
    settings: Settings = request.app.state.settings
    if not settings.admin_token:
        raise AdminApiOff("the admin API is off: set admin_token to turn it on")
    token = token_from(request.headers.get("authorization"), None)
    if token is None:
        raise AdminTokenRequired("this call needs the admin token (Authorization: Bearer ...)")
    # Constant time: the comparison must not tell a guesser how much was right.
    if not hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        raise AdminTokenRejected("that is not the admin token")


# The operator resources' routes, one line per module.
# (Imported here, below require_admin, which each of them imports.)
from gateway.http import admin_streams  # noqa: E402
from gateway.http import admin_sessions  # noqa: E402

routes: list[BaseRoute] = [
    *admin_streams.routes,
    *admin_sessions.routes,
]
