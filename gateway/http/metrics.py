"""``GET /metrics``: the app's Prometheus registry in the text exposition format.

Open to anyone who reaches the port, as Prometheus expects; it shows stream
names and node names, so keep it on the internal network (see the README).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.metrics import GatewayMetrics


async def metrics(request: Request) -> Response:
    registry: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(registry.registry), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
