"""Janus's admin API answering with an empty body (seen once from a Janus
that was still starting, during the soak): the gateway must read that as
"unreachable", not crash on ``None.get``."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusUnreachable
from gateway.janus.process import free_port


async def test_an_empty_admin_reply_is_unreachable() -> None:
    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"", content_type="application/json")

    app = web.Application()
    app.router.add_post("/admin", empty)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    admin = JanusAdmin(f"http://127.0.0.1:{port}/admin", "secret")
    try:
        with pytest.raises(JanusUnreachable, match="no JSON object"):
            await admin.sessions()
    finally:
        await admin.close()
        await runner.cleanup()
