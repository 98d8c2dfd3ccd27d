"""The HTTP/1.1 protocol uvicorn serves the app with: httptools, capped like h11.

Why not uvicorn's default choice: h11 is pure Python, and parsing the
request and writing the response with it was about a tenth of the gateway's
CPU per WHEP set-up (bench/setup_rate.py); httptools (llhttp, in C) does it
for a fraction.  But h11 refuses a request head over 16 KiB and httptools
has no cap at all: it would hand a 1 MiB Authorization header to the app.
``CappedHttpToolsProtocol`` counts the head as llhttp reads it and refuses
the same way h11 did under uvicorn: 400 "Invalid HTTP request received.",
and the connection closed.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 16 * 1024  # h11's default max_incomplete_event_size


class RequestHeadTooLarge(Exception):
    """Raised from a parser callback: llhttp stops, uvicorn answers 400 and closes."""


class CappedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over ``MAX_HEAD_BYTES``."""

    _head_bytes = 0

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp may hand a header over in pieces: every piece counts.
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            raise RequestHeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")
