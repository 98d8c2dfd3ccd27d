"""One Janus node as the gateway sees it: its API session, version and health.

The gateway keeps one long-lived Janus session per node, with one event
pump; every publisher and every viewer is a handle inside it.  When the
session is lost (Janus restarted, or unreachable) the node is marked down,
its listeners are told so they can drop what lived there, and a reconnect
loop brings it back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import urlsplit

from gateway.janus.admin import JanusAdmin
from gateway.janus.reaper import Held, reap
from gateway.janus.client import (
    JanusClient,
    JanusError,
    JanusHandle,
    JanusSession,
    JanusUnreachable,
    with_admin_key,
)

CONTROL_PLUGINS = ("janus.plugin.videoroom", "janus.plugin.streaming")
NATIVE_OFFER_VERSION = 1104  # Janus 1.1.4: Streaming accepts a viewer's offer on watch

log = logging.getLogger(__name__)


class NodeObserver(Protocol):
    """Told when a node's session is lost: everything that lived there is gone."""

    def node_down(self, node: JanusNode) -> None: ...


class JanusNode:
    def __init__(
        self,
        name: str,
        client: JanusClient,
        *,
        plugin_admin_key: str | None = None,
        admin: JanusAdmin | None = None,
        role: str = "both",
        region: str | None = None,
        max_viewers: int = 0,
        max_out_bitrate: int = 0,
        tag: str = "whip-gateway",
        reconnect_interval: float = 0.5,
        probe_interval: float = 0.5,
        probe_timeout: float = 0.75,
    ) -> None:
        self.name = name
        self.role = role  # "ingest", "egress" or "both"
        self.region = region  # None: serves viewers of any region
        # Capacity limits (0: none); placement (``gateway.core.placement``) keeps them.
        self.max_viewers = max_viewers
        self.max_out_bitrate = max_out_bitrate
        self.client = client
        # Where other nodes send RTP for this node's mountpoints.
        self.media_host = urlsplit(client.url).hostname or "127.0.0.1"
        self.admin = admin
        self.plugin_admin_key = plugin_admin_key
        self.version: int = 0
        self.version_string = ""
        self.session: JanusSession | None = None
        self._controls: dict[str, JanusHandle] = {}
        self.load = 0  # handles the gateway placed here
        self.reconnect_interval = reconnect_interval
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        # Marks everything this gateway creates (handles' opaque_id, room and
        # mountpoint descriptions), so a restarted gateway can reap it.
        self.tag = tag
        self._probe: asyncio.Task[None] | None = None
        self._observers: list[NodeObserver] = []
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False
        # Replicas (core.cluster): what the others hold here, which the reaper must spare.
        self.held_elsewhere: Callable[[], Awaitable[Held]] | None = None

    @property
    def healthy(self) -> bool:
        return self.session is not None and self.session.alive

    @property
    def takes_viewer_offers(self) -> bool:
        """Whether Streaming ``watch`` takes a viewer's offer (Janus >= 1.1.4);
        older nodes make their own offer, which ``gateway.sdp.bridge`` answers."""
        return self.version >= NATIVE_OFFER_VERSION

    def observe(self, observer: NodeObserver) -> None:
        self._observers.append(observer)

    async def connect(self) -> None:
        info = await self.client.info()
        self.version = int(info.get("version", 0))
        self.version_string = str(info.get("version_string", ""))
        plugins = info.get("plugins") or {}
        for needed in CONTROL_PLUGINS:
            if needed not in plugins:
                raise JanusUnreachable(f"node {self.name} lacks the {needed} plugin")
        session = await self.client.create_session()
        session.on_lost = self._session_lost
        try:
            # One handle per plugin for room/mountpoint management, so a POST
            # does not pay an attach and a detach.
            self._controls = {p: await session.attach(p, opaque_id=self.tag) for p in CONTROL_PLUGINS}
            if self.admin is not None:
                keep = await self.held_elsewhere() if self.held_elsewhere is not None else None
                await reap(self.admin, tag=self.tag, keep_session=session.id,
                           plugin_admin_key=self.plugin_admin_key, keep=keep)
        except BaseException:
            await session.destroy()
            raise
        self.session = session
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._watch(), name=f"janus-probe-{self.name}")
        log.info("janus node %s up: %s, session %s", self.name, self.version_string, session.id)
        for observer in list(self._observers):  # node_up is optional for observers
            try:
                getattr(observer, "node_up", lambda node: None)(self)
            except Exception:
                log.exception("node-up listener failed")

    async def _watch(self) -> None:
        """Declare the node down within about a second of Janus dying or hanging.

        The event pump sees a dead Janus at once (connection refused), but a
        hung one (SIGSTOP, overload) just stops answering; a short keepalive
        every ``probe_interval`` catches that: two misses in a row and the
        session is given up, so requests fail fast with 503.
        """
        misses = 0
        while not self._closing:
            await asyncio.sleep(self.probe_interval)
            session = self.session
            if session is None or not session.alive:
                misses = 0
                continue
            try:
                await session.keepalive(self.probe_timeout)
                misses = 0
            except JanusUnreachable as exc:
                misses += 1
                log.warning("janus node %s: keepalive failed (%d): %s", self.name, misses, exc)
                if misses >= 2:
                    session.mark_lost()
                    misses = 0

    def require_session(self) -> JanusSession:
        if self.session is None or not self.session.alive:
            raise JanusUnreachable(f"node {self.name} is down")
        return self.session

    def control(self, plugin: str) -> JanusHandle:
        """The node's management handle for ``plugin`` (create/destroy/forward)."""
        self.require_session()
        return self._controls[plugin]

    def mark_down(self) -> None:
        """Declare the node down (e.g. unreachable at start) and keep retrying."""
        if self.session is not None and self.session.alive:
            self.session.mark_lost()
        else:
            self._session_lost()

    def _session_lost(self) -> None:
        log.error("janus node %s: session lost; marking the node down", self.name)
        for observer in list(self._observers):
            try:
                observer.node_down(self)
            except Exception:
                log.exception("node-down listener failed")
        if not self._closing and (self._reconnect is None or self._reconnect.done()):
            self._reconnect = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.reconnect_interval)
            try:
                await self.connect()
                return
            except (JanusUnreachable, OSError) as exc:
                log.debug("janus node %s still down: %s", self.name, exc)
            except Exception:
                log.exception("janus node %s: reconnect failed", self.name)

    async def release(self) -> None:
        """Stop using the node but leave our Janus session, and every handle in
        it, as it is: another gateway replica takes it over (``core.cluster``)."""
        self._closing = True
        for task in (self._reconnect, self._probe):
            if task is not None:
                task.cancel()
        if self.session is not None:
            await self.session.stop_polling()
        await self.client.close()
        if self.admin is not None:
            await self.admin.close()

    async def close(self) -> None:
        self._closing = True
        for task in (self._reconnect, self._probe):
            if task is not None:
                task.cancel()
        if self.session is not None:
            await self.session.destroy()
        await self.client.close()
        if self.admin is not None:
            await self.admin.close()


async def handle_bytes_in(node: JanusNode, handle: JanusHandle) -> int | None:
    """Bytes Janus received on a handle's PeerConnection, all media together,
    from the admin API's ``handle_info``; None if the node has no admin API or
    it did not answer.  A publisher's rate of this is its stream's bitrate."""
    session = node.session
    if node.admin is None or session is None or not session.alive:
        return None
    try:
        info = await node.admin.handle_info(session.id, handle.id)
    except (JanusUnreachable, JanusError) as exc:
        log.debug("janus node %s: handle_info failed: %r", node.name, exc)
        return None
    media = (info.get("webrtc") or {}).get("media") or {}
    total = 0
    for entry in media.values():
        incoming = ((entry or {}).get("stats") or {}).get("in") or {}
        total += int(incoming.get("bytes", 0) or 0)
        for layer in ("bytes-sim1", "bytes-sim2"):  # simulcast layers past the first
            total += int(incoming.get(layer, 0) or 0)
    return total


async def gateway_handles(node: JanusNode) -> int | None:
    """How many handles Janus itself holds in the gateway's session (the admin
    API's load figure; the control handles included), or None if unknown."""
    session = node.session
    if node.admin is None or session is None or not session.alive:
        return None
    try:
        return len(await node.admin.handles(session.id))
    except (JanusUnreachable, JanusError) as exc:
        log.debug("janus node %s: list_handles failed: %r", node.name, exc)
        return None


async def control_request(node: JanusNode, plugin: str, body: dict[str, Any]) -> dict[str, Any]:
    """A synchronous request on the node's management handle for ``plugin``,
    with the plugin admin key that creating and destroying things needs."""
    return await node.control(plugin).request(with_admin_key(node.plugin_admin_key, body))
