"""What an operator may see and do: streams and sessions, listed, described, ended.

The operator API (``gateway.http.admin_streams``, ``admin_sessions``) only
translates HTTP to these calls, so every rule lives here: what a stream's
state is, which streams exist (defined through the API, live, or watched),
and what deleting one does (kicks its publisher and every viewer, whose
resources are then gone: no ``reconnect`` event, as nothing is coming back).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.core.catalog import StreamCatalog, StreamDefinition
from gateway.core.egress import Egress
from gateway.core.ingest import Ingest
from gateway.core.streams import PublisherSession, PublisherState, StreamRegistry
from gateway.core.viewers import ViewerSession
from gateway.errors import GatewayError, SessionNotFound, StreamNotFound
from gateway.janus.peer import JanusPeer
from gateway.janus.stats import MediumStats, as_json, peer_stats

KICKED = "kicked by the operator"
DELETED = "stream deleted by the operator"


class Operations:
    def __init__(self, catalog: StreamCatalog, registry: StreamRegistry, ingest: Ingest,
                 egress: Egress) -> None:
        self.catalog = catalog
        self.registry = registry
        self.ingest = ingest
        self.egress = egress

    # -- streams ------------------------------------------------------------

    def stream_names(self) -> list[str]:
        """Defined through the API, published right now, or still watched."""
        names = set(self.catalog.names()) | set(self.registry.streams())
        names |= self.egress.viewers.streams()
        return sorted(names)

    async def list_streams(self) -> list[dict[str, Any]]:
        """Every stream, described; the publishers' bitrates are asked of Janus at once."""
        return list(await asyncio.gather(*(self._described(n) for n in self.stream_names())))

    async def describe_stream(self, name: str) -> dict[str, Any]:
        """One stream, with its publisher's bitrate as Janus measures it."""
        if name not in self.stream_names():
            raise StreamNotFound(f"no stream {name!r}")
        return await self._described(name)

    async def _described(self, name: str) -> dict[str, Any]:
        described = self._stream(name)
        publisher = self.registry.publisher_of(name)
        if publisher is not None and publisher.backend is not None and described["publisher"]:
            stats = await _stats_or_none(publisher.backend)
            described["publisher"]["bitrate"] = (
                sum(s.bitrate_in for s in stats) if stats is not None else None)
        return described

    def create_stream(self, name: str, **credentials: Any) -> dict[str, Any]:
        """Define a stream; the answer carries its credentials, once."""
        definition = self.catalog.create(name, **credentials)
        return {**self._stream(name), **definition.describe(secrets_too=True)}

    def rotate_key(self, name: str, publish_key: str | None = None) -> dict[str, Any]:
        """A new publish key; a live publisher keeps going, the next POST needs the new key."""
        definition: StreamDefinition = self.catalog.rotate(name, publish_key)
        return {"name": name, "publish_key": definition.publish_key}

    async def delete_stream(self, name: str) -> None:
        """Forget the definition, end every viewer, then the publisher."""
        if name not in self.stream_names():
            raise StreamNotFound(f"no stream {name!r}")
        self.catalog.remove(name)
        await asyncio.gather(*(self.egress.end(v, DELETED)
                               for v in self.egress.viewers.of_stream(name)))
        publisher = self.registry.publisher_of(name)
        if publisher is not None:
            await self.ingest.kick(publisher, DELETED)

    def _stream(self, name: str) -> dict[str, Any]:
        definition = self.catalog.get(name)
        publisher = self.registry.publisher_of(name)
        viewers = self.egress.viewers.of_stream(name)
        by_node: dict[str, int] = {}
        for viewer in viewers:
            by_node[viewer.egress.node.name] = by_node.get(viewer.egress.node.name, 0) + 1
        if definition is not None:
            source = "api"
        elif self.catalog.settings_keys.required_for(name):
            source = "settings"
        else:
            source = None
        return {
            "name": name,
            "defined_by": source,
            "viewer_policy": definition.viewer_policy.value if definition else None,
            "live": publisher is not None and publisher.state is PublisherState.LIVE,
            "publisher": _publisher(publisher) if publisher is not None else None,
            "viewers": {"total": len(viewers), "by_node": by_node},
        }

    # -- sessions -----------------------------------------------------------

    def list_sessions(self) -> list[dict[str, Any]]:
        publishers = [_publisher(p) for p in self.registry.sessions()
                      if p.state is not PublisherState.ENDED]
        return [*publishers, *(_viewer(v) for v in self.egress.viewers.all() if not v.ended)]

    async def describe_session(self, session_id: str) -> dict[str, Any]:
        """One session with its RTC statistics from Janus (``stats`` is None
        when its node has no admin API)."""
        found = self._find(session_id)
        peer: JanusPeer | None
        if isinstance(found, PublisherSession):
            described, peer = _publisher(found), found.backend
        else:
            described, peer = _viewer(found), found.viewer
        stats = await _stats_or_none(peer) if peer is not None else None
        described["stats"] = as_json(stats) if stats is not None else None
        return described

    async def kick_session(self, session_id: str) -> None:
        found = self._find(session_id)
        if isinstance(found, PublisherSession):
            await self.ingest.kick(found, KICKED)
        else:
            await self.egress.end(found, KICKED)

    def _find(self, session_id: str) -> PublisherSession | ViewerSession:
        publisher = self.registry.get(session_id)
        if publisher is not None and publisher.state is not PublisherState.ENDED:
            return publisher
        viewer = self.egress.viewers.get(session_id)
        if viewer is not None and not viewer.ended:
            return viewer
        raise SessionNotFound("no live session has that id")


def _publisher(p: PublisherSession) -> dict[str, Any]:
    return {
        "id": p.id, "kind": "publisher", "stream": p.stream, "state": p.state.value,
        "node": p.backend.node.name if p.backend else p.node_name,
        "since_s": round(time.monotonic() - p.state_since, 3),
        "codecs": {s.kind: s.codec for s in p.backend.streams} if p.backend else {},
    }


def _viewer(v: ViewerSession) -> dict[str, Any]:
    return {
        "id": v.id, "kind": "viewer", "stream": v.stream,
        "state": "connected" if v.connected else "connecting",
        "node": v.egress.node.name, "mode": v.mode.value,
        "codecs": {m.kind: m.codec for m in v.egress.signature},
    }


async def _stats_or_none(peer: JanusPeer) -> list[MediumStats] | None:
    """Statistics are a look, not a duty: a node that cannot answer gives none."""
    try:
        return await peer_stats(peer)
    except GatewayError:
        return None
