"""Pre-attached VideoRoom handles and pre-created rooms, one pool per ingest node.

Why: a WHIP POST used to make three Janus round trips before the answer
(room ``create``, ``attach``, ``joinandconfigure``).  A publisher that takes
a room and a handle made in advance makes one.  Taking never waits: an empty
pool (a burst larger than it, a node just back) sends the POST down the slow
path, and the pool is topped up in the background after each take, one room
and one handle at a time, so the refill never crowds the requests it serves.

A room's codec list and H.264 profile are fixed when it is created (VideoRoom
``edit`` cannot change them), so rooms are made with one option set, the one
last taken; an offer asking for another set gets a fresh room and the pool
switches to its set.  Recorded streams never take a pooled room.

Janus holds nothing of the pool that the pool cannot name (``held``): the
leak checks count exactly that.  Pooled rooms are described
``"<tag> pool <session id>"``, after the Janus session whose pool made them,
so the reaper spares the pools of live replicas (their sessions are kept)
and frees a dead one's (``reaper.pooled_session``).  When the node's session is lost, the
handles are gone with it; the rooms (which outlive a session) are destroyed
once the node is back, in case Janus itself did not restart.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from collections.abc import Callable

from gateway.janus.client import (
    EventCallback,
    JanusError,
    JanusHandle,
    JanusPluginError,
    JanusUnreachable,
)
from gateway.janus.node import JanusNode
from gateway.janus.peer import quietly
from gateway.janus.reaper import POOL_WORD
from gateway.janus.videoroom import (
    VIDEOROOM,
    RoomOptions,
    create_room,
    destroy_room,
    rename_room,
)

log = logging.getLogger(__name__)



def pool_description(tag: str, session_id: int) -> str:
    """Read back by ``reaper.pooled_session``."""
    return f"{tag} {POOL_WORD} {session_id}"


class PublisherPool:
    """Handles and rooms ready for the next publishers on one node."""

    def __init__(self, node: JanusNode, size: int, options: RoomOptions,
                 new_room_id: Callable[[], int] = lambda: secrets.randbits(52) or 1) -> None:
        self.node = node
        self.size = size
        self.options = options  # what pooled rooms are created with
        self._new_room_id = new_room_id
        self._handles: list[JanusHandle] = []
        self._rooms: list[int] = []
        # Rooms being created (ids are ours, so they are known before Janus
        # answers) or destroyed: Janus may hold them, the pool still names them.
        self._passing: set[int] = set()
        self._attaching = 0
        self._doomed: list[int] = []  # rooms to destroy: wrong options, or a lost session's
        self._renames: list[tuple[int, str]] = []  # taken rooms to name after their streams
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.taken = 0  # takes served from the pool (a room or a handle), for tests and metrics
        self.missed = 0  # takes that found it empty

    # -- the request path: never awaits -------------------------------------

    def take_handle(self, on_event: EventCallback) -> JanusHandle | None:
        """A VideoRoom handle attached in the node's current session, now
        reporting to ``on_event``; None when the pool has none ready."""
        session = self.node.session
        while self._handles:
            handle = self._handles.pop()
            if session is not None and session.alive and handle.session is session:
                handle.on_event = on_event
                self.taken += 1
                return handle
        self.missed += 1
        return None

    def take_room(self, options: RoomOptions) -> int | None:
        """A free room made with ``options``; None when there is none ready.
        A new option set (a recording aside) becomes the pool's from now on."""
        if options.record_dir is None and options != self.options:
            self.options = options
            self._doomed += self._rooms
            self._rooms = []
        if options != self.options or not self._rooms:
            self.missed += 1
            return None
        self.taken += 1
        return self._rooms.pop()

    def rename(self, room_id: int, description: str) -> None:
        """Give a taken room its stream's description, with the next refill
        (after the answer: an ``edit`` beside the join slowed the join)."""
        self._renames.append((room_id, description))

    def refill(self) -> None:
        """Top the pool up in the background (one task at a time)."""
        if self._closed or self.size <= 0 or (self._task is not None and not self._task.done()):
            return
        # A context of its own: the refill belongs to no request (logs, probes).
        self._task = asyncio.create_task(self._top_up(), name=f"publisher-pool-{self.node.name}",
                                         context=contextvars.Context())

    # -- what Janus holds for the pool ----------------------------------------

    def held(self) -> tuple[set[int], set[int]]:
        """(handle ids, room ids) Janus may hold for this pool right now."""
        return {h.id for h in self._handles}, {*self._rooms, *self._passing, *self._doomed}

    async def settled(self) -> None:
        """Wait until no refill is under way (``held`` then matches Janus exactly)."""
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the node's life ----------------------------------------------------------

    def node_down(self) -> None:
        """The session died, and every handle with it; rooms may outlive it
        (Janus hung, not restarted): they are destroyed when the node is back."""
        if self._task is not None:
            self._task.cancel()
        self._handles = []
        self._renames = []
        self._doomed += [*self._rooms, *self._passing]
        self._rooms = []
        self._passing.clear()

    def node_up(self) -> None:
        self.refill()

    async def close(self) -> None:
        """Destroy every room and detach every handle the pool holds."""
        self._closed = True
        await self.settled()  # a refill in flight ends within a request timeout
        handles, self._handles = self._handles, []
        self._doomed += [*self._rooms, *self._passing]
        self._rooms = []
        self._passing.clear()
        if self.node.healthy:
            try:
                await self._destroy_doomed()
            except JanusUnreachable as exc:
                log.warning("publisher pool on %s: rooms not destroyed: %s", self.node.name, exc)
            await asyncio.gather(*(quietly(h.detach()) for h in handles))
        self._doomed = []

    # -- internals -------------------------------------------------------------

    async def _top_up(self) -> None:
        try:
            while not self._closed and self.node.healthy:
                await self._rename_taken()  # (rooms taken while this task ran too)
                await self._destroy_doomed()
                steps = []
                if len(self._handles) + self._attaching < self.size:
                    steps.append(self._add_handle())
                if len(self._rooms) < self.size:
                    steps.append(self._add_room(self.options))
                if not steps:
                    return
                # Both steps always finish before the next round (held() stays exact).
                for result in await asyncio.gather(*steps, return_exceptions=True):
                    if isinstance(result, BaseException):
                        raise result
        except (JanusError, JanusUnreachable) as exc:
            # Tried again after the next take, or when the node is back.
            log.warning("publisher pool on %s not topped up: %s", self.node.name, exc)

    async def _rename_taken(self) -> None:
        while self._renames:
            room_id, description = self._renames.pop(0)
            try:
                await rename_room(self.node, room_id, description)
            except JanusError as exc:  # the publisher left already: its room is gone
                log.debug("room %s not renamed: %s", room_id, exc)

    async def _add_handle(self) -> None:
        session = self.node.require_session()
        self._attaching += 1
        try:
            handle = await session.attach(VIDEOROOM, opaque_id=self.node.tag)
        finally:
            self._attaching -= 1
        if self._closed or self.node.session is not session or not session.alive:
            await quietly(handle.detach())
            return
        self._handles.append(handle)

    async def _add_room(self, options: RoomOptions) -> None:
        session = self.node.require_session()
        room_id = self._new_room_id()
        self._passing.add(room_id)
        try:
            await create_room(self.node, options, pool_description(self.node.tag, session.id),
                              room_id=room_id)
        except JanusPluginError:
            self._passing.discard(room_id)  # refused: Janus holds no such room
            raise
        except BaseException:
            if room_id in self._passing:  # it may exist: destroyed with the next refill
                self._passing.discard(room_id)
                self._doomed.append(room_id)
            raise
        self._passing.discard(room_id)
        if self._closed or options != self.options or self.node.session is not session:
            self._doomed.append(room_id)
            return
        self._rooms.append(room_id)

    async def _destroy_doomed(self) -> None:
        while self._doomed:
            room_id = self._doomed[-1]
            try:
                await destroy_room(self.node, room_id)
            except JanusError as exc:  # 426: gone already (Janus restarted)
                log.debug("pooled room %s: %s", room_id, exc)
            self._doomed.pop()
