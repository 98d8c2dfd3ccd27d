"""The Janus admin API: what Janus itself says it holds.

The gateway uses it to look at a node; the tests use it to prove that
nothing (session, handle, room, mountpoint) is left behind.
"""

from __future__ import annotations

from typing import Any

import asyncio

import aiohttp

from gateway.janus.client import JanusError, JanusUnreachable, _transaction

Json = dict[str, Any]


class JanusAdmin:
    def __init__(self, url: str, secret: str, *, timeout: float = 4.0) -> None:
        self.url = url.rstrip("/")
        self.secret = secret
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _post(self, path: str, body: Json) -> Json:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = {**body, "transaction": _transaction(), "admin_secret": self.secret}
        try:
            async with self._http.post(self.url + path, json=body) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise JanusUnreachable(f"admin {path}: {exc!r}") from exc
        if not isinstance(reply, dict):  # an empty body (a Janus still starting) reads as None
            raise JanusUnreachable(f"admin {path}: no JSON object in the reply ({reply!r})")
        if reply.get("janus") == "error":
            err = reply.get("error") or {}
            raise JanusError(int(err.get("code", 0)), str(err.get("reason", "")))
        return reply

    async def sessions(self) -> list[int]:
        return list((await self._post("", {"janus": "list_sessions"}))["sessions"])

    async def handles(self, session_id: int) -> list[int]:
        return list((await self._post(f"/{session_id}", {"janus": "list_handles"}))["handles"])

    async def handle_info(self, session_id: int, handle_id: int) -> Json:
        reply = await self._post(f"/{session_id}/{handle_id}", {"janus": "handle_info"})
        return dict(reply["info"])

    async def all_handles(self) -> dict[int, list[int]]:
        return {sid: await self.handles(sid) for sid in await self.sessions()}

    async def message_plugin(self, plugin: str, request: Json) -> Json:
        reply = await self._post("", {"janus": "message_plugin", "plugin": plugin, "request": request})
        return dict(reply.get("response") or {})

    async def destroy_session(self, session_id: int) -> None:
        await self._post(f"/{session_id}", {"janus": "destroy_session"})
