"""Finding and freeing what an earlier run of the gateway left in Janus.

Rooms and mountpoints made over the API outlive the Janus session that
made them, and a gateway that crashed (or lost a hung node) leaves its
session behind until Janus times it out.  Everything the gateway creates
carries its tag: handles in their ``opaque_id``, rooms and mountpoints in
their ``description``.  On connecting to a node, the gateway frees every
tagged thing that is not its own current session.  Two gateways sharing a
Janus node therefore need different tags (setting ``instance_name``), unless
they are replicas of one deployment (``redis_url``): then what any replica
still holds, or will take over, is passed as ``keep`` and left alone.  A
room a publisher pool made (``roompool``) names its Janus session: it is
kept while that session is (a replica's live pool), freed with it otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusError, JanusUnreachable, with_admin_key

log = logging.getLogger(__name__)

POOL_WORD = "pool"  # in a pooled room's description: "<tag> pool <session id>"


@dataclass(frozen=True)
class Held:
    """What other replicas of this deployment hold on a node: not to be reaped."""

    sessions: frozenset[int] = field(default_factory=frozenset)
    rooms: frozenset[int] = field(default_factory=frozenset)
    mountpoints: frozenset[int] = field(default_factory=frozenset)


async def reap(admin: JanusAdmin, *, tag: str, keep_session: int,
               plugin_admin_key: str | None, keep: Held | None = None) -> dict[str, int]:
    """Destroy tagged sessions (but ``keep_session``), rooms and mountpoints,
    except what ``keep`` names."""
    keep = keep or Held()
    kept = {"sessions": keep.sessions, "rooms": keep.rooms, "mountpoints": keep.mountpoints}
    freed = {"sessions": 0, "rooms": 0, "mountpoints": 0}
    try:
        for session_id in await admin.sessions():
            if session_id == keep_session or session_id in keep.sessions:
                continue
            handles = await admin.handles(session_id)
            for handle_id in handles:
                info = await admin.handle_info(session_id, handle_id)
                if str(info.get("opaque_id", "")) == tag:
                    await admin.destroy_session(session_id)
                    freed["sessions"] += 1
                    break
        for plugin, what, key in (("janus.plugin.videoroom", "rooms", "room"),
                                  ("janus.plugin.streaming", "mountpoints", "id")):
            listed = await admin.message_plugin(
                plugin, with_admin_key(plugin_admin_key, {"request": "list"}))
            for entry in listed.get("list", []):
                if _tagged(entry, tag) and entry[key] not in kept[what] and not _pool_kept(
                        entry, tag, keep.sessions):
                    await admin.message_plugin(plugin, with_admin_key(plugin_admin_key, {
                        "request": "destroy", key: entry[key], "permanent": False}))
                    freed[what] += 1
    except (JanusError, JanusUnreachable) as exc:
        log.warning("could not reap earlier resources: %s", exc)
    if any(freed.values()):
        log.warning("freed what an earlier run left in Janus: %s", freed)
    return freed


def _pool_kept(entry: dict[str, object], tag: str, sessions: frozenset[int]) -> bool:
    """A pooled room of a session that is kept: another replica's live pool."""
    return pooled_session(str(entry.get("description") or ""), tag) in sessions


def pooled_session(description: str, tag: str) -> int | None:
    """The Janus session whose publisher pool made a room so described, or None
    (``roompool.pool_description`` writes it)."""
    prefix = f"{tag} {POOL_WORD} "
    if not description.startswith(prefix):
        return None
    rest = description[len(prefix):]
    return int(rest) if rest.isdigit() else None


def _tagged(entry: dict[str, object], tag: str) -> bool:
    description = str(entry.get("description") or "")
    return description == tag or description.startswith(tag + " ")
