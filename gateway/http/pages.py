"""Routes for the browser pages.

``/`` lists the streams, ``/watch/{stream}`` plays one over WHEP and
``/publish/{stream}`` sends the camera over WHIP.  The pages take the stream
name from their own URL and reach the API by relative URLs, so they also work
behind a reverse proxy that mounts the gateway under a path prefix.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.errors import ResourceNotFound
from gateway.http.exchange import valid_stream

STATIC = Path(__file__).parent.parent / "web" / "static"
NO_CACHE = {"Cache-Control": "no-cache"}


async def index(request: Request) -> Response:
    """The stream list: there only while ``public_listing`` is not ``off``."""
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and settings.public_listing == "off":
        raise ResourceNotFound("the stream list is not public (public_listing = off)")
    return FileResponse(STATIC / "index.html", headers=NO_CACHE)


async def watch(request: Request) -> Response:
    valid_stream(request.path_params["stream"])
    return FileResponse(STATIC / "watch.html", headers=NO_CACHE)


async def publish(request: Request) -> Response:
    valid_stream(request.path_params["stream"])
    return FileResponse(STATIC / "publish.html", headers=NO_CACHE)


routes: list[Route | Mount] = [
    Route("/", index, methods=["GET", "HEAD"]),
    Route("/watch/{stream}", watch, methods=["GET", "HEAD"]),
    Route("/publish/{stream}", publish, methods=["GET", "HEAD"]),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
