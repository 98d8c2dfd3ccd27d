"""WHEP egress: what a viewer's requests do.

A viewer watches a Streaming mountpoint variant (``mountpoints.py``) fed by
the publisher's forwarders.  How a viewer's offer reaches Janus depends on
the node: ``native`` (a node that takes the viewer's offer on ``watch``) or
``bridged`` (Janus 1.1.2 makes its own offer and ``gateway.sdp.bridge``
writes both answers).  Counter-offer mode (draft-03 406) hands Janus's
offer to the viewer as it is.  Event streams are ``stream_events.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from gateway.core import layers
from gateway import probes
from gateway.core import offers
from gateway.core.auth import StreamKeys
from gateway.core.events import EventHub, EventStream
from gateway.core.mountpoints import Mountpoints, media_signature
from gateway.core.placement import BitrateMeter, NodePool
from gateway.core.stream_events import StreamEvents
from gateway.core.streams import PublisherSession, PublisherState, StreamRegistry, new_etag
from gateway.core.viewers import (
    Background,
    EgressPolicy,
    StreamEgress,
    ViewerBook,
    ViewerMode,
    ViewerSession,
)
from gateway.errors import MalformedSdp, ResourceNotFound, StreamNotLive, UnsupportedMedia, UnsupportedPatch
from gateway.janus.node import JanusNode, handle_bytes_in
from gateway.janus.peer import PeerObserver
from gateway.janus.streaming import StreamingViewer, payload_types
from gateway.sdp import bridge as sdp_bridge
from gateway.sdp import formats as sdp_formats
from gateway.sdp import model as sdp

__all__ = ["Egress", "EgressPolicy", "ViewerSession"]

log = logging.getLogger(__name__)


class _ViewerPeer:
    """A viewer's PeerConnection events, for the session once it exists."""

    def __init__(self, egress: Egress) -> None:
        self.egress = egress
        self.session: ViewerSession | None = None

    def peer_connected(self) -> None:
        if self.session is not None and not self.session.ended:
            self.egress.connected(self.session)

    def peer_media(self, mid: str, receiving: bool) -> None:
        pass  # a viewer's own media (it sends none) tells nothing

    def peer_gone(self, reason: str) -> None:
        if self.session is not None and not self.session.ended:
            self.egress.background.spawn(self.egress.end(self.session, f"Janus: {reason}"))


class Egress:
    def __init__(self, pool: NodePool, registry: StreamRegistry, keys: StreamKeys,
                 hub: EventHub, policy: EgressPolicy) -> None:
        self.pool = pool
        self.registry = registry
        self.keys = keys
        self.policy = policy
        self.viewers = ViewerBook()
        self.background = Background()
        self.mountpoints = Mountpoints(registry, policy, self, self.background)
        self.events = StreamEvents(registry, self.viewers, hub, policy)
        self.meter = BitrateMeter(pool, self._publisher_bytes)
        pool.observe(self)
        pool.observe(self.mountpoints)

    # -- requests ---------------------------------------------------------

    def authorize(self, stream: str, token: str | None) -> None:
        self.keys.check(stream, token)

    def session(self, stream: str, session_id: str) -> ViewerSession:
        found = self.viewers.get(session_id)
        if found is None or found.stream != stream or found.ended:
            raise ResourceNotFound("no such WHEP session")
        return found

    def event_stream(self, stream: str, session_id: str, events_id: str) -> EventStream:
        """An event stream found by its URL alone, with no token.

        A browser's EventSource cannot send Authorization, so the URL is the
        capability: the POST that made it was authorized, its last segment
        has 192 random bits (``new_resource_id``), it names its viewer
        session, and it is gone (404) once that session ends.
        """
        session = self.session(stream, session_id)
        found = self.events.get(session, events_id)
        if found is None:
            raise ResourceNotFound("no such event stream")
        return found

    def viewer_count(self, stream: str) -> int:
        return self.viewers.count(stream)

    def viewer_region(self, address: str | None, asked: str | None) -> str | None:
        """The viewer's region: ``asked`` (the ``region`` query parameter), else
        what ``region_networks`` says of its address, else this gateway's."""
        return self.pool.regions.region_of(address, asked)

    @probes.timed("egress.view")
    async def view(self, stream: str, offer_text: str, region: str | None = None) -> ViewerSession:
        """A standard WHEP POST: the viewer's offer in, our answer out (201);
        307 to another region's gateway, 503 when every node is full."""
        self.pool.route_viewer(stream, region)
        offer = offers.read_viewer_offer(offer_text)
        publisher = self._live_publisher(stream)
        pts = offers.viewer_payload_types(offer, media_signature(publisher))
        node = self._place(stream, region)
        mode = ViewerMode.NATIVE if node.takes_viewer_offers else ViewerMode.BRIDGED
        return await self._attach(stream, node, publisher, pts, mode, offer)

    async def counter_offer(self, stream: str, region: str | None = None) -> ViewerSession:
        """Draft-03 counter-offer (406): Janus's own offer goes to the viewer."""
        self.pool.route_viewer(stream, region)
        publisher = self._live_publisher(stream)
        pts = payload_types(m.kind for m in media_signature(publisher))
        node = self._place(stream, region)
        return await self._attach(stream, node, publisher, pts, ViewerMode.COUNTER_OFFER, None)

    def _place(self, stream: str, region: str | None) -> JanusNode:
        """The viewer's node, counted there from now on (``end`` gives it back)."""
        return self.pool.place_viewer(stream, region,
                                      lambda n: self.mountpoints.has(stream, n))

    async def answer(self, session: ViewerSession, answer_text: str) -> None:
        """Counter-offer mode: the player's answer, sent on to Janus."""
        if not session.awaiting_answer:
            raise UnsupportedPatch("this session is not waiting for an SDP answer")
        answer = offers.read_viewer_answer(answer_text)
        await session.viewer.start(answer_text, client_sdp=True, timeout=self.policy.janus_timeout)
        session.awaiting_answer = False
        session.remote_ufrag = answer.ice_credentials()[0]
        self._arm(session, self.policy.viewer_connect_timeout, "the viewer never connected")

    async def trickle(self, session: ViewerSession, fragment_text: str) -> str | None:
        """RFC 9725 section 4.3: trickled candidates, or an ICE restart when the
        ufrag is new; only a restart returns something (our sdpfrag)."""
        fragment = offers.read_fragment(fragment_text)
        remote_ufrag = session.remote_ufrag
        if fragment.ice_ufrag and remote_ufrag and fragment.ice_ufrag != remote_ufrag:
            return await self._restart_ice(session, fragment)
        candidates = fragment.candidates_for_ufrag(remote_ufrag)
        if session.bridged is not None:
            keep = set(sdp_bridge.map_trickle_candidates(fragment.candidates, session.bridged))
            candidates = [c for c in candidates if c in keep]
        await session.viewer.trickle(session.janus_mid, candidates, fragment.end_of_candidates)
        return None

    async def end(self, session: ViewerSession, reason: str = "DELETE by the client") -> None:
        if session.ended:
            return
        session.ended = True
        self.viewers.remove(session)
        if session.timer is not None:
            session.timer.cancel()
        self.events.viewer_ended(session)
        self.pool.viewer_left(session.egress.node, session.stream)
        log.info("stream %s: viewer %s ended: %s", session.stream, session.id[:8], reason)
        await session.viewer.close()
        session.variant.viewers.discard(session.id)
        self.mountpoints.release(session.egress, session.variant)
        self.events.count_changed(session.stream)

    async def select_layer(self, session: ViewerSession, request: Any) -> None:
        """Layer selection extension: rid / spatialLayerId / temporalLayerId, or automatic."""
        request = layers.check_request(request)
        if not any(m.simulcast for m in session.egress.signature):
            if not {"rid", "spatialLayerId", "temporalLayerId", "maxWidth", "maxHeight"} & request.keys():
                return  # back to automatic: there is only one layer, so nothing to do
            raise UnsupportedMedia("the publisher sends no simulcast layers to choose from")
        try:
            choice = layers.choose(request, session.simulcast_rids)
        except ValueError as exc:
            raise UnsupportedMedia(str(exc)) from None
        await session.viewer.select_layer(choice.spatial, choice.temporal)

    def open_events(self, session: ViewerSession, names: list[str] | None) -> EventStream:
        return self.events.open(session, names)


    def close_events(self, subscription: EventStream) -> None:
        self.events.close(subscription)

    def adopt(self, session_for: Callable[[PeerObserver], ViewerSession]) -> ViewerSession:
        """Carry on with a viewer another gateway replica set up (``core.cluster``):
        ``session_for`` rebuilds it around our observer; its mountpoint variant
        must have been adopted first (``Mountpoints.adopt``)."""
        peer = _ViewerPeer(self)
        session = session_for(peer)
        peer.session = session
        session.variant.viewers.add(session.id)
        self.viewers.add(session)
        self.mountpoints.in_use(session.variant)
        if session.awaiting_answer or not session.connected:
            self._arm(session, self.policy.viewer_connect_timeout, "the viewer never connected")
        return session

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.events.start()
        self.meter.start()

    async def close(self) -> None:
        await self.meter.stop()
        await self.events.stop()
        await asyncio.gather(*(self.end(v, "gateway stopping") for v in self.viewers.all()))
        await self.settled()

    async def settled(self) -> None:
        """Finish pending teardowns now (tests and shutdown use this)."""
        await self.mountpoints.settled()
        await self.background.settled()

    # -- events from the mountpoints, Janus and the nodes --------------------

    async def evict(self, egress: StreamEgress, reason: str) -> None:
        """Every viewer of ``egress`` ends; their players are told to reconnect."""
        viewers = [v for v in self.viewers.all() if v.egress is egress]
        for viewer in viewers:
            self.events.reconnect(viewer)
        await asyncio.gather(*(self.end(v, reason) for v in viewers))

    def connected(self, session: ViewerSession) -> None:
        session.connected = True
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None
        self.viewers.changed(session.stream)  # replicas write it down: no connect timer on takeover

    def node_down(self, node: JanusNode) -> None:
        for viewer in [v for v in self.viewers.all() if v.egress.node is node]:
            self.events.reconnect(viewer)
            self.background.spawn(self.end(viewer, f"node {node.name} went down"))

    async def node_removed(self, node: JanusNode) -> None:
        """The operator removed the node: its viewers are told to reconnect
        (and land elsewhere), then its mountpoints and their forwarders go."""
        viewers = [v for v in self.viewers.all() if v.egress.node is node]
        for viewer in viewers:
            self.events.reconnect(viewer)
        await asyncio.gather(*(self.end(v, f"node {node.name} removed") for v in viewers))
        await self.mountpoints.drop_node(node)

    async def _publisher_bytes(self) -> list[tuple[str, int]]:
        """Bytes Janus received so far from each live publisher (``BitrateMeter``)."""
        readings = []
        for publisher in self.registry.sessions():
            backend = publisher.backend
            if backend is None or publisher.state is not PublisherState.LIVE:
                continue
            total = await handle_bytes_in(backend.node, backend.handle)
            if total is not None:
                readings.append((publisher.stream, total))
        return readings

    # -- internals ----------------------------------------------------------

    def _live_publisher(self, stream: str) -> PublisherSession:
        publisher = self.registry.live_publisher(stream)
        if publisher is None:
            raise StreamNotLive(f"stream {stream!r} has no live publisher")
        return publisher

    async def _attach(self, stream: str, node: JanusNode, publisher: PublisherSession,
                      pts: dict[str, int], mode: ViewerMode,
                      offer: offers.ViewerOffer | None) -> ViewerSession:
        try:
            egress = await self.mountpoints.stream_egress(stream, node, publisher)
            variant = await self.mountpoints.acquire(egress, pts, publisher)
        except BaseException:
            self.pool.viewer_left(node, stream)
            raise
        peer = _ViewerPeer(self)
        viewer: StreamingViewer | None = None
        session: ViewerSession | None = None
        try:
            viewer = await StreamingViewer.attach(node, variant.mountpoint.id, peer)
            session = ViewerSession(stream=stream, mode=mode, egress=egress, variant=variant,
                                    viewer=viewer, simulcast_rids=layers.rids(publisher.offer))
            peer.session = session
            variant.viewers.add(session.id)
            await self._negotiate(session, offer)
        except BaseException as exc:
            if viewer is not None:
                await viewer.close()
            if session is not None:
                variant.viewers.discard(session.id)
            self.pool.viewer_left(node, stream)
            self.mountpoints.release(egress, variant)
            if isinstance(exc, sdp_bridge.BridgeError):
                raise UnsupportedMedia(str(exc)) from None
            if isinstance(exc, sdp.SdpError):
                raise MalformedSdp(f"the offer cannot be used: {exc}") from None
            raise
        self.viewers.add(session)
        self.mountpoints.in_use(variant)
        limit = (self.policy.counter_offer_validity if session.awaiting_answer
                 else self.policy.viewer_connect_timeout)
        self._arm(session, limit, "the viewer never connected")
        self.events.count_changed(stream)
        log.info("stream %s: viewer %s (%s) on %s, mountpoint %s", stream, session.id[:8],
                 mode.value, node.name, variant.mountpoint.id)
        return session

    async def _negotiate(self, session: ViewerSession, offer: offers.ViewerOffer | None) -> None:
        """The SDP exchange with Janus for the session's mode."""
        viewer, timeout = session.viewer, self.policy.janus_timeout
        if offer is not None:
            session.remote_ufrag = offer.ice_ufrag
            session.video_mindex = offers.video_mindex(offer.description)
        if session.mode is ViewerMode.NATIVE:
            assert offer is not None
            # Janus >= 1.1.4 answers with the first PT of a codec and writes the
            # mountpoint's fmtp on it: it gets only the PT chosen here, and the
            # answer is mended to name only formats the viewer offered.
            narrowed = sdp_formats.narrow_offer(offer.text, dict(session.variant.key))
            answer = await viewer.watch(offer=narrowed, timeout=timeout)
            session.answer = sdp_formats.mend_answer(answer, offer.text)
            session.janus_mid = offers.first_mid(session.answer)
        elif session.mode is ViewerMode.BRIDGED:
            assert offer is not None
            bridged = sdp_bridge.bridge(await viewer.watch(timeout=timeout), offer.description)
            # A_j carries the viewer's transport (ICE, fingerprint, candidates) as
            # it came: Janus refusing it is the viewer's 400, not a 502.
            await viewer.start(bridged.janus_answer, client_sdp=True, timeout=timeout)
            session.bridged, session.answer = bridged, bridged.viewer_answer
            session.viewer_offer = offer.text
            session.janus_mid = bridged.janus_bundle_mid
        else:
            session.answer = await viewer.watch(timeout=timeout)
            session.janus_mid = offers.first_mid(session.answer)
            session.video_mindex = offers.video_mindex(sdp.parse(session.answer))
            session.awaiting_answer = True
            session.answer_valid_for = self.policy.counter_offer_validity

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

    def _arm(self, session: ViewerSession, delay: float, reason: str) -> None:
        """End the session after ``delay`` unless it connected (and answered) by then."""
        if session.timer is not None:
            session.timer.cancel()
        session.timer = asyncio.get_running_loop().call_later(delay, self._expire, session, reason)

    def _expire(self, session: ViewerSession, reason: str) -> None:
        if session.awaiting_answer or not session.connected:
            self.background.spawn(self.end(session, reason))
