"""A stream's sessions as a plain record, and back: what replicas share in Redis.

One record per stream holds everything the replica that owns the stream
knows about it: the publisher, the mountpoint variants with their
forwarders, the viewers and their event streams.  Another replica reads it
for two things: ``/api/streams`` (the ``summary`` part) and, when the owner
died, taking the stream over (``restore``).  The Janus side of each object
(handle and room ids, ports) is ``gateway.janus.takeover``'s to write and
read; this module does the domain side.

A record is written (coalesced) after every request on the stream that
this replica handled, when a viewer comes, goes or connects, and when the
publisher changes state: nothing a takeover needs changes otherwise.  One
JSON document per stream keeps a takeover to one read per stream; it grows
with the stream's viewers (a few kB each), which suits hundreds of viewers
per stream, not tens of thousands.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.core.egress import Egress
from gateway.core.ingest import Ingest
from gateway.core.streams import PublisherSession, PublisherState
from gateway.core.viewers import StreamEgress, Variant, ViewerMode, ViewerSession
from gateway.janus import takeover
from gateway.janus.node import JanusNode
from gateway.janus.peer import PeerObserver
from gateway.sdp import bridge as sdp_bridge
from gateway.sdp import model as sdp

log = logging.getLogger(__name__)

Record = dict[str, Any]


def capture(stream: str, ingest: Ingest, egress: Egress) -> Record | None:
    """The stream as this replica holds it; None when it holds nothing of it."""
    publisher = ingest.registry.publisher_of(stream)
    if publisher is not None and (publisher.backend is None or publisher.state is PublisherState.ENDED):
        publisher = None  # still being set up, or gone: nothing another replica could carry on
    egresses = egress.mountpoints.egresses(stream)
    viewers = [v for v in egress.viewers.of_stream(stream) if not v.ended]
    if publisher is None and not egresses and not viewers:
        return None
    now_wall, now_mono = time.time(), time.monotonic()
    summary: Record = {"live": False, "viewers": len(viewers), "publisher": None}
    if publisher is not None:
        described = publisher.describe()
        summary["live"] = publisher.state is PublisherState.LIVE
        summary["publisher"] = {"state": described["state"], "codecs": described["codecs"],
                                "since": now_wall - (now_mono - publisher.state_since)}
    return {
        "stream": stream,
        "summary": summary,
        "publisher": _publisher(publisher) if publisher is not None else None,
        "egress": [_egress(e, publisher) for e in egresses],
        "viewers": [_viewer(v, egress) for v in viewers],
    }


def held(record: Record) -> tuple[set[int], set[int]]:
    """The rooms and mountpoints a record names (which no replica may reap)."""
    rooms = {int(record["publisher"]["janus"]["room"])} if record.get("publisher") else set()
    mountpoints = {int(v["mountpoint"]["id"]) for e in record.get("egress") or []
                   for v in e["variants"]}
    return rooms, mountpoints


def _publisher(p: PublisherSession) -> Record:
    assert p.backend is not None
    return {
        "id": p.id, "etag": p.etag, "offer": str(p.offer), "node": p.node_name,
        "state": p.state.value, "receiving": p.receiving, "remote_ufrag": p.remote_ufrag,
        "remote_pwd": p.remote_pwd, "created_age": time.monotonic() - p.created_at,
        "janus": takeover.publisher_record(p.backend),
    }


def _egress(e: StreamEgress, publisher: PublisherSession | None) -> Record:
    return {
        "node": e.node.name, "signature": takeover.media_record(e.signature),
        "variants": [{
            "key": [list(pair) for pair in v.key],
            "mountpoint": takeover.mountpoint_record(v.mountpoint),
            "forwarders": v.forwarders,
            # fed by the current publisher (forwarders of an older one died with it)
            "fed": publisher is not None and v.fed_by is publisher.backend,
        } for v in e.variants.values()],
    }


def _viewer(v: ViewerSession, egress: Egress) -> Record:
    return {
        "id": v.id, "etag": v.etag, "mode": v.mode.value, "node": v.egress.node.name,
        "variant": [list(pair) for pair in v.variant.key], "answer": v.answer,
        "bridged": None if v.bridged is None else {
            "viewer_answer": v.bridged.viewer_answer, "janus_answer": v.bridged.janus_answer,
            "viewer_mids": v.bridged.viewer_mids, "viewer_bundle_mid": v.bridged.viewer_bundle_mid,
            "janus_bundle_mid": v.bridged.janus_bundle_mid},
        "janus_mid": v.janus_mid, "connected": v.connected, "awaiting_answer": v.awaiting_answer,
        "answer_valid_for": v.answer_valid_for, "simulcast_rids": v.simulcast_rids,
        "remote_ufrag": v.remote_ufrag, "video_mindex": v.video_mindex,
        "viewer_offer": v.viewer_offer,
        "events": [{"id": s.id, "names": sorted(s.names)} for s in egress.events.hub.of_viewer(v.id)],
        "janus": takeover.viewer_record(v.viewer),
    }


# -- taking a stream over -----------------------------------------------------------


class Restored:
    """What a takeover rebuilt, and the Janus objects it could not (to free)."""

    def __init__(self) -> None:
        self.publisher: PublisherSession | None = None
        self.viewers: list[ViewerSession] = []
        self.lost_rooms: list[tuple[JanusNode, int]] = []


def restore(record: Record, nodes: dict[str, JanusNode], sessions: takeover.Sessions,
            ingest: Ingest, egress: Egress) -> Restored:
    """Rebuild a stream another replica owned, on the Janus sessions now ours.

    A publisher or viewer whose Janus session could not be taken over (it
    timed out) is not rebuilt: its PeerConnection is gone.  Mountpoints are
    rebuilt whatever happened, and let go as usual once nobody watches.
    """
    stream = str(record["stream"])
    out = Restored()
    pub = record.get("publisher")
    if pub is not None:
        node = nodes.get(pub["janus"]["node"])
        session = sessions.get(int(pub["janus"]["session"]))
        if node is None:
            log.warning("stream %s: node %s is unknown here; publisher not taken over", stream,
                        pub["janus"]["node"])
        elif session is None:
            out.lost_rooms.append((node, int(pub["janus"]["room"])))
        else:
            publisher_node, publisher_janus = node, session
            publisher = PublisherSession(
                stream=stream, offer=sdp.parse(pub["offer"]), id=pub["id"], etag=pub["etag"],
                node_name=pub["node"], state=PublisherState(pub["state"]),
                receiving=dict(pub["receiving"]), remote_ufrag=pub["remote_ufrag"],
                remote_pwd=pub["remote_pwd"])
            publisher.created_at = time.monotonic() - float(pub["created_age"])
            since = (record.get("summary") or {}).get("publisher") or {}
            if "since" in since:
                publisher.state_since = time.monotonic() - max(0.0, time.time() - float(since["since"]))

            def room(observer: PeerObserver) -> Any:
                return takeover.restore_publisher(publisher_node, publisher_janus, pub["janus"],
                                                  observer)

            ingest.adopt(publisher, room)
            out.publisher = publisher
    variants: dict[tuple[str, tuple[tuple[str, int], ...]], Variant] = {}
    for entry in record.get("egress") or []:
        node = nodes.get(entry["node"])
        if node is None:
            continue
        stream_egress = StreamEgress(stream=stream, node=node,
                                     signature=takeover.restore_media(entry["signature"]))
        for v in entry["variants"]:
            key = tuple((str(kind), int(pt)) for kind, pt in v["key"])
            variant = Variant(key=key, mountpoint=takeover.restore_mountpoint(node, v["mountpoint"]),
                              forwarders=[int(f) for f in v["forwarders"]])
            if v["fed"] and out.publisher is not None:
                variant.fed_by = out.publisher.backend
            stream_egress.variants[key] = variant
            variants[(node.name, key)] = variant
        egress.mountpoints.adopt(stream_egress)
    for v in record.get("viewers") or []:
        node = nodes.get(v["janus"]["node"])
        session = sessions.get(int(v["janus"]["session"]))
        key = tuple((str(kind), int(pt)) for kind, pt in v["variant"])
        watched = variants.get((str(v["node"]), key))
        if node is None or session is None or watched is None:
            continue
        stream_egress = next(e for e in egress.mountpoints.egresses(stream) if e.node is node)
        out.viewers.append(_restore_viewer(v, stream, node, session, stream_egress, watched, egress))
    # Variants nobody watches any more go after the grace period, as usual.
    for stream_egress in egress.mountpoints.egresses(stream):
        for variant in list(stream_egress.variants.values()):
            egress.mountpoints.release(stream_egress, variant)
    return out


def _restore_viewer(v: Record, stream: str, node: JanusNode, session: takeover.Session,
                    stream_egress: StreamEgress, variant: Variant, egress: Egress) -> ViewerSession:
    bridged = v.get("bridged")

    def build(observer: PeerObserver) -> ViewerSession:
        return ViewerSession(
            stream=stream, mode=ViewerMode(v["mode"]), egress=stream_egress, variant=variant,
            viewer=takeover.restore_viewer(node, session, v["janus"], observer),
            id=v["id"], etag=v["etag"], answer=v["answer"],
            bridged=None if bridged is None else sdp_bridge.Bridged(**bridged),
            janus_mid=v["janus_mid"], connected=bool(v["connected"]),
            awaiting_answer=bool(v["awaiting_answer"]),
            answer_valid_for=float(v["answer_valid_for"]),
            simulcast_rids=list(v["simulcast_rids"]), remote_ufrag=v["remote_ufrag"],
            video_mindex=v["video_mindex"], viewer_offer=v["viewer_offer"])

    viewer = egress.adopt(build)
    for events in v.get("events") or []:
        egress.events.hub.restore(stream, viewer.id, list(events["names"]), str(events["id"]))
    return viewer
