"""Taking over the Janus sessions another gateway replica made.

A Janus session over HTTP belongs to no connection: whoever knows its id can
long-poll its events, keep it alive and talk to its handles.  So when a
replica dies, another one can carry on with its sessions as they are: it
starts an event pump and a keepalive on the same session id (before Janus's
``session_timeout`` ends the session and every PeerConnection in it), and
rebuilds the handle objects (publishers, viewers) and the mountpoints from
what the dead replica wrote down.  Events Janus queued while nobody polled
are delivered to the new pump.

This module turns those objects into plain records and back; which record
belongs to which session and who may take it over is ``core.cluster``'s
business.  Rooms and mountpoints are not tied to a session at all: the
taking replica manages them through its own control handles.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.janus.client import JanusError, JanusHandle, JanusSession, JanusUnreachable
from gateway.janus.node import JanusNode, control_request
from gateway.janus.peer import PeerObserver, events_to, quietly
from gateway.janus.reaper import pooled_session
from gateway.janus.streaming import (
    STREAMING,
    MediaSpec,
    Mountpoint,
    RtpPorts,
    StreamingViewer,
)
from gateway.janus.videoroom import (
    VIDEOROOM,
    PublishedStream,
    RoomPublisher,
    destroy_room,
)

log = logging.getLogger(__name__)

Record = dict[str, Any]
Session = JanusSession
Sessions = dict[int, JanusSession]  # the Janus sessions a takeover may rebuild handles in


class AdoptedSession(JanusSession):
    """A session another replica made, kept alive by this one.

    The node's own session is kept alive by the node's probe; an adopted one
    has its own keepalive (a long poll alone may not count as activity).
    When it is lost (timed out before the takeover, or Janus restarted), its
    handles are told they were detached, so their owners end as for any
    PeerConnection that went away.
    """

    def __init__(self, node: JanusNode, session_id: int, keepalive_interval: float) -> None:
        super().__init__(node.client, session_id)
        self.node = node
        self.keepalive_interval = keepalive_interval
        self._keeper: asyncio.Task[None] | None = None
        self.on_lost = self._orphan_handles

    def start(self) -> None:
        super().start()
        self._keeper = asyncio.create_task(self._keep_alive(), name=f"janus-keepalive-{self.id}")

    async def _keep_alive(self) -> None:
        misses = 0
        while self.alive:
            await asyncio.sleep(self.keepalive_interval)
            try:
                await self.keepalive(self.keepalive_interval)
                misses = 0
            except JanusUnreachable as exc:  # JanusSessionLost marks the session lost itself
                misses += 1
                log.warning("adopted janus session %s: keepalive failed (%d): %s", self.id,
                            misses, exc)
                if misses >= 3:
                    self.mark_lost()

    def _orphan_handles(self) -> None:
        log.warning("adopted janus session %s on %s is gone", self.id, self.node.name)
        for handle in list(self.handles.values()):
            if handle.on_event is not None:
                try:
                    handle.on_event({"janus": "detached", "sender": handle.id,
                                     "reason": "the Janus session was lost"})
                except Exception:
                    log.exception("listener failed for a lost handle")
        self.handles.clear()

    async def destroy(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        await super().destroy()

    async def release(self) -> None:
        """Stop polling without destroying the session (this replica is stopping
        and another one takes the session over)."""
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        await self.stop_polling()


async def adopt_session(node: JanusNode, session_id: int, *,
                        keepalive_interval: float = 5.0) -> AdoptedSession | None:
    """Start polling and keeping alive ``session_id`` on ``node``; None when
    Janus no longer has the session (it timed out) or does not answer."""
    session = AdoptedSession(node, session_id, keepalive_interval)
    try:
        await session.keepalive(node.probe_timeout * 4)
    except JanusUnreachable as exc:  # JanusSessionLost included
        log.warning("janus node %s: session %s cannot be taken over: %s", node.name,
                    session_id, exc)
        return None
    session.start()
    drained = await _drain_stale_poll(session, node)
    log.info("janus node %s: took over session %s (stale long poll %s)", node.name, session_id,
             "drained" if drained else "not seen")
    return session


async def _drain_stale_poll(session: AdoptedSession, node: JanusNode, attempts: int = 3,
                            wait: float = 1.0) -> bool:
    """Make sure the next event reaches our pump, not the dead replica's.

    Janus 1.1.2's HTTP transport does not notice that the dead replica's
    pending long poll lost its connection (it holds a poll up to 30 s): the
    next event for the session is written there and lost.  The tests saw
    just that: an ICE restart's answer right after a takeover never came.  So
    a throwaway handle is attached and detached until its ``detached`` event
    reaches our own pump.
    """
    for _ in range(attempts):
        seen = asyncio.Event()

        def on_event(event: dict[str, Any], seen: asyncio.Event = seen) -> None:
            if event.get("janus") == "detached":
                seen.set()

        try:
            handle = await session.attach(STREAMING, on_event, opaque_id=node.tag)
            await session.request(f"/{handle.id}", {"janus": "detach"})
        except JanusUnreachable as exc:
            log.warning("janus session %s: could not drain a stale poll: %s", session.id, exc)
            return False
        try:
            await asyncio.wait_for(seen.wait(), wait)
            return True
        except asyncio.TimeoutError:
            session.handles.pop(handle.id, None)  # its event went to the stale poll
    return False


def _handle(session: JanusSession, handle_id: int, plugin: str,
            observer: PeerObserver) -> JanusHandle:
    handle = JanusHandle(session, handle_id, plugin, events_to(observer))
    session.handles[handle_id] = handle
    return handle


# -- records: what a replica writes down so that another can rebuild it -------


def publisher_record(publisher: RoomPublisher) -> Record:
    return {
        "node": publisher.node.name, "session": publisher.handle.session.id,
        "handle": publisher.handle.id, "room": publisher.room_id,
        "publisher_id": publisher.publisher_id, "answer": publisher.answer,
        "streams": [{"mid": s.mid, "kind": s.kind, "codec": s.codec, "simulcast": s.simulcast}
                    for s in publisher.streams],
    }


def restore_publisher(node: JanusNode, session: JanusSession, record: Record,
                      observer: PeerObserver) -> RoomPublisher:
    handle = _handle(session, int(record["handle"]), VIDEOROOM, observer)
    publisher = RoomPublisher(
        node=node, handle=handle, room_id=int(record["room"]),
        publisher_id=int(record["publisher_id"]), answer=str(record["answer"]),
        streams=[PublishedStream(mid=str(s["mid"]), kind=str(s["kind"]), codec=s.get("codec"),
                                 simulcast=bool(s.get("simulcast"))) for s in record["streams"]])
    node.load += 1
    return publisher


def media_record(media: tuple[MediaSpec, ...] | list[MediaSpec]) -> list[Record]:
    return [{"kind": m.kind, "codec": m.codec, "fmtp": m.fmtp, "simulcast": m.simulcast}
            for m in media]


def restore_media(records: list[Record]) -> tuple[MediaSpec, ...]:
    return tuple(MediaSpec(str(r["kind"]), str(r["codec"]), r.get("fmtp"), bool(r.get("simulcast")))
                 for r in records)


def mountpoint_record(mountpoint: Mountpoint) -> Record:
    return {
        "id": mountpoint.id, "host": mountpoint.host, "media": media_record(mountpoint.media),
        "ports": {kind: {"port": p.port, "rtcp_port": p.rtcp_port, "port_2": p.port_2,
                         "port_3": p.port_3} for kind, p in mountpoint.ports.items()},
    }


def restore_mountpoint(node: JanusNode, record: Record) -> Mountpoint:
    return Mountpoint(node=node, id=int(record["id"]), media=list(restore_media(record["media"])),
                      host=str(record["host"]),
                      ports={kind: RtpPorts(**p) for kind, p in record["ports"].items()})


def viewer_record(viewer: StreamingViewer) -> Record:
    return {"node": viewer.node.name, "session": viewer.handle.session.id,
            "handle": viewer.handle.id, "mountpoint": viewer.mountpoint_id}


def restore_viewer(node: JanusNode, session: JanusSession, record: Record,
                   observer: PeerObserver) -> StreamingViewer:
    handle = _handle(session, int(record["handle"]), STREAMING, observer)
    node.load += 1
    return StreamingViewer(node=node, handle=handle, mountpoint_id=int(record["mountpoint"]))


def node_sessions(node: JanusNode) -> list[Record]:
    """The node's own session, as another replica would take it over."""
    if node.session is None or not node.session.alive:
        return []
    return [{"node": node.name, "session": node.session.id}]


async def destroy_dead_pools(node: JanusNode, sessions: set[int], spare: set[int]) -> int:
    """Destroy the rooms the publisher pools of ``sessions`` (a dead replica's)
    made on ``node``, but ``spare`` (rooms a publisher took from a pool and a
    replica still records).  Returns how many went."""
    try:
        listed = await control_request(node, VIDEOROOM, {"request": "list"})
    except (JanusError, JanusUnreachable) as exc:
        log.warning("janus node %s: dead pools not listed: %s", node.name, exc)
        return 0
    doomed = [int(e["room"]) for e in listed.get("list") or []
              if pooled_session(str(e.get("description") or ""), node.tag) in sessions
              and int(e["room"]) not in spare]
    for room_id in doomed:
        await quietly(destroy_room(node, room_id))
    return len(doomed)


async def destroy_lost_room(node: JanusNode, room_id: int) -> None:
    """A dead replica's room whose publisher's Janus session ended before the
    takeover: nobody publishes in it any more."""
    await quietly(destroy_room(node, room_id))
