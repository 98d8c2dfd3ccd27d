"""Mountpoint variants and the forwarders that feed them.

Per stream and node there is one ``StreamEgress``.  It holds mountpoint
*variants*, one per set of payload types that viewers need (a mountpoint
rewrites RTP to its configured PTs, and a viewer only decodes the PTs it
offered); each variant is fed by its own ``rtp_forward`` from the current
publisher.  The first viewer needing a variant creates it, the last one
leaving lets it go (after a short grace period, or when the publisher
leaves).  When the publisher reconnects with the same codecs, the
forwarders are re-made into the same mountpoints, so viewers keep playing
without a new POST; with other codecs, the viewers are told to reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Mapping, Protocol

from gateway import probes
from gateway.core.streams import (
    PublisherChange,
    PublisherSession,
    PublisherState,
    StreamRegistry,
)
from gateway.core.viewers import Background, EgressPolicy, StreamEgress, Variant
from gateway.errors import GatewayError, StreamNotLive
from gateway.janus.node import JanusNode
from gateway.janus.streaming import MediaSpec, Mountpoint
from gateway.sdp import model as sdp

log = logging.getLogger(__name__)


class ViewerEvictor(Protocol):
    """Ends every viewer of a stream's egress (they are told to reconnect)."""

    async def evict(self, egress: StreamEgress, reason: str) -> None: ...


class Mountpoints:
    def __init__(self, registry: StreamRegistry, policy: EgressPolicy, evictor: ViewerEvictor,
                 background: Background) -> None:
        self.registry = registry
        self.policy = policy
        self.evictor = evictor
        self.background = background
        self._egress: dict[tuple[str, str], StreamEgress] = {}  # (stream, node name)
        registry.subscribe(self)

    async def stream_egress(self, stream: str, node: JanusNode,
                            publisher: PublisherSession) -> StreamEgress:
        """The stream's egress on ``node``, made anew if the publisher's codecs changed."""
        signature = media_signature(publisher)
        egress = self._egress.get((stream, node.name))
        if egress is not None and egress.signature != signature:
            await self._reset(egress, "the publisher changed codecs")
            egress = None
        if egress is None:
            egress = StreamEgress(stream=stream, node=node, signature=signature)
            self._egress[(stream, node.name)] = egress
        return egress

    @probes.timed("egress.variant")
    async def acquire(self, egress: StreamEgress, pts: Mapping[str, int],
                      publisher: PublisherSession) -> Variant:
        """The variant sending ``pts`` (kind -> payload type), made and fed if new."""
        key = tuple(sorted(pts.items()))
        async with egress.lock:
            variant = egress.variants.get(key)
            if variant is not None:
                return variant
            media = [m for m in egress.signature if m.kind in pts]
            mountpoint = await Mountpoint.create(egress.node, media, pts, label=egress.stream,
                                                 threads=self.policy.mountpoint_threads,
                                                 buffer_keyframe=self.policy.buffer_keyframe)
            variant = Variant(key=key, mountpoint=mountpoint)
            egress.variants[key] = variant
            try:
                await self._feed(variant, publisher)
            except GatewayError:
                del egress.variants[key]
                await mountpoint.destroy()
                self._forget_if_empty(egress)
                raise
            log.info("stream %s: mountpoint %s on %s for PTs %s", egress.stream, mountpoint.id,
                     egress.node.name, dict(key))
            return variant

    def has(self, stream: str, node: JanusNode) -> bool:
        """Whether ``node`` holds a mountpoint of ``stream`` (placement prefers it)."""
        egress = self._egress.get((stream, node.name))
        return egress is not None and bool(egress.variants)

    async def drop_node(self, node: JanusNode) -> None:
        """The node leaves the pool: destroy its mountpoints and stop the
        forwarders that fed them (its viewers were ended first)."""
        for key in [k for k, e in self._egress.items() if e.node is node]:
            egress = self._egress.pop(key)
            for variant in list(egress.variants.values()):
                variant.viewers.clear()
                await self._drop(egress, variant)

    def egresses(self, stream: str) -> list[StreamEgress]:
        """The stream's egress on every node (what a replica writes down)."""
        return self._of_stream(stream)

    def streams(self) -> set[str]:
        return {s for s, _ in self._egress}

    def adopt(self, egress: StreamEgress) -> None:
        """Mountpoints another gateway replica made, taken over (``core.cluster``)."""
        self._egress[(egress.stream, egress.node.name)] = egress

    def in_use(self, variant: Variant) -> None:
        """A viewer joined: the variant is no longer idle."""
        if variant.idle is not None:
            variant.idle.cancel()
            variant.idle = None

    def release(self, egress: StreamEgress, variant: Variant) -> None:
        """Drop a variant with no viewers after the grace period, but keep it
        while its publisher is live: the next viewer then finds a mountpoint
        (and, with ``mountpoint_buffer_keyframe``, a keyframe) waiting."""
        if variant.viewers or variant.idle is not None:
            return
        publisher = self.registry.publisher_of(egress.stream)
        if (self.policy.keep_variants_while_live and publisher is not None
                and publisher.state is PublisherState.LIVE):
            return
        loop = asyncio.get_running_loop()
        variant.idle = loop.call_later(self.policy.mountpoint_grace,
                                       lambda: self.background.spawn(self._drop(egress, variant)))

    async def settled(self) -> None:
        """Drop every variant without viewers now (tests and shutdown)."""
        for egress in list(self._egress.values()):
            for variant in list(egress.variants.values()):
                if not variant.viewers:
                    await self._drop(egress, variant)

    # -- publisher and node events ------------------------------------------

    def publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        stream = publisher.stream
        if change is PublisherChange.PUBLISHED:
            for egress in self._of_stream(stream):
                self.background.spawn(self._refeed(egress, publisher))
        elif change is PublisherChange.ENDED:
            for egress in self._of_stream(stream):
                for variant in egress.variants.values():
                    if variant.fed_by is publisher.backend:
                        variant.fed_by, variant.forwarders = None, []
                    self.release(egress, variant)

    def node_down(self, node: JanusNode) -> None:
        """Its mountpoints died with it: forget them (their viewers end apart)."""
        for key in [k for k, e in self._egress.items() if e.node is node]:
            egress = self._egress.pop(key)
            for variant in egress.variants.values():
                variant.viewers.clear()
                if variant.idle is not None:
                    variant.idle.cancel()
                variant.mountpoint.forget()
                if variant.fed_by is not None and variant.fed_by.node is not node:
                    # The publisher lives on: stop forwarding to a dead mountpoint.
                    self.background.spawn(variant.fed_by.stop_forward(variant.forwarders))
                    variant.fed_by, variant.forwarders = None, []

    # -- internals ------------------------------------------------------------

    def _of_stream(self, stream: str) -> list[StreamEgress]:
        return [e for (s, _), e in self._egress.items() if s == stream]

    async def _feed(self, variant: Variant, publisher: PublisherSession) -> None:
        """Point the publisher's forwarders at the variant's mountpoint."""
        backend = publisher.backend
        if backend is None:
            return
        try:
            variant.forwarders = await backend.forward_to(variant.mountpoint)
        except GatewayError as exc:
            if publisher.state is not PublisherState.LIVE:  # it left while we set up
                raise StreamNotLive(f"stream {publisher.stream!r} has no live publisher") from exc
            raise
        variant.fed_by = backend

    async def _refeed(self, egress: StreamEgress, publisher: PublisherSession) -> None:
        """A new publisher on the stream: same codecs → same mountpoints, new forwarders."""
        if media_signature(publisher) != egress.signature:
            await self._reset(egress, "the new publisher uses other codecs")
            return
        async with egress.lock:
            for variant in egress.variants.values():
                try:
                    await self._feed(variant, publisher)
                except GatewayError as exc:
                    log.warning("stream %s: re-forward failed: %s", egress.stream, exc.detail)
        log.info("stream %s: %d mountpoint(s) now fed by publisher %s", egress.stream,
                 len(egress.variants), publisher.id[:8])

    async def _drop(self, egress: StreamEgress, variant: Variant) -> None:
        if variant.viewers or egress.variants.get(variant.key) is not variant:
            return
        del egress.variants[variant.key]
        if variant.idle is not None:
            variant.idle.cancel()
        if variant.fed_by is not None:
            await variant.fed_by.stop_forward(variant.forwarders)
        await variant.mountpoint.destroy()
        log.info("stream %s: mountpoint %s removed", egress.stream, variant.mountpoint.id)
        self._forget_if_empty(egress)

    def _forget_if_empty(self, egress: StreamEgress) -> None:
        if not egress.variants and self._egress.get((egress.stream, egress.node.name)) is egress:
            del self._egress[(egress.stream, egress.node.name)]

    async def _reset(self, egress: StreamEgress, reason: str) -> None:
        """Drop every viewer and mountpoint of ``egress``; players are told to reconnect."""
        self._egress.pop((egress.stream, egress.node.name), None)
        await self.evictor.evict(egress, reason)
        for variant in list(egress.variants.values()):
            variant.viewers.clear()
            await self._drop(egress, variant)


def media_signature(publisher: PublisherSession) -> tuple[MediaSpec, ...]:
    """What a mountpoint for this publisher must carry, per kind (worked out
    once per publisher: every viewer's POST asks).  H.264 keeps the format
    (profile, packetization mode) Janus answered the publisher with."""
    backend = publisher.backend
    if backend is None:
        return ()
    if publisher.media_signature is not None:
        return publisher.media_signature
    try:
        answer = sdp.parse(backend.answer)
    except sdp.SdpError:
        answer = None
    out = []
    for stream in backend.streams:
        if stream.kind not in ("audio", "video") or not stream.codec:
            continue
        fmtp = None
        if answer is not None and stream.codec == "h264":
            for media in answer.media:
                if media.mid == stream.mid:
                    codecs = [c for c in media.codecs() if c.key == "h264"]
                    fmtp = codecs[0].fmtp if codecs else None
        out.append(MediaSpec(stream.kind, stream.codec, fmtp, stream.simulcast))
    publisher.media_signature = tuple(out)
    return publisher.media_signature
