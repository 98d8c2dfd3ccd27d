"""Operator routes for recordings: list, one record, download (with Range), delete,
and which streams are recorded.

Every route runs ``require_admin`` first.  The domain (``core/recordings``)
decides everything; this module only translates requests and records.
"""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from gateway.core.recordings import Recordings
from gateway.errors import MalformedBody, RangeNotSatisfiable
from gateway.http.admin_auth import require_admin
from gateway.config import STREAM_NAME_PATTERN
from gateway.http.exchange import read_text

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _recordings(request: Request) -> Recordings:
    require_admin(request)
    return request.app.state.recordings  # type: ignore[no-any-return]


async def list_recordings(request: Request) -> JSONResponse:
    return JSONResponse({"recordings": _recordings(request).list()})


async def one_recording(request: Request) -> JSONResponse:
    return JSONResponse(_recordings(request).describe(request.path_params["id"]))


async def delete_recording(request: Request) -> Response:
    _recordings(request).delete(request.path_params["id"])
    return Response(status_code=204)


class _Download(FileResponse):
    """Starlette's FileResponse (which answers Range with 206 itself), told whether
    to look at the Range header at all: one it should ignore (RFC 9110 section
    14.2: a malformed one, or several ranges) is taken out of the scope."""

    def __init__(self, *args: object, use_range: bool, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.use_range = use_range

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.use_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await super().__call__(scope, receive, send)


def _single_range(header: str | None, size: int) -> bool:
    """Whether to serve a byte range; raise 416 (as problem+json) for one past the end."""
    if header is None:
        return False
    match = _RANGE.match(header.strip())
    if match is None:  # several ranges, other units, or junk: the whole file (200)
        return False
    first, last = match.groups()
    if not first and not last:
        return False
    if first and last and int(last) < int(first):
        return False
    if first and int(first) >= size or (not first and int(last) == 0):
        raise RangeNotSatisfiable(f"the recording has {size} bytes; {header.strip()} is "
                                  "outside it", size=size)
    return True


async def recording_media(request: Request) -> Response:
    path, media_type, name = _recordings(request).media(request.path_params["id"])
    use_range = _single_range(request.headers.get("range"), path.stat().st_size)
    # inline: a browser plays it in place and seeks with Range requests
    return _Download(path, media_type=media_type, filename=name, content_disposition_type="inline",
                     use_range=use_range)


async def recorded_streams(request: Request) -> JSONResponse:
    """GET: the streams being recorded; PUT {"record": [...]}: replace the list."""
    recordings = _recordings(request)
    if request.method == "PUT":
        text = await read_text(request, expected=("application/json",))
        try:
            names = json.loads(text)["record"]
            if not isinstance(names, list) or not all(
                    isinstance(n, str) and (n == "*" or re.match(STREAM_NAME_PATTERN, n))
                    for n in names):
                raise TypeError
            recordings.set_streams(names)
        except (ValueError, KeyError, TypeError):
            raise MalformedBody('want {"record": ["stream", ...]} ("*": every stream)') from None
    return JSONResponse({"record": sorted(recordings.streams)})


routes: list[BaseRoute] = [
    Route("/api/recordings", list_recordings, methods=["GET"]),
    Route("/api/recordings/{id}", one_recording, methods=["GET"]),
    Route("/api/recordings/{id}", delete_recording, methods=["DELETE"]),
    Route("/api/recordings/{id}/media", recording_media, methods=["GET", "HEAD"]),
    Route("/api/record", recorded_streams, methods=["GET", "PUT"]),
]
