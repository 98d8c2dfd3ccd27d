"""WHEP egress: viewers on Streaming mountpoints fed by the publisher's forwarders.

Per stream and node there is one ``StreamEgress``.  It holds mountpoint
*variants*, one per set of payload types that viewers need (a mountpoint
rewrites RTP to its configured PTs, and a viewer only decodes the PTs it
offered); each variant is fed by its own ``rtp_forward`` from the current
publisher.  The first viewer needing a variant creates it, the last one
leaving removes it (after a short grace period).  When the publisher
reconnects, the forwarders are re-made into the same mountpoints, so
viewers keep playing without a new POST.

How a viewer's offer reaches Janus depends on the node: ``native`` (a node
that takes the viewer's offer on ``watch``) or ``bridged`` (Janus 1.1.2
makes its own offer and ``gateway.sdp.bridge`` writes both answers).  Counter-offer mode (draft-03 406) hands Janus's offer to the
viewer as it is.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from gateway.core import layers
from gateway.sdp import model as sdp
from gateway.sdp import bridge as sdp_bridge
from gateway.core.auth import StreamKeys
from gateway.errors import (
    GatewayError,
    MalformedSdp,
    ResourceNotFound,
    StreamNotLive,
    UnsupportedMedia,
    UnsupportedPatch,
)
from gateway.core.events import EventHub
from gateway.core.ingest import Ingest, check_port_counts
from gateway.janus.node import JanusNode
from gateway.janus.streaming import MediaSpec, Mountpoint, StreamingViewer, payload_types
from gateway.core.placement import NodePool
from gateway.core.streams import PublisherChange, PublisherSession, PublisherState, new_etag
from gateway.core.viewers import StreamEgress, Variant, VariantKey, ViewerMode, ViewerSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EgressPolicy:
    viewer_connect_timeout: float = 15.0
    counter_offer_validity: float = 30.0
    mountpoint_grace: float = 3.0
    mountpoint_threads: int = 0
    janus_timeout: float = 6.0
    layers_interval: float = 2.0
    viewercount_interval: float = 1.0
    keep_variants_while_live: bool = True
    buffer_keyframe: bool = True


class _ViewerPeer:
    """A viewer's PeerConnection events, for the session once it exists."""

    def __init__(self, egress: Egress) -> None:
        self.egress = egress
        self.session: ViewerSession | None = None

    def peer_connected(self) -> None:
        if self.session is not None and not self.session.ended:
            self.egress.connected(self.session)

    def peer_media(self, mid: str, receiving: bool) -> None:
        pass  # a viewer sends no media

    def peer_gone(self, reason: str) -> None:
        if self.session is not None and not self.session.ended:
            self.egress.gone(self.session, reason)


class Egress:
    def __init__(self, pool: NodePool, ingest: Ingest, keys: StreamKeys, events: EventHub,
                 policy: EgressPolicy) -> None:
        self.pool = pool
        self.ingest = ingest
        self.keys = keys
        self.events = events
        self.policy = policy
        self._egress: dict[tuple[str, str], StreamEgress] = {}  # (stream, node name)
        self._viewers: dict[str, ViewerSession] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._layers: dict[str, list[dict[str, Any]]] = {}  # last known, by stream
        self._layers_task: asyncio.Task[None] | None = None
        self._count_pending: set[str] = set()
        ingest.on_change(self._publisher_changed)
        for node in pool.nodes:
            node.observe(self)

    # -- requests ---------------------------------------------------------

    def authorize(self, stream: str, token: str | None) -> None:
        self.keys.check(stream, token)

    def session(self, stream: str, session_id: str) -> ViewerSession:
        found = self._viewers.get(session_id)
        if found is None or found.stream != stream or found.ended:
            raise ResourceNotFound("no such WHEP session")
        return found

    def viewer_count(self, stream: str) -> int:
        return sum(1 for v in self._viewers.values() if v.stream == stream and not v.ended)

    def publisher_live(self, stream: str) -> bool:
        publisher = self.ingest.registry.publisher_of(stream)
        return publisher is not None and publisher.state is PublisherState.LIVE

    async def view(self, stream: str, offer_text: str) -> ViewerSession:
        """A standard WHEP POST: the viewer's offer in, our answer out (201)."""
        try:
            offer = sdp.parse(offer_text)
        except sdp.SdpError as exc:
            raise MalformedSdp(f"the offer is not valid SDP: {exc}") from None
        _check_viewer_offer(offer)
        publisher = self._live_publisher(stream)
        available = _signature(publisher)
        try:
            choices = sdp_bridge.choose_codecs(offer, [(m.kind, m.codec, m.fmtp) for m in available])
        except sdp_bridge.BridgeError as exc:
            raise UnsupportedMedia(str(exc)) from None
        except sdp.SdpError as exc:  # e.g. one mid on two m-lines
            raise MalformedSdp(f"the offer cannot be used: {exc}") from None
        node = self._node_for_viewer()
        mode = ViewerMode.NATIVE if node.takes_viewer_offers else ViewerMode.BRIDGED
        key = tuple(sorted((kind, c.payload_type) for kind, c in choices.items()))
        return await self._attach_viewer(stream, node, publisher, key, mode, offer_text, offer)

    async def counter_offer(self, stream: str) -> ViewerSession:
        """Draft-03 counter-offer (406): Janus's own offer goes to the viewer."""
        publisher = self._live_publisher(stream)
        node = self._node_for_viewer()
        key = tuple(sorted(payload_types(m.kind for m in _signature(publisher)).items()))
        return await self._attach_viewer(stream, node, publisher, key, ViewerMode.COUNTER_OFFER,
                                         None, None)

    async def patch(self, session: ViewerSession, content_type: str, body: str) -> str | None:
        """PATCH: the viewer's answer (counter-offer mode), trickled candidates,
        or an ICE restart; only the last returns something (our sdpfrag)."""
        if content_type == "application/sdp":
            await self._accept_answer(session, body)
            return None
        try:
            fragment = sdp.parse_fragment(body)
        except sdp.SdpError as exc:
            raise MalformedSdp(f"bad trickle-ice-sdpfrag: {exc}") from None
        remote_ufrag = session.remote_ufrag
        if fragment.ice_ufrag and remote_ufrag and fragment.ice_ufrag != remote_ufrag:
            return await self._restart_ice(session, fragment)
        candidates = fragment.candidates_for_ufrag(remote_ufrag)
        if session.bridged is not None:
            keep = set(sdp_bridge.map_trickle_candidates(fragment.candidates, session.bridged))
            candidates = [c for c in candidates if c in keep]
        await session.viewer.trickle(session.janus_mid, candidates, fragment.end_of_candidates)
        return None

    async def _restart_ice(self, session: ViewerSession, fragment: sdp.SdpFragment) -> str:
        """ICE restart on the bridged path: Janus offers anew (``watch`` with
        restart), both answers are written again with the viewer's new
        credentials, and the viewer gets Janus's new ones as an sdpfrag.
        Native and counter-offer sessions have no offer of the viewer's to
        rewrite, so they answer 422 (RFC 9725 section 4.3.1 rules)."""
        if session.mode is not ViewerMode.BRIDGED or session.viewer_offer is None:
            raise UnsupportedPatch(f"ICE restarts are not supported for {session.mode.value} "
                                   "WHEP sessions")
        offer = sdp.after_ice_restart(sdp.parse(session.viewer_offer), fragment)
        timeout = self.policy.janus_timeout
        try:
            janus_offer = await session.viewer.watch(restart=True, timeout=timeout)
            bridged = sdp_bridge.bridge(janus_offer, offer)
            await session.viewer.start(bridged.janus_answer, client_sdp=True, timeout=timeout)
            reply = sdp.fragment_of(sdp.parse(bridged.viewer_answer))
        except (sdp.SdpError, sdp_bridge.BridgeError) as exc:
            raise UnsupportedPatch(f"the ICE restart could not be bridged: {exc}") from None
        session.bridged, session.answer, session.viewer_offer = bridged, bridged.viewer_answer, str(offer)
        session.remote_ufrag = fragment.ice_ufrag
        session.etag = new_etag()
        return reply

    async def end(self, session: ViewerSession, reason: str = "DELETE by the client") -> None:
        if session.ended:
            return
        session.ended = True
        self._viewers.pop(session.id, None)
        if session.timer is not None:
            session.timer.cancel()
        self.events.close_viewer(session.id)
        log.info("stream %s: viewer %s ended: %s", session.stream, session.id[:8], reason)
        await session.viewer.close()
        variant = session.variant
        variant.viewers.discard(session.id)
        if not variant.viewers:
            self._schedule_idle(session.egress, variant)
        self._announce_count(session.stream)

    async def select_layer(self, session: ViewerSession, request: dict[str, Any]) -> None:
        """Layer selection extension: rid / spatialLayerId / temporalLayerId, or automatic."""
        if not any(m.simulcast for m in session.egress.signature):
            if not {"rid", "spatialLayerId", "temporalLayerId", "maxWidth", "maxHeight"} & request.keys():
                return  # back to automatic: there is only one layer, so nothing to do
            raise UnsupportedMedia("the publisher sends no simulcast layers to choose from")
        try:
            choice = layers.choose(request, session.simulcast_rids)
        except ValueError as exc:
            raise UnsupportedMedia(str(exc)) from None
        await session.viewer.select_layer(choice.spatial, choice.temporal)

    async def settled(self) -> None:
        """Finish pending teardowns now (tests and shutdown use this)."""
        for egress in list(self._egress.values()):
            for variant in list(egress.variants.values()):
                if not variant.viewers:
                    await self._drop_variant(egress, variant)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def start(self) -> None:
        self._layers_task = asyncio.create_task(self._layers_loop(), name="whep-layers")

    async def close(self) -> None:
        if self._layers_task is not None:
            self._layers_task.cancel()
            await asyncio.gather(self._layers_task, return_exceptions=True)
        await asyncio.gather(*(self.end(v, "gateway stopping") for v in list(self._viewers.values())))
        await self.settled()

    def layers_event(self, session: ViewerSession) -> dict[str, Any] | None:
        """The last ``layers`` data for this viewer (keyed by its video m-line)."""
        known = self._layers.get(session.stream)
        return {session.video_mindex: known} if known else None

    # -- set-up -----------------------------------------------------------

    def _live_publisher(self, stream: str) -> PublisherSession:
        publisher = self.ingest.registry.publisher_of(stream)
        if publisher is None or publisher.backend is None or publisher.state is not PublisherState.LIVE:
            raise StreamNotLive(f"stream {stream!r} has no live publisher")
        return publisher

    def _node_for_viewer(self) -> JanusNode:
        return self.pool.for_viewer()

    async def _attach_viewer(self, stream: str, node: JanusNode, publisher: PublisherSession,
                             key: VariantKey, mode: ViewerMode, offer: str | None,
                             parsed: sdp.SessionDescription | None) -> ViewerSession:
        egress = await self._stream_egress(stream, node, publisher)
        variant = await self._variant(egress, key, publisher)
        viewer: StreamingViewer | None = None
        peer = _ViewerPeer(self)
        try:
            session_ref: list[ViewerSession] = []
            viewer = await StreamingViewer.attach(node, variant.mountpoint.id, peer)
            session = ViewerSession(stream=stream, mode=mode, egress=egress, variant=variant,
                                    viewer=viewer, simulcast_rids=layers.rids(publisher.offer))
            peer.session = session
            session_ref.append(session)
            variant.viewers.add(session.id)
            if parsed is not None:
                session.remote_ufrag = parsed.ice_credentials()[0]
                session.video_mindex = _video_mindex(parsed)
            if mode is ViewerMode.NATIVE:
                session.answer = await viewer.watch(offer=offer, timeout=self.policy.janus_timeout)
                session.janus_mid = _first_mid(session.answer)
            elif mode is ViewerMode.BRIDGED:
                janus_offer = await viewer.watch(timeout=self.policy.janus_timeout)
                # A_j carries the viewer's transport (ICE, fingerprint, candidates)
                # as it came: Janus refusing it is the viewer's 400, not a 502.
                assert parsed is not None
                bridged = sdp_bridge.bridge(janus_offer, parsed)
                await viewer.start(bridged.janus_answer, client_sdp=True,
                                   timeout=self.policy.janus_timeout)
                session.bridged, session.answer = bridged, bridged.viewer_answer
                session.viewer_offer = offer
                session.janus_mid = bridged.janus_bundle_mid
            else:
                session.answer = await viewer.watch(timeout=self.policy.janus_timeout)
                session.janus_mid = _first_mid(session.answer)
                session.video_mindex = _video_mindex(sdp.parse(session.answer))
                session.awaiting_answer = True
        except BaseException as exc:
            if viewer is not None:
                await viewer.close()
            if session_ref:
                variant.viewers.discard(session_ref[0].id)
            if not variant.viewers:
                self._schedule_idle(egress, variant)
            if isinstance(exc, sdp_bridge.BridgeError):
                raise UnsupportedMedia(str(exc)) from None
            if isinstance(exc, sdp.SdpError):
                raise MalformedSdp(f"the offer cannot be used: {exc}") from None
            raise
        self._viewers[session.id] = session
        if variant.idle is not None:
            variant.idle.cancel()
            variant.idle = None
        limit = (self.policy.counter_offer_validity if session.awaiting_answer
                 else self.policy.viewer_connect_timeout)
        self._arm(session, limit, "the viewer never connected")
        self._announce_count(stream)
        log.info("stream %s: viewer %s (%s) on %s, mountpoint %s", stream, session.id[:8],
                 mode.value, node.name, variant.mountpoint.id)
        return session

    async def _accept_answer(self, session: ViewerSession, answer_text: str) -> None:
        if not session.awaiting_answer:
            raise UnsupportedPatch("this session is not waiting for an SDP answer")
        try:
            answer = sdp.parse(answer_text)
        except sdp.SdpError as exc:
            raise MalformedSdp(f"the answer is not valid SDP: {exc}") from None
        if any(m.direction in ("sendonly", "sendrecv") for m in answer.media if not m.rejected):
            raise UnsupportedMedia("a WHEP player's answer must be recvonly")
        await session.viewer.start(answer_text, client_sdp=True, timeout=self.policy.janus_timeout)
        session.awaiting_answer = False
        session.remote_ufrag = answer.ice_credentials()[0]
        self._arm(session, self.policy.viewer_connect_timeout, "the viewer never connected")

    async def _stream_egress(self, stream: str, node: JanusNode,
                             publisher: PublisherSession) -> StreamEgress:
        signature = _signature(publisher)
        egress = self._egress.get((stream, node.name))
        if egress is not None and egress.signature != signature:
            await self._reset(egress, "the publisher changed codecs")
            egress = None
        if egress is None:
            egress = StreamEgress(stream=stream, node=node, signature=signature)
            self._egress[(stream, node.name)] = egress
        return egress

    async def _variant(self, egress: StreamEgress, key: VariantKey,
                       publisher: PublisherSession) -> Variant:
        async with egress.lock:
            variant = egress.variants.get(key)
            if variant is not None:
                return variant
            pts = dict(key)
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
                if not egress.variants and self._egress.get((egress.stream, egress.node.name)) is egress:
                    del self._egress[(egress.stream, egress.node.name)]
                raise
            log.info("stream %s: mountpoint %s on %s for PTs %s", egress.stream, mountpoint.id,
                     egress.node.name, dict(key))
            return variant

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

    # -- teardown ---------------------------------------------------------

    def _schedule_idle(self, egress: StreamEgress, variant: Variant) -> None:
        """Drop a variant with no viewers after the grace period, but keep it
        while its publisher is live: the next viewer then finds a mountpoint
        (and, with ``mountpoint_buffer_keyframe``, a keyframe) waiting."""
        if variant.idle is not None:
            return
        if self.policy.keep_variants_while_live and self.publisher_live(egress.stream):
            return
        loop = asyncio.get_running_loop()
        variant.idle = loop.call_later(self.policy.mountpoint_grace,
                                       lambda: self._spawn(self._drop_variant(egress, variant)))

    async def _drop_variant(self, egress: StreamEgress, variant: Variant) -> None:
        if variant.viewers or egress.variants.get(variant.key) is not variant:
            return
        del egress.variants[variant.key]
        if variant.idle is not None:
            variant.idle.cancel()
        if variant.fed_by is not None:
            await variant.fed_by.stop_forward(variant.forwarders)
        await variant.mountpoint.destroy()
        log.info("stream %s: mountpoint %s removed", egress.stream, variant.mountpoint.id)
        if not egress.variants and self._egress.get((egress.stream, egress.node.name)) is egress:
            del self._egress[(egress.stream, egress.node.name)]

    async def _reset(self, egress: StreamEgress, reason: str) -> None:
        """Drop every viewer and mountpoint of ``egress``; players are told to reconnect."""
        self._egress.pop((egress.stream, egress.node.name), None)
        viewers = [v for v in self._viewers.values() if v.egress is egress]
        for viewer in viewers:
            self.events.send_to_viewer(viewer.id, "reconnect", {})
        await asyncio.gather(*(self.end(v, reason) for v in viewers))
        for variant in list(egress.variants.values()):
            variant.viewers.clear()
            await self._drop_variant(egress, variant)

    # -- events -----------------------------------------------------------

    def _publisher_changed(self, publisher: PublisherSession, change: PublisherChange) -> None:
        stream = publisher.stream
        if change is PublisherChange.PUBLISHED:
            for egress in [e for (s, _), e in self._egress.items() if s == stream]:
                self._spawn(self._refeed(egress, publisher))
        elif change is PublisherChange.LIVE:
            self.events.publish(stream, "active", {})
        elif change in (PublisherChange.STALLED, PublisherChange.ENDED):
            if self.ingest.registry.publisher_of(stream) in (None, publisher):
                self.events.publish(stream, "inactive", {})
            if change is PublisherChange.ENDED:
                for egress in [e for (s, _), e in self._egress.items() if s == stream]:
                    for variant in egress.variants.values():
                        if variant.fed_by is publisher.backend:
                            variant.fed_by, variant.forwarders = None, []
                        if not variant.viewers:
                            self._schedule_idle(egress, variant)

    async def _refeed(self, egress: StreamEgress, publisher: PublisherSession) -> None:
        """A new publisher on the stream: same codecs → same mountpoints, new forwarders."""
        if _signature(publisher) != egress.signature:
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

    def connected(self, session: ViewerSession) -> None:
        session.connected = True
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None

    def gone(self, session: ViewerSession, reason: str) -> None:
        self._spawn(self.end(session, f"Janus: {reason}"))

    async def _layers_loop(self) -> None:
        """Every few seconds, tell viewers of simulcast streams what each layer carries."""
        while True:
            await asyncio.sleep(self.policy.layers_interval)
            for stream in {v.stream for v in self._viewers.values()}:
                publisher = self.ingest.registry.publisher_of(stream)
                if publisher is None or publisher.backend is None or not layers.rids(publisher.offer):
                    self._layers.pop(stream, None)
                    continue
                try:
                    bitrates = await publisher.backend.substream_bitrates()
                except GatewayError as exc:
                    log.debug("stream %s: no layer stats: %s", stream, exc.detail)
                    continue
                if not bitrates:
                    continue
                described = layers.describe(layers.rids(publisher.offer),
                                            next(iter(bitrates.values())))
                self._layers[stream] = described
                for viewer in [v for v in self._viewers.values() if v.stream == stream]:
                    self.events.send_to_viewer(viewer.id, "layers",
                                               {viewer.video_mindex: described})

    def _announce_count(self, stream: str) -> None:
        """Tell listeners the viewer count, at most once a second per stream:
        a thousand joins must not send a million events."""
        if stream in self._count_pending:
            return
        loop = asyncio.get_running_loop()

        def send() -> None:
            self._count_pending.discard(stream)
            self.events.publish(stream, "viewercount", {"viewercount": self.viewer_count(stream)})

        self._count_pending.add(stream)
        loop.call_later(self.policy.viewercount_interval, send)

    def node_down(self, node: JanusNode) -> None:
        for viewer in [v for v in self._viewers.values() if v.egress.node is node]:
            self.events.send_to_viewer(viewer.id, "reconnect", {})
            self._spawn(self.end(viewer, f"node {node.name} went down"))
        for key in [k for k, e in self._egress.items() if e.node is node]:
            egress = self._egress.pop(key)
            for variant in egress.variants.values():
                variant.viewers.clear()
                if variant.idle is not None:
                    variant.idle.cancel()
                variant.mountpoint.forget()  # it died with the node

    def _arm(self, session: ViewerSession, delay: float, reason: str) -> None:
        """End the session after ``delay`` unless it connected (and answered) by then."""
        if session.timer is not None:
            session.timer.cancel()
        session.timer = asyncio.get_running_loop().call_later(delay, self._expire, session, reason)

    def _expire(self, session: ViewerSession, reason: str) -> None:
        if session.awaiting_answer or not session.connected:
            self._spawn(self.end(session, reason))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _check_viewer_offer(offer: sdp.SessionDescription) -> None:
    """WHEP draft-03, Media Direction Attributes: recvonly (or sendrecv) only."""
    check_port_counts(offer)
    active = [m for m in offer.media if not m.rejected and m.kind in ("audio", "video")]
    if not active:
        raise UnsupportedMedia("the offer has no audio or video to receive")
    for media in active:
        if media.direction in ("sendonly", "inactive"):
            raise UnsupportedMedia(f"a WHEP offer must be recvonly or sendrecv, not {media.direction}")
    ufrag, pwd = offer.ice_credentials()
    if not ufrag or not pwd or not offer.fingerprint():
        raise MalformedSdp("the offer lacks ICE credentials or a DTLS fingerprint")


def _signature(publisher: PublisherSession) -> tuple[MediaSpec, ...]:
    """What a mountpoint for this publisher must carry, per kind (worked out
    once per publisher: every viewer's POST asks)."""
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


def _video_mindex(desc: sdp.SessionDescription) -> str:
    kinds = [m.kind for m in desc.media]
    return str(kinds.index("video")) if "video" in kinds else "0"


def _first_mid(text: str) -> str:
    try:
        return sdp.parse(text).media[0].mid or "a"
    except (sdp.SdpError, IndexError):
        return "a"



