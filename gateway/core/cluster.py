"""Gateway replicas that share their sessions in Redis, and take over a dead one's.

Without ``redis_url`` none of this runs: one process holds everything in
memory (``StreamRegistry``, ``ViewerBook``), as it always did.

With it, every replica registers under a random id with a *lease* (a key
with a TTL it renews every third of ``replica_lease``) and its URL, and
writes down which Janus sessions it holds.  The unit of ownership is the
**stream**: the replica that took the stream's publisher owns the stream,
with its mountpoints and all its viewers.  A request that reaches another
replica is forwarded to the owner over HTTP (``gateway.http.replicas``):

- one replica per stream keeps the egress bookkeeping simple and
  race-free: the first viewer makes a mountpoint and its forwarder, the last
  one lets it go, and a publisher that reconnects is re-forwarded into the
  same mountpoints, all decided in one process, as with a single gateway;
- the alternative, acting on another replica's Janus handles directly,
  would need every replica to rebuild and lock every stream's objects per
  request.  Forwarding costs one loopback hop on signalling requests only,
  never on media.

Each stream's record (``core.records``) is rewritten when its sessions
change, so ``/api/streams`` on any replica shows
every stream.  When a replica's lease lapses (it was killed), the first
replica that notices claims it (``SET NX``), adopts its Janus sessions
(event pump and keepalives on the same session ids, ``janus.takeover``),
moves its streams' ownership to itself (a compare-and-set script) and
rebuilds publishers, mountpoints and viewers from the records.  Media never
stopped: it flows inside Janus.  The lease (6 s) is far below Janus's
``session_timeout`` (60 s in the managed config), which bounds how late a
takeover may come.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.core import records
from gateway.core.egress import Egress
from gateway.core.ingest import Ingest
from gateway.core.placement import NodePool
from gateway.core.streams import PublisherChange, PublisherSession
from gateway.errors import ReplicaUnavailable
from gateway.janus.reaper import Held
from gateway.janus.takeover import (
    AdoptedSession,
    Sessions,
    adopt_session,
    destroy_dead_pools,
    destroy_lost_room,
    node_sessions,
)

log = logging.getLogger(__name__)

REDIS_TIMEOUT = 2.0
TAKEOVER_CLAIM = 30  # seconds a replica has to finish taking a dead one over

# KEYS: owner, record, stream set; ARGV: me, record json, stream name.
# Writes the record if the stream is ours or nobody's; else returns the owner.
_WRITE = """
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return owner end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
return ''
"""
# KEYS: owner, record, stream set; ARGV: me, stream name.  Drops the stream if ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
return 0
"""
# KEYS: owner; ARGV: from, to.  Moves a stream from a dead replica to us.
_TRANSFER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


@dataclass(frozen=True)
class ClusterPolicy:
    redis_url: str
    namespace: str  # the deployment's tag: replicas of one deployment share it
    url: str  # where the other replicas reach this one
    lease: float = 6.0


class Cluster:
    """This replica's part in the shared state: lease, records, routing, takeover."""

    def __init__(self, policy: ClusterPolicy, pool: NodePool, ingest: Ingest, egress: Egress) -> None:
        import redis.asyncio

        self.policy = policy
        self.pool = pool
        self.ingest = ingest
        self.egress = egress
        self.id = secrets.token_hex(8)
        # Any: redis-py's stubs do not follow decode_responses (replies are str here).
        self.redis: Any = redis.asyncio.Redis.from_url(policy.redis_url, decode_responses=True,
                                                       socket_timeout=REDIS_TIMEOUT,
                                                       socket_connect_timeout=REDIS_TIMEOUT)
        self._write = self.redis.register_script(_WRITE)
        self._release = self.redis.register_script(_RELEASE)
        self._transfer = self.redis.register_script(_TRANSFER)
        self.secret = ""  # shared by the replicas: marks a request one of them forwarded
        self.in_flight: Counter[str] = Counter()  # local requests per stream
        self._adopted: list[AdoptedSession] = []
        self._restoring: set[int] = set()  # adopted, handles not rebuilt yet: not empty
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        self._flushing = asyncio.Lock()
        self.ingest.registry.subscribe(self)
        self.egress.viewers.listeners.append(self.touch)
        for node in pool.nodes:
            node.held_elsewhere = self.held

    # -- keys ---------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.policy.namespace, "cluster", *parts))

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Register (before the nodes connect: their reaper asks ``held``)."""
        await self.redis.set(self._key("secret"), secrets.token_urlsafe(24), nx=True)
        self.secret = str(await self.redis.get(self._key("secret")))
        await self._renew()
        await self.redis.sadd(self._key("replicas"), self.id)
        log.info("replica %s at %s (lease %g s)", self.id, self.policy.url, self.policy.lease)

    def run(self) -> None:
        """Start renewing, writing records and watching the other replicas (nodes are up)."""
        self._tasks = [asyncio.create_task(self._lease_loop(), name="replica-lease"),
                       asyncio.create_task(self._writer(), name="replica-records")]

    async def close(self) -> None:
        """Stop after the sessions ended: records go, the lease goes, the adopted
        Janus sessions are destroyed (they hold nothing any more)."""
        await self._stop_tasks()
        try:
            await self._flush(self._local_streams() | await self._owned_streams())
            for session in self._adopted:
                await session.destroy()
            self._adopted.clear()
            await self.redis.delete(self._key("replica", self.id), self._key("janus", self.id))
            await self.redis.srem(self._key("replicas"), self.id)
        except Exception as exc:  # Redis gone: the lease lapses on its own
            log.warning("replica %s: could not unregister: %r", self.id, exc)
        await self.redis.aclose()

    async def hand_over(self) -> bool:
        """Stop without ending anything, when another replica is alive to take
        this one's sessions over (a rolling restart): records written, Janus
        sessions left polling-free, the lease dropped so the takeover starts at
        the other replica's next renewal.  False (nothing done) when no other
        replica is alive: then this one ends its sessions, as a single gateway does."""
        try:
            others = [r for r in await self.redis.smembers(self._key("replicas"))
                      if r != self.id and await self.redis.exists(self._key("replica", r))]
        except Exception as exc:
            log.warning("replica %s: shared state unreachable at stop: %r", self.id, exc)
            return False
        if not others:
            return False
        await self._stop_tasks()
        await self.egress.events.stop()
        await self._flush(self._local_streams())
        await self._renew()  # our Janus sessions, as they are now
        await self.ingest.close_pools()  # made for our next publishers, not the heir's
        for node in self.pool.nodes:
            await node.release()
        for session in self._adopted:
            await session.release()
        await self.redis.delete(self._key("replica", self.id))
        await self.redis.aclose()
        log.warning("replica %s stopped; its sessions are handed over to the other replicas",
                    self.id)
        return True

    async def _stop_tasks(self) -> None:
        """Stop renewing and writing; a takeover under way gets a few seconds to finish."""
        for task in self._tasks:
            task.cancel()
        pending = [*self._tasks, *(t for t in self._takeovers.values() if not t.done())]
        if pending:
            done, stuck = await asyncio.wait(pending, timeout=5)
            for task in stuck:
                log.warning("replica %s: %s did not finish at stop", self.id, task.get_name())
                task.cancel()

    async def absorb(self) -> None:
        """Before the last replica ends its sessions: take over what replicas that
        stopped (or died) just before left, so that it ends with ours."""
        try:
            await self._watch_replicas()
            await asyncio.gather(*self._takeovers.values(), return_exceptions=True)
        except Exception as exc:
            log.warning("replica %s: could not take the others over at stop: %r", self.id, exc)

    # -- what the domain tells us ------------------------------------------------------

    def touch(self, stream: str) -> None:
        """The stream's sessions changed: write its record soon."""
        self._dirty.add(stream)
        self._wake.set()

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        self.touch(publisher.stream)

    # -- routing (gateway.http.replicas) ---------------------------------------------

    async def owner_url(self, stream: str, *, claim: bool) -> str | None:
        """Where requests for ``stream`` go: None for here, else the owner's URL.

        ``claim``: a new publisher; an unowned stream becomes ours.  A stream
        whose owner's lease lapsed is taken over first, so its resource URLs
        keep working; while the owner's lease still runs, it is the owner.
        """
        for _ in range(2):
            owner = await self.redis.get(self._key("owner", stream))
            if owner is None:
                if not claim or await self.redis.set(self._key("owner", stream), self.id, nx=True):
                    return None
                continue
            if owner == self.id:
                return None
            url = await self._replica_url(owner)
            if url is not None:
                return str(url)
            await self.take_over(owner)
            if not await self.redis.sismember(self._key("replicas"), owner):
                # Taken over, yet still named: it claimed the stream and died before
                # writing anything down.  Nothing is left of it; the stream is ours.
                await self._transfer(keys=[self._key("owner", stream)], args=[owner, self.id])
        owner = await self.redis.get(self._key("owner", stream))
        if owner is None or owner == self.id:
            return None
        raise ReplicaUnavailable(f"the replica holding stream {stream!r} is being taken over")

    async def _replica_url(self, replica: str) -> str | None:
        raw = await self.redis.get(self._key("replica", replica))
        return str(json.loads(raw)["url"]) if raw else None

    async def listing(self) -> dict[str, dict[str, Any]]:
        """Every replica's streams: their records' summaries, by name."""
        names = sorted(await self.redis.smembers(self._key("streams")))
        if not names:
            return {}
        raws = await self.redis.mget([self._key("stream", n) for n in names])
        now = time.time()
        out = {}
        for name, raw in zip(names, raws):
            if not raw:
                continue
            summary = dict(json.loads(raw)["summary"])
            publisher = summary.get("publisher")
            if publisher is not None:
                publisher["since_s"] = round(max(0.0, now - float(publisher.pop("since"))), 3)
            out[name] = summary
        return out

    async def held(self) -> Held:
        """What any replica (alive, or dead and waiting to be taken over) holds:
        a starting replica's reaper leaves it alone."""
        sessions: set[int] = set()
        for replica in await self.redis.smembers(self._key("replicas")):
            for entry in json.loads(await self.redis.get(self._key("janus", replica)) or "[]"):
                sessions.add(int(entry["session"]))
        rooms: set[int] = set()
        mountpoints: set[int] = set()
        names = list(await self.redis.smembers(self._key("streams")))
        if names:
            for raw in await self.redis.mget([self._key("stream", n) for n in names]):
                if raw:
                    r, m = records.held(json.loads(raw))
                    rooms |= r
                    mountpoints |= m
        return Held(frozenset(sessions), frozenset(rooms), frozenset(mountpoints))

    # -- the lease, and the other replicas -------------------------------------------

    async def _renew(self) -> None:
        ttl = int(self.policy.lease * 1000)
        await self.redis.set(self._key("replica", self.id),
                             json.dumps({"url": self.policy.url}), px=ttl)
        sessions = [s for node in self.pool.nodes for s in node_sessions(node)]
        sessions += [{"node": s.node.name, "session": s.id} for s in self._adopted if s.alive]
        await self.redis.set(self._key("janus", self.id), json.dumps(sessions))

    async def _lease_loop(self) -> None:
        interval = self.policy.lease / 3
        while True:
            started = time.monotonic()
            try:
                if await self.redis.exists(self._key("heir", self.id)):
                    # Our lease lapsed (a long stall) and another replica took our
                    # Janus sessions over: carrying on would fight it for them.
                    log.critical("replica %s was taken over by another replica; exiting", self.id)
                    os._exit(70)
                await self._renew()
                await self._forget_empty_sessions()
                await self._watch_replicas()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica %s: lease renewal failed: %r", self.id, exc)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _watch_replicas(self) -> None:
        """Start taking over every replica whose lease lapsed; the lease loop does
        not wait for it (a long takeover must not let our own lease lapse)."""
        for replica in await self.redis.smembers(self._key("replicas")):
            if replica != self.id and not await self.redis.exists(self._key("replica", replica)):
                await self._start_takeover(replica)

    async def take_over(self, replica: str) -> None:
        """Take a replica whose lease lapsed over, unless another replica does;
        returns once done (or at once, if another replica claimed it)."""
        task = await self._start_takeover(replica)
        if task is not None:
            await asyncio.shield(task)

    async def _start_takeover(self, replica: str) -> asyncio.Task[None] | None:
        task = self._takeovers.get(replica)
        if task is None or task.done():
            claimed = await self.redis.set(self._key("heir", replica), self.id, nx=True,
                                           ex=TAKEOVER_CLAIM)
            if not claimed:
                return None
            task = asyncio.create_task(self._take_over(replica), name=f"takeover-{replica}")
            task.add_done_callback(_log_failure)
            self._takeovers[replica] = task
        return task

    async def _take_over(self, dead: str) -> None:
        began = time.monotonic()
        nodes = {n.name: n for n in self.pool.nodes}
        entries = json.loads(await self.redis.get(self._key("janus", dead)) or "[]")
        mine = {s.id for s in self._adopted} | {n.session.id for n in self.pool.nodes if n.session}
        sessions: Sessions = {}
        adopted: list[AdoptedSession] = []
        for entry in entries:
            node, session_id = nodes.get(entry["node"]), int(entry["session"])
            if node is None or session_id in mine:
                continue
            session = await adopt_session(node, session_id,
                                          keepalive_interval=max(1.0, self.policy.lease / 2))
            if session is None:
                continue
            sessions[session_id] = session
            adopted.append(session)
        for session in self._adopted:
            sessions.setdefault(session.id, session)
        # Written down before any stream moves, so a replica that dies now is
        # taken over with these sessions.
        self._adopted += adopted
        self._restoring |= {s.id for s in adopted}
        try:
            streams = await self._take_streams(dead, nodes, sessions)
        finally:
            self._restoring -= {s.id for s in adopted}
        await self._free_dead_pools(entries, nodes)
        await self.redis.delete(self._key("janus", dead))
        await self.redis.srem(self._key("replicas"), dead)
        log.warning("replica %s took over replica %s: %d Janus session(s), %d stream(s) in %.2f s",
                    self.id, dead, len(adopted), streams, time.monotonic() - began)

    async def _take_streams(self, dead: str, nodes: dict[str, Any], sessions: Sessions) -> int:
        await self._renew()
        streams = 0
        for name in await self._streams_of(dead):
            if not await self._transfer(keys=[self._key("owner", name)], args=[dead, self.id]):
                continue
            raw = await self.redis.get(self._key("stream", name))
            if raw:
                try:
                    restored = records.restore(json.loads(raw), nodes, sessions, self.ingest,
                                               self.egress)
                except Exception:
                    log.exception("stream %s: could not be taken over", name)
                else:
                    for node, room in restored.lost_rooms:
                        await destroy_lost_room(node, room)
                    streams += 1
            self.touch(name)
        return streams

    async def _free_dead_pools(self, entries: list[dict[str, Any]], nodes: dict[str, Any]) -> None:
        """The dead replica's publisher pools: their rooms go now (their handles
        go with its Janus sessions); rooms a publisher took from them and any
        replica still records stay."""
        by_node: dict[str, set[int]] = {}
        for entry in entries:
            by_node.setdefault(entry["node"], set()).add(int(entry["session"]))
        spare = set((await self.held()).rooms)
        for name, dead_sessions in by_node.items():
            node = nodes.get(name)
            if node is not None and node.healthy:
                freed = await destroy_dead_pools(node, dead_sessions, spare)
                if freed:
                    log.info("replica %s: freed %d pooled room(s) of a dead replica on %s",
                             self.id, freed, name)

    async def _streams_of(self, replica: str) -> list[str]:
        names = sorted(await self.redis.smembers(self._key("streams")))
        if not names:
            return []
        owners = await self.redis.mget([self._key("owner", n) for n in names])
        return [n for n, owner in zip(names, owners) if owner == replica]

    async def _owned_streams(self) -> set[str]:
        return set(await self._streams_of(self.id))

    async def _forget_empty_sessions(self) -> None:
        """An adopted Janus session whose publishers and viewers all ended is destroyed
        (with the dead replica's two control handles still in it)."""
        gone = [s for s in self._adopted
                if s.id not in self._restoring and (not s.alive or not s.handles)]
        # Dropped from the list first: a takeover may add to it while we await.
        self._adopted = [s for s in self._adopted if s not in gone]
        for session in gone:
            if session.alive:
                await session.destroy()
                log.info("janus session %s taken over earlier is empty: destroyed", session.id)

    # -- records ----------------------------------------------------------------------

    def _local_streams(self) -> set[str]:
        return (set(self.ingest.registry.streams()) | self.egress.viewers.streams()
                | self.egress.mountpoints.streams())

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            try:
                await self._flush(dirty)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("replica %s: could not write records: %r", self.id, exc)
                self._dirty |= dirty
                await asyncio.sleep(self.policy.lease / 6)
                self._wake.set()

    async def _flush(self, streams: set[str]) -> None:
        async with self._flushing:
            for stream in sorted(streams):
                record = records.capture(stream, self.ingest, self.egress)
                keys = [self._key("owner", stream), self._key("stream", stream), self._key("streams")]
                if record is None:
                    if not self.in_flight[stream]:
                        await self._release(keys=keys, args=[self.id, stream])
                    continue
                owner = await self._write(keys=keys, args=[self.id, json.dumps(record), stream])
                if owner:
                    log.error("stream %s: held here but owned by replica %s", stream, owner)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("takeover failed: %r", task.exception())


def replica_url(host: str, port: int, configured: str | None) -> str:
    """Where the other replicas reach this one: the setting, else host and port."""
    if configured:
        return configured
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
