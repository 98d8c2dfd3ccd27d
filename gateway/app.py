"""Builds the Starlette application from settings."""

from __future__ import annotations

import contextlib
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.http import whep
from gateway.http import whip
from gateway.http import pages
from gateway.core.auth import StreamKeys, ViewerTokens
from gateway.config import Settings
from gateway.core.egress import Egress, EgressPolicy
from gateway.errors import GatewayError
from gateway.core.events import EventHub
from gateway.core.ingest import Ingest, IngestPolicy
from gateway.core.streams import StreamRegistry
from gateway.backend import Backend, build_backend
from gateway.http.logredact import install_log_redaction
from gateway.http.problems import gateway_error_handler, http_error_handler, unexpected_error_handler
from gateway.http.ratelimit import RateLimits


async def list_streams(request: Request) -> JSONResponse:
    """What is published right now, for people and scripts (``curl /api/streams``)."""
    registry: StreamRegistry = request.app.state.streams
    egress: Egress = request.app.state.egress
    streams = {
        name: {"live": s.state.value == "live", "viewers": egress.viewer_count(name),
               "publisher": s.describe()}
        for name, s in registry.streams().items()
    }
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
    "proxy_headers": True,
    "timeout_keep_alive": 5,  # idle connections do not linger
    "http": "h11",  # h11 caps request heads (16 KiB); httptools has no cap at all
}


def create_app(settings: Settings, backend: Backend | None = None) -> Starlette:
    backend = backend or build_backend(settings)
    registry = StreamRegistry()  # where ingest announces publishers and egress hears them
    ingest = Ingest(
        backend.pool,
        StreamKeys(settings.stream_keys),
        IngestPolicy(
            video_codecs=settings.video_codecs,
            audio_codecs=settings.audio_codecs,
            max_bitrate=settings.max_bitrate,
            connect_timeout=settings.publisher_connect_timeout,
            media_timeout=settings.publisher_media_timeout,
        ),
        registry,
    )

    egress = Egress(
        backend.pool, registry, ViewerTokens(settings.viewer_keys, settings.viewer_jwt_secret),
        EventHub(),
        EgressPolicy(
            viewer_connect_timeout=settings.viewer_connect_timeout,
            mountpoint_grace=settings.mountpoint_grace,
            mountpoint_threads=settings.mountpoint_threads,
            buffer_keyframe=settings.mountpoint_buffer_keyframe,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        egress.start()
        try:
            yield
        finally:
            await egress.close()
            await ingest.close()
            await egress.settled()
            await backend.close()

    app = Starlette(
        routes=[
            *whip.routes,
            *whep.routes,
            *pages.routes,
            Route("/api/streams", list_streams),
            Route("/healthz", health),
        ],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "If-Match"],
                expose_headers=["Location", "ETag", "Link", "Accept-Patch", "Accept-Post",
                                "Retry-After", "WWW-Authenticate"],
            )
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
    app.state.rate_limits = RateLimits(settings.rate_limit_per_client, settings.rate_limit_per_stream)
    install_log_redaction()
    return app
