"""A webhook receiver for the tests: a real HTTP server (uvicorn) in the test's
namespace that records every request and answers what the test tells it to."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from starlette.requests import Request
from starlette.responses import Response

from gateway.janus.process import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """``answer`` decides each response (default 204); ``hang`` makes it never answer."""

    answer: Callable[[Received], int] = lambda received: 204
    hang: bool = False
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        got = Received({k.lower(): v for k, v in request.headers.items()}, await request.body())
        async with self._arrived:
            self.received.append(got)
            self._arrived.notify_all()
        if self.hang:
            await self._release.wait()
        await Response(status_code=self.answer(got))(scope, receive, send)

    async def start(self) -> str:
        port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(self, host="127.0.0.1", port=port,
                                                     log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def wait_for(self, predicate: Callable[[list[Received]], bool],
                       timeout: float = 15.0) -> list[Received]:
        """Until ``predicate(received)`` holds (an event, not a sleep)."""
        async with asyncio.timeout(timeout):
            async with self._arrived:
                await self._arrived.wait_for(lambda: predicate(self.received))
        return list(self.received)

    def types(self) -> list[str]:
        return [r.json.get("type", "") for r in self.received if r.body.startswith(b"{")]
