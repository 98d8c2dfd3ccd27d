"""Builds the Starlette application from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.http import whep
from gateway.http import whip
from gateway.http import admin, pages
from gateway.http import admin_streams
from gateway.http import openapi
from gateway.http.requestid import RequestIdMiddleware
from gateway.http.server import CappedHttpToolsProtocol
from gateway.http import metrics as metrics_route
from gateway.metrics import GatewayMetrics, MetricsMiddleware
from gateway.core.catalog import StreamCatalog
from gateway.core.operations import Operations
from gateway import probes
from gateway.core.auth import StreamKeys, ViewerTokens
from gateway.config import Settings, SettingsError, load_settings
from gateway.core.egress import Egress, EgressPolicy
from gateway.errors import GatewayError, ResourceNotFound
from gateway.core.events import EventHub
from gateway.core.hooks import Hooks
from gateway.core.ingest import Ingest, IngestPolicy
from gateway.core.recordings import RecordingPolicy, Recordings
from gateway.core.streams import StreamRegistry
from gateway.backend import Backend, build_backend
from gateway.http.logredact import install_log_redaction
from gateway.http.problems import gateway_error_handler, http_error_handler, unexpected_error_handler
from gateway.http.forwarded import ForwardedMiddleware, TrustedProxies, parse_networks
from gateway.http.ratelimit import RateLimitMiddleware, RateLimits
from gateway.core.cluster import Cluster, ClusterPolicy, replica_url
from gateway.http.replicas import ReplicaRouter, UnlessForwarded

log = logging.getLogger(__name__)


async def list_streams(request: Request) -> JSONResponse:
    """What is published right now, for people and scripts (``curl /api/streams``).

    Anyone may ask, so it never shows a session id (the secret part of the
    WHIP resource URL) or a node name; ``public_listing`` says how much else.
    """
    settings: Settings = request.app.state.settings
    if settings.public_listing == "off":
        raise ResourceNotFound("the stream list is not public (public_listing = off)")
    if settings.admin_token and request.headers.get("authorization"):
        return await admin_streams.list_streams(request)  # the operator's view
    registry: StreamRegistry = request.app.state.streams
    egress: Egress = request.app.state.egress
    streams: dict[str, dict[str, object]] = {}
    cluster: Cluster | None = request.app.state.cluster
    if cluster is not None:  # every replica's streams, from their records
        for name, summary in (await cluster.listing()).items():
            shared: dict[str, object] = {"live": bool(summary["live"])}
            if settings.public_listing == "details":
                shared["viewers"] = summary["viewers"]
                shared["publisher"] = summary["publisher"]
            streams[name] = shared
        return JSONResponse({"streams": streams})
    for name, s in registry.streams().items():
        entry: dict[str, object] = {"live": s.state.value == "live"}
        if settings.public_listing == "details":
            described = s.describe()
            entry["viewers"] = egress.viewer_count(name)
            entry["publisher"] = {k: described[k] for k in ("state", "since_s", "codecs")}
        streams[name] = entry
    return JSONResponse({"streams": streams})


async def health(request: Request) -> JSONResponse:
    backend: Backend = request.app.state.backend
    nodes = {
        n.name: {"healthy": n.healthy, "role": n.role, "version": n.version_string, "load": n.load}
        for n in backend.pool.nodes
    }
    # Healthy when publishers and viewers both have somewhere to go.
    roles = {n.role for n in backend.pool.healthy()}
    ok = "both" in roles or {"ingest", "egress"} <= roles
    return JSONResponse({"ok": ok, "nodes": nodes}, status_code=200 if ok else 503)


# How uvicorn serves the app, for ``serve`` and the tests alike.
SERVER_OPTIONS = {
    # Off: uvicorn would believe X-Forwarded-For from 127.0.0.1 whatever the
    # settings say; gateway.http.forwarded reads it from trusted_proxies only.
    "proxy_headers": False,
    "timeout_keep_alive": 5,  # idle connections do not linger
    # httptools (C) with h11's 16 KiB cap on request heads (gateway.http.server).
    "http": CappedHttpToolsProtocol,
}


def _reload_on_sighup(app: Starlette) -> Callable[[], None]:
    """SIGHUP re-reads ``app.state.config_file`` and makes the node pool match
    its ``janus`` list (``Backend.reload``); returns the undo."""
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        path = getattr(app.state, "config_file", None)
        if path is None:
            log.warning("SIGHUP: no config file to reload (serve --config)")
            return
        try:
            await app.state.backend.reload(load_settings(path))
        except SettingsError as exc:
            log.error("SIGHUP: %s; the node pool is unchanged", exc)

    def handler() -> None:
        task = loop.create_task(reload())
        app.state.reloads.add(task)
        task.add_done_callback(app.state.reloads.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, handler)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return undo


def create_app(settings: Settings, backend: Backend | None = None,
               config_file: Path | None = None) -> Starlette:
    backend = backend or build_backend(settings)
    registry = StreamRegistry()  # where ingest announces publishers and egress hears them
    recordings = Recordings(RecordingPolicy(
        folder=settings.recordings_dir, streams=tuple(settings.record),
        min_free_bytes=settings.recordings_min_free_mb * 1024 * 1024,
        retention_days=settings.recordings_retention_days,
    ), registry)
    catalog = StreamCatalog(StreamKeys(settings.stream_keys),
                            ViewerTokens(settings.viewer_keys, settings.viewer_jwt_secret))
    ingest = Ingest(
        backend.pool,
        catalog.publish_gate,
        IngestPolicy(
            video_codecs=settings.video_codecs,
            audio_codecs=settings.audio_codecs,
            max_bitrate=settings.max_bitrate,
            connect_timeout=settings.publisher_connect_timeout,
            media_timeout=settings.publisher_media_timeout,
            pool_size=settings.ingest_pool_size,
        ),
        registry,
        recorder=recordings,
    )

    egress = Egress(
        backend.pool, registry, catalog.viewer_gate,
        EventHub(),
        EgressPolicy(
            viewer_connect_timeout=settings.viewer_connect_timeout,
            mountpoint_grace=settings.mountpoint_grace,
            mountpoint_threads=settings.mountpoint_threads,
            buffer_keyframe=settings.mountpoint_buffer_keyframe,
        ),
    )

    rate_limits = RateLimits.from_settings(settings)
    hooks = Hooks.from_settings(settings, registry, egress.viewers, backend.pool)
    recordings.on_ready.append(hooks.recording_ready)
    recordings.on_failed.append(hooks.recording_failed)
    metrics = GatewayMetrics(backend.pool, registry, egress, recordings, hooks.webhooks,
                             ingest)
    cluster = None
    if settings.redis_url:  # replicas sharing their sessions (core.cluster)
        cluster = Cluster(ClusterPolicy(
            redis_url=settings.redis_url, namespace=settings.instance_name,
            url=replica_url(settings.host, settings.port, settings.replica_url),
            lease=settings.replica_lease), backend.pool, ingest, egress)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hooks.start()  # before the nodes, so node.up is told
        if cluster is not None:
            await cluster.start()  # registered first: the nodes' reapers ask what others hold
        await backend.start()
        egress.start()
        if cluster is not None:
            cluster.run()
        recordings.start()
        metrics.start()
        undo_sighup = _reload_on_sighup(app)
        try:
            yield
        finally:
            undo_sighup()
            await asyncio.gather(*app.state.reloads, return_exceptions=True)
            metrics.stop()
            # A replica with live peers hands its sessions over instead of ending them.
            if cluster is None or not await cluster.hand_over():
                if cluster is not None:
                    await cluster.absorb()
                await egress.close()
                await ingest.close()
                await egress.settled()
                if cluster is not None:
                    await cluster.close()
                # Not after a hand-over: closing would end the Janus sessions
                # another replica now carries.
                await backend.close()
            await recordings.close()
            await hooks.close()
            await rate_limits.close()

    app = Starlette(
        routes=[
            *whip.routes,
            *whep.routes,
            *pages.routes,
            *admin.routes,
            *openapi.routes,
            *metrics_route.routes,
            Route("/api/streams", list_streams),
            Route("/healthz", health),
        ],
        # Outermost first: the real client is known before anything else runs;
        # CORS wraps the limits, so a browser can read a 429 and its Retry-After.
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(probes.AsgiHooks),
            Middleware(MetricsMiddleware, metrics=metrics),
            Middleware(ForwardedMiddleware,
                       trusted=TrustedProxies(parse_networks(settings.trusted_proxies)),
                       header=settings.forwarded_header),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "If-Match"],
                expose_headers=["Location", "ETag", "Link", "Accept-Patch", "Accept-Post",
                                "Retry-After", "WWW-Authenticate", "X-Request-Id"],
            ),
            Middleware(RateLimitMiddleware, limits=rate_limits) if cluster is None else
            Middleware(UnlessForwarded, cluster=cluster,
                       middleware=lambda inner: RateLimitMiddleware(inner, limits=rate_limits)),
            *([Middleware(ReplicaRouter, cluster=cluster)] if cluster is not None else []),
        ],
        exception_handlers={
            GatewayError: gateway_error_handler,
            HTTPException: http_error_handler,
            Exception: unexpected_error_handler,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.streams = registry
    app.state.ingest = ingest
    app.state.egress = egress
    app.state.recordings = recordings
    app.state.rate_limits = rate_limits
    app.state.config_file = config_file
    app.state.reloads = set()
    app.state.hooks = hooks
    app.state.metrics = metrics
    app.state.operations = Operations(catalog, registry, ingest, egress)
    app.state.cluster = cluster
    install_log_redaction()
    return app
