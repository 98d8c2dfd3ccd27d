"""The operator API's routes, gathered for ``app.py``: one line per resource
module.  Who may call them is ``admin_auth.require_admin``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.http import admin_nodes, admin_sessions, admin_streams, recordings

routes: list[BaseRoute] = [
    *admin_streams.routes,
    *admin_sessions.routes,
    *admin_nodes.routes,
    *recordings.routes,
]
