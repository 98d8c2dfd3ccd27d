"""The operator API's routes, gathered for ``app.py``: one line per resource
module.  Who may call them is ``admin_auth.require_admin``."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateway.http import admin_nodes, recordings

routes: list[BaseRoute] = [
    *admin_nodes.routes,
    *recordings.routes,
]
