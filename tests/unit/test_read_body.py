"""Reading a request body: a client that hangs up mid-body is not a server error.

Found by bench/webinar.py: viewers that gave up while their POST body was
still being read made Starlette's ``ClientDisconnect`` escape as a 500 with a
traceback in the log.  Now it is the named ``ClientGone`` (400)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from gateway.errors import ClientGone
from gateway.http.exchange import read_text


async def test_a_client_that_hangs_up_mid_body() -> None:
    messages = iter([{"type": "http.request", "body": b"v=0\r\n", "more_body": True},
                     {"type": "http.disconnect"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    scope = {"type": "http", "method": "POST", "path": "/whep/live", "query_string": b"",
             "headers": [(b"content-type", b"application/sdp")], "app": SimpleNamespace(state=None)}
    with pytest.raises(ClientGone) as caught:
        await read_text(Request(scope, receive), expected=("application/sdp",))
    assert caught.value.status == 400
