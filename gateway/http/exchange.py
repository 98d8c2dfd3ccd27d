"""Reading requests and writing headers the way WHIP and WHEP both need.

Kept apart from the resources so that the two protocols share one reading
of Content-Type, body limits, If-Match and Location, not two.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request

from gateway.config import STREAM_NAME_PATTERN, IceServer
from gateway import probes
from gateway.protocol import ICE_SERVER_REL
from gateway.errors import (
    BodyTooLarge,
    MalformedBody,
    PreconditionFailed,
    PreconditionRequired,
    RequestTimeout,
    ClientGone,
    ResourceNotFound,
    UnsupportedContentType,
)

MAX_BODY_BYTES = 64 * 1024
_STREAM = re.compile(STREAM_NAME_PATTERN)


def valid_stream(name: str) -> str:
    """A stream name from the URL; anything else names no endpoint (404)."""
    if not _STREAM.match(name):
        raise ResourceNotFound("stream names are 1-128 characters of A-Z a-z 0-9 _ . ~ -")
    return name


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@probes.timed("http.read_body")
async def read_text(request: Request, *, expected: tuple[str, ...]) -> str:
    """The body as UTF-8 text, if its Content-Type is one of ``expected``.

    Bounded in size (413) and in time (408), from the app's settings.
    """
    settings = getattr(request.app.state, "settings", None)
    limit = settings.max_body_bytes if settings else MAX_BODY_BYTES
    timeout = settings.body_timeout if settings else 10.0
    try:
        async with asyncio.timeout(timeout):
            return await _read_text(request, expected=expected, limit=limit)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone("the client closed the connection while sending its body") from None


async def _read_text(request: Request, *, expected: tuple[str, ...], limit: int) -> str:
    got = media_type(request)
    if got not in expected:
        raise UnsupportedContentType(
            f"Content-Type must be {' or '.join(e for e in expected if e)}, not {got or 'missing'}"
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("the body is not UTF-8 text") from None


# RFC 9110's wildcard is a bare ``*``, but RFC 9725 section 4.3.3 prints it
# quoted (``If-Match: "*"``) and clients copy that.  The gateway never issues
# ``"*"`` as an ETag, so both forms can mean "any ICE session".
WILDCARDS = frozenset({"*", '"*"'})


def check_if_match(request: Request, current_etag: str) -> None:
    """RFC 9725 section 4.3.1: 428 without If-Match, 412 when it is stale."""
    value = request.headers.get("if-match")
    if value is None:
        raise PreconditionRequired('PATCH needs If-Match (the ETag, or "*" for an ICE restart)')
    tags = [t.strip() for t in value.split(",")]
    if WILDCARDS.intersection(tags) or current_etag in tags:
        return
    raise PreconditionFailed("If-Match does not name the current ICE session")


def public_base(request: Request, public_url: str | None) -> str:
    if public_url:
        return public_url
    return str(request.base_url).rstrip("/")


def absolute_url(request: Request, public_url: str | None, *segments: str) -> str:
    """Absolute URLs for Location: OBS and some players mishandle relative ones."""
    return public_base(request, public_url) + "/" + "/".join(quote(s, safe="") for s in segments)


def ice_server_links(servers: list[IceServer]) -> list[str]:
    """``Link`` values of RFC 9725 section 4.6, one per server."""
    links = []
    for server in servers:
        link = f'<{server.url}>; rel="{ICE_SERVER_REL}"'
        if server.username and server.credential:
            link += (f'; username="{_quoted(server.username)}"'
                     f'; credential="{_quoted(server.credential)}"; credential-type="password"')
        links.append(link)
    return links


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
