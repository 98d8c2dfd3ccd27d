"""Prometheus metrics: what the gateway holds now, and how its requests went.

Why this shape:
- State (live streams, publishers by state, viewers per stream and per node,
  node health, event-stream subscribers) is *read at scrape time* from the
  domain by ``StateCollector``, so no code path has to remember to move a
  gauge, and a gauge can never drift from the truth.
- What only exists as it happens (HTTP responses, set-up latency, Janus
  round trips, 429s) is counted in two places: ``MetricsMiddleware`` (every
  response, labelled by *route template*, never the raw path: ``/whip/{stream}``
  keeps the label set bounded however many streams and sessions there are) and
  a listener on the ``janus.request`` probe (``gateway.probes``).
- One ``CollectorRegistry`` per app, so several apps in one process (the
  tests) do not collide in prometheus-client's global registry.

Every name starts with ``whip_gateway_``; ``deploy/grafana/whip-gateway.json``
queries them and ``tests/unit/test_metrics.py`` checks it queries only these.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import probes

if TYPE_CHECKING:
    from gateway.core.egress import Egress
    from gateway.core.ingest import Ingest
    from gateway.core.placement import NodePool
    from gateway.core.streams import StreamRegistry
    from gateway.core.webhooks import Webhooks
    from gateway.core.recordings import Recordings

log = logging.getLogger(__name__)

# Set-up takes tens of milliseconds on a quiet node and up to the 6.5 s deadline.
SETUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JANUS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS", "PUT"})
UNMATCHED = "unmatched"  # every path no route takes shares one label value


class StateCollector(Collector):
    """Gauges computed from the domain's state when Prometheus scrapes."""

    def __init__(self, pool: NodePool, streams: StreamRegistry, egress: Egress,
                 recordings: Recordings | None = None, webhooks: Webhooks | None = None,
                 ingest: Ingest | None = None) -> None:
        self.pool, self.streams, self.egress = pool, streams, egress
        self.recordings, self.webhooks, self.ingest = recordings, webhooks, ingest

    def collect(self) -> Iterator[Metric]:
        from gateway.core.streams import PublisherState

        publishers = [p for p in self.streams.sessions() if p.state is not PublisherState.ENDED]
        live = GaugeMetricFamily("whip_gateway_streams_live", "Streams with a live publisher")
        live.add_metric([], sum(1 for p in self.streams.streams().values()
                                if p.state is PublisherState.LIVE))
        yield live

        by_state = GaugeMetricFamily("whip_gateway_publishers", "Publisher sessions by state",
                                     labels=["state"])
        for state in (PublisherState.CONNECTING, PublisherState.LIVE, PublisherState.STALLED):
            by_state.add_metric([state.value], sum(1 for p in publishers if p.state is state))
        yield by_state

        viewers = [v for v in self.egress.viewers.all() if not v.ended]
        per_stream = GaugeMetricFamily("whip_gateway_viewers", "Viewer sessions per stream",
                                       labels=["stream"])
        for stream, count in _count(v.stream for v in viewers).items():
            per_stream.add_metric([stream], count)
        yield per_stream

        per_node = GaugeMetricFamily("whip_gateway_node_viewers", "Viewer sessions per Janus node",
                                     labels=["node"])
        counts = _count(v.egress.node.name for v in viewers)
        for node in self.pool.nodes:
            per_node.add_metric([node.name], counts.get(node.name, 0))
        yield per_node

        up = GaugeMetricFamily("whip_gateway_janus_node_up",
                               "1 while the gateway's Janus session on the node is alive",
                               labels=["node", "role"])
        load = GaugeMetricFamily("whip_gateway_janus_node_handles",
                                 "Publisher and viewer handles the gateway placed on the node",
                                 labels=["node"])
        for node in self.pool.nodes:
            up.add_metric([node.name, node.role], 1 if node.healthy else 0)
            load.add_metric([node.name], node.load)
        yield up
        yield load
        if self.ingest is not None:
            yield from self._publisher_pools(self.ingest)

        subscribers = GaugeMetricFamily("whip_gateway_event_stream_subscribers",
                                        "Open WHEP server-sent event streams")
        subscribers.add_metric([], self.egress.events.hub.count())
        yield subscribers

        yield from self._capacity()
        if self.recordings is not None:
            recordings = GaugeMetricFamily("whip_gateway_recordings", "Recordings by state",
                                           labels=["state"])
            states = _count(r["state"] for r in self.recordings.list())
            for state in ("recording", "processing", "ready", "failed"):
                recordings.add_metric([state], states.get(state, 0))
            yield recordings
        sent = CounterMetricFamily("whip_gateway_webhook_events",
                                   "Webhook events per receiver by outcome",
                                   labels=["url", "outcome"])
        for r in self.webhooks.receivers if self.webhooks is not None else ():
            for outcome in ("delivered", "failed", "dropped", "retried"):
                sent.add_metric([r.url, outcome], getattr(r, outcome))
        yield sent

    def _publisher_pools(self, ingest: Ingest) -> Iterator[Metric]:
        """What the publisher pools hold in Janus (rooms being made or destroyed
        included): with the control handles, all Janus holds of an idle gateway."""
        handles = GaugeMetricFamily("whip_gateway_publisher_pool_handles",
                                    "VideoRoom handles attached ahead of publishers",
                                    labels=["node"])
        rooms = GaugeMetricFamily("whip_gateway_publisher_pool_rooms",
                                  "VideoRoom rooms created ahead of publishers", labels=["node"])
        for name, publisher_pool in ingest.pools.items():
            h, r = publisher_pool.held()
            handles.add_metric([name], len(h))
            rooms.add_metric([name], len(r))
        yield handles
        yield rooms

    def _capacity(self) -> Iterator[Metric]:
        """How full each node is, and the sessions refused for want of room."""
        fill = GaugeMetricFamily("whip_gateway_node_fill",
                                 "Share of the node's nearest limit in use (viewers or bitrate)",
                                 labels=["node"])
        out = GaugeMetricFamily("whip_gateway_node_out_bitrate_bits",
                                "Outbound bitrate the node's viewers are counted at",
                                labels=["node"])
        draining = GaugeMetricFamily("whip_gateway_node_draining",
                                     "1 while the node takes no new sessions", labels=["node"])
        for node in self.pool.nodes:
            load = self.pool.load(node)
            fill.add_metric([node.name], load.fill)
            out.add_metric([node.name], load.out_bitrate)
            draining.add_metric([node.name], 1 if node.name in self.pool.draining else 0)
        yield fill
        yield out
        yield draining
        refused = CounterMetricFamily("whip_gateway_capacity_refused",
                                      "Sessions refused with 503 because every node was full "
                                      "or draining", labels=["reason"])
        for reason in ("egress full", "egress draining", "ingest draining"):
            refused.add_metric([reason], self.pool.refused.get(reason, 0))
        yield refused


def _count(keys: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in keys:
        out[key] = out.get(key, 0) + 1
    return out


class GatewayMetrics:
    """The app's registry and the event-driven metrics in it."""

    def __init__(self, pool: NodePool, streams: StreamRegistry, egress: Egress,
                 recordings: Recordings | None = None, webhooks: Webhooks | None = None,
                 ingest: Ingest | None = None) -> None:
        self.pool = pool
        self.registry = CollectorRegistry()
        self.registry.register(StateCollector(pool, streams, egress, recordings, webhooks,
                                              ingest))
        self.http_responses = Counter(
            "whip_gateway_http_responses", "HTTP responses by route template, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.http_duration = Histogram(
            "whip_gateway_http_request_duration_seconds",
            "Time from request to the end of the response head, by route template and method",
            ["route", "method"], buckets=SETUP_BUCKETS, registry=self.registry)
        self.whip_setup = Histogram(
            "whip_gateway_whip_setup_seconds", "Successful WHIP POSTs (201): offer to answer",
            buckets=SETUP_BUCKETS, registry=self.registry)
        self.whep_setup = Histogram(
            "whip_gateway_whep_setup_seconds", "Successful WHEP POSTs (201, or a 406 "
            "counter-offer): offer to answer", buckets=SETUP_BUCKETS, registry=self.registry)
        self.rate_limited = Counter(
            "whip_gateway_rate_limited", "Requests refused with 429, by route template",
            ["route"], registry=self.registry)
        self.janus_requests = Histogram(
            "whip_gateway_janus_request_seconds", "Janus API round trips by node and request",
            ["node", "verb"], buckets=JANUS_BUCKETS, registry=self.registry)
        self.janus_failures = Counter(
            "whip_gateway_janus_request_failures", "Janus API requests that failed or timed out",
            ["node", "verb"], registry=self.registry)
        self._unlisten: Callable[[], None] | None = None

    # -- Janus round trips ---------------------------------------------------

    def start(self) -> None:
        """Listen to this app's Janus requests (the probe is process-wide)."""
        if self._unlisten is None:
            self._unlisten = probes.listen("janus.request", self._janus_request)

    def stop(self) -> None:
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def _janus_request(self, span: probes.Span) -> None:
        try:
            self._observe_janus(span)
        except Exception:  # a metric must never fail a Janus call (probes do not catch)
            log.exception("janus.request metric failed")

    def _observe_janus(self, span: probes.Span) -> None:
        client = span.args[0] if span.args else None
        node = next((n.name for n in self.pool.nodes if n.client is client), None)
        if node is None:
            return  # another app's node, in the same process
        body = span.args[2] if len(span.args) > 2 else span.kwargs.get("body") or {}
        verb = janus_verb(body)
        self.janus_requests.labels(node, verb).observe(span.end - span.start)
        if span.error is not None:
            self.janus_failures.labels(node, verb).inc()

    # -- HTTP ----------------------------------------------------------------

    def response(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_responses.labels(route, method, str(status)).inc()
        self.http_duration.labels(route, method).observe(seconds)
        if status == 429:
            self.rate_limited.labels(route).inc()
        if method == "POST":
            if route == "/whip/{stream}" and status == 201:
                self.whip_setup.observe(seconds)
            elif route == "/whep/{stream}" and status in (201, 406):
                self.whep_setup.observe(seconds)


def janus_verb(body: Any) -> str:
    """``message.<plugin request>`` for plugin messages, else the Janus verb:
    a set the gateway's own code fixes, so the label stays bounded."""
    if not isinstance(body, dict):
        return "other"
    verb = str(body.get("janus", "other"))
    inner = body.get("body")
    if verb == "message" and isinstance(inner, dict) and isinstance(inner.get("request"), str):
        return f"message.{inner['request']}"
    return verb


def route_template(routes: list[BaseRoute], scope: Scope) -> str:
    """The path template of the route that takes ``scope`` (``/whip/{stream}``)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class MetricsMiddleware:
    """Counts every response by route template, method and status (429s included)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        route = route_template(scope["app"].routes, scope)  # Starlette puts itself there
        method = scope["method"] if scope["method"] in METHODS else "other"
        started = False

        async def send_counted(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.response(route, method, int(message["status"]),
                                      time.monotonic() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        except BaseException:
            if not started:  # the outermost handler will answer 500
                self.metrics.response(route, method, 500, time.monotonic() - start)
            raise
