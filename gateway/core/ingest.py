"""WHIP ingest: publish, trickle, ICE restart, end, and watching publishers.

This is the domain behind ``gateway.http.whip``.  It decides which node takes
an offer (``offers.py`` checks what it may carry), when a publisher counts as
gone, and announces publisher changes on the ``StreamRegistry``, where the
egress side hears them.  It never sees a Request and never builds Janus JSON;
Janus failures arrive already translated (``gateway.janus.failures``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Callable, Protocol

from gateway.core import offers
from gateway.sdp.formats import CONSTRAINED_BASELINE, room_h264_profile
from gateway.core.auth import StreamKeys
from gateway.core.placement import NodePool
from gateway.core.streams import (
    PublisherChange,
    PublisherSession,
    PublisherState,
    StreamRegistry,
    new_etag,
)
from gateway.errors import (GatewayError, IceRestartInProgress, MediaServerUnavailable,
                            ResourceNotFound, StreamBusy)
from gateway.janus.node import JanusNode
from gateway.janus.peer import PeerObserver
from gateway.janus.roompool import PublisherPool
from gateway.janus.videoroom import RoomOptions, RoomPublisher
from gateway.sdp import model as sdp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestPolicy:
    video_codecs: str = "h264,vp8,vp9,av1,h265"
    audio_codecs: str = "opus"
    max_bitrate: int = 0
    connect_timeout: float = 10.0
    media_timeout: float = 5.0
    janus_timeout: float = 6.0
    setup_deadline: float = 6.5
    pool_size: int = 0  # rooms and handles kept ready per ingest node (0: none)


@dataclass(frozen=True)
class PatchResult:
    """A trickle gives nothing back; an ICE restart gives a fragment and ETag."""

    fragment: str | None = None
    etag: str | None = None


class SessionRecorder(Protocol):
    """Records publish sessions (``core/recordings.Recordings``)."""

    def plan(self, session: PublisherSession) -> str | None:
        """The folder to record the session into, or None."""

    def closed(self, session: PublisherSession) -> None:
        """Janus has let go of the session (its recording files are closed)."""


class _PublisherPeer:
    """A publisher's PeerConnection events, for ``Ingest``."""

    def __init__(self, ingest: Ingest, session: PublisherSession) -> None:
        self.ingest, self.session = ingest, session

    def peer_connected(self) -> None:
        pass  # media arriving, not ICE, makes a publisher live

    def peer_media(self, mid: str, receiving: bool) -> None:
        self.ingest.media_changed(self.session, mid, receiving)

    def peer_gone(self, reason: str) -> None:
        if self.session.state is not PublisherState.ENDED:
            self.ingest.end_soon(self.session, f"Janus: {reason}")


class Ingest:
    def __init__(self, pool: NodePool, keys: StreamKeys, policy: IngestPolicy,
                 registry: StreamRegistry | None = None,
                 recorder: SessionRecorder | None = None) -> None:
        self.pool = pool
        self.recorder = recorder
        self.keys = keys
        self.policy = policy
        self.registry = registry or StreamRegistry()
        self._ending: set[asyncio.Task[None]] = set()
        # Rooms and handles made ahead of the publishers, by node name (node_up makes them).
        self.pools: dict[str, PublisherPool] = {}
        pool.observe(self)
        # ICE restarts in flight, by session id: Janus must never get a second
        # offer, or a hang-up, on a handle whose restart it is still handling.
        self._restarts: dict[str, asyncio.Future[None]] = {}

    # -- requests ---------------------------------------------------------

    def authorize(self, stream: str, token: str | None) -> None:
        self.keys.check(stream, token)

    def session(self, stream: str, session_id: str) -> PublisherSession:
        found = self.registry.get(session_id)
        if found is None or found.stream != stream or found.state is PublisherState.ENDED:
            raise ResourceNotFound("no such WHIP session")
        return found

    async def publish(self, stream: str, offer_text: str) -> PublisherSession:
        offer = offers.parse_offer(offer_text)
        offers.check_publish_offer(offer, video_codecs=self.policy.video_codecs,
                                   audio_codecs=self.policy.audio_codecs)
        old = self.registry.publisher_of(stream)
        if old is not None and old.holds_stream(self.policy.connect_timeout):
            raise StreamBusy(f"stream {stream!r} is already being published")
        node = self.pool.for_publisher()
        session = PublisherSession(stream=stream, offer=offer, node_name=node.name)
        session.remote_ufrag, session.remote_pwd = offer.ice_credentials()
        self.registry.put(session)  # claims the stream before any await
        if old is not None:
            log.info("stream %s: replacing publisher %s (%s)", stream, old.id[:8], old.state.value)
            await self._end(old, "replaced by a new publisher")
        options = self._room_options(offer)
        if self.recorder is not None:
            options = replace(options, record_dir=self.recorder.plan(session))
        try:
            # One deadline for the whole set-up: OBS gives up after 8 s.
            async with asyncio.timeout(self.policy.setup_deadline):
                session.backend = await RoomPublisher.open(
                    node, offer=offer_text, display=stream, options=options,
                    observer=_PublisherPeer(self, session),
                    timeout=self.policy.janus_timeout,
                    pool=self.pools.get(node.name),
                )
        except BaseException as exc:
            self.registry.remove(session)
            session.set_state(PublisherState.ENDED)
            if isinstance(exc, TimeoutError):
                raise MediaServerUnavailable(
                    f"media server {node.name} did not set up the session within "
                    f"{self.policy.setup_deadline:g} s") from exc
            raise
        if session.state is PublisherState.ENDED:  # the node died while we waited
            self.registry.remove(session)
            await session.backend.close()
            raise MediaServerUnavailable(f"node {node.name} went down during set-up")
        self._arm(session, self.policy.connect_timeout, "no media within the connect timeout")
        self.registry.announce(session, PublisherChange.PUBLISHED)
        log.info("stream %s: publisher %s on %s (%s)", stream, session.id[:8], node.name,
                 ", ".join(f"{s.kind} {s.codec}" for s in session.backend.streams))
        return session

    def adopt(self, session: PublisherSession,
              backend_for: Callable[[PeerObserver], RoomPublisher]) -> None:
        """Carry on with a publisher another gateway replica set up (``core.cluster``):
        its handle is rebuilt around our observer, its timers armed again."""
        session.backend = backend_for(_PublisherPeer(self, session))
        self.registry.put(session)
        if session.state is PublisherState.CONNECTING:
            self._arm(session, self.policy.connect_timeout, "no media within the connect timeout")
        elif session.state is PublisherState.STALLED:
            self._arm(session, self.policy.media_timeout, "media stopped")

    async def patch(self, session: PublisherSession, fragment_text: str) -> PatchResult:
        """RFC 9725 section 4.3: a trickle, or an ICE restart if the ufrag is new."""
        fragment = offers.read_fragment(fragment_text)
        if fragment.ice_ufrag and fragment.ice_ufrag != session.remote_ufrag:
            return await self._restart_ice(session, fragment)
        backend = _backend(session)
        candidates = fragment.candidates_for_ufrag(session.remote_ufrag)
        await backend.trickle(_bundle_mid(session), candidates, fragment.end_of_candidates)
        return PatchResult()

    async def end(self, session: PublisherSession) -> None:
        await self._end(session, "DELETE by the client")

    async def kick(self, session: PublisherSession, reason: str) -> None:
        """End a publisher on the operator's word (``core.operations``)."""
        await self._end(session, reason)

    async def close(self) -> None:
        await asyncio.gather(*(self._end(s, "gateway stopping") for s in self.registry.sessions()))
        await self.close_pools()

    async def close_pools(self) -> None:
        """Destroy the pools' rooms and handles (at stop, or before a hand-over:
        another replica has no use for them)."""
        pools, self.pools = list(self.pools.values()), {}
        await asyncio.gather(*(p.close() for p in pools))

    # -- internals --------------------------------------------------------

    def _room_options(self, offer: sdp.SessionDescription | None) -> RoomOptions:
        """What a publisher's room is created with; without an offer, what the
        pools start with (most offers carry constrained baseline H.264)."""
        return RoomOptions(
            video_codecs=self.policy.video_codecs,
            audio_codecs=self.policy.audio_codecs,
            bitrate=self.policy.max_bitrate,
            # constrained baseline when offered: the one H.264 every browser viewer takes
            h264_profile=room_h264_profile(offer) if offer is not None else CONSTRAINED_BASELINE,
        )

    async def _restart_ice(self, session: PublisherSession, frag: sdp.SdpFragment) -> PatchResult:
        """Re-offer to Janus with the new credentials; keep the old ICE session on failure.

        One restart per publisher at a time (a second one is refused with 409
        and Retry-After), and ``_end`` waits for it before hanging up: Janus
        1.1.2 can crash when those overlap on one handle (issue 11; upstream, the
        closest report is meetecho/janus-gateway#3503, a SIGSEGV in the VideoRoom
        handler after an ICE restart; the overlaps are replayed against a bare
        Janus in tests/integration/test_janus_restart_overlap.py).
        """
        backend = _backend(session)
        if session.id in self._restarts:
            raise IceRestartInProgress("an ICE restart of this session is still in progress")
        offer = sdp.after_ice_restart(session.offer, frag)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._restarts[session.id] = done
        try:
            answer = await backend.renegotiate(str(offer), timeout=self.policy.janus_timeout)
        except GatewayError as exc:
            log.warning("stream %s: ICE restart failed: %s", session.stream, exc.detail)
            raise
        finally:
            del self._restarts[session.id]
            done.set_result(None)
        fragment = sdp.fragment_of(answer)
        session.offer = offer
        session.remote_ufrag, session.remote_pwd = frag.ice_ufrag, frag.ice_pwd
        session.etag = new_etag()
        return PatchResult(fragment=fragment, etag=session.etag)

    def media_changed(self, session: PublisherSession, mid: str, receiving: bool) -> None:
        """Janus started or stopped receiving the publisher's media on ``mid``."""
        if session.state is PublisherState.ENDED:
            return
        session.receiving[mid] = receiving
        if any(session.receiving.values()):
            self._disarm(session)
            if session.state is not PublisherState.LIVE:
                log.info("stream %s: live", session.stream)
                session.set_state(PublisherState.LIVE)
                self.registry.announce(session, PublisherChange.LIVE)
        elif session.state is PublisherState.LIVE:
            log.info("stream %s: media stopped", session.stream)
            session.set_state(PublisherState.STALLED)
            self._arm(session, self.policy.media_timeout, "media stopped")
            self.registry.announce(session, PublisherChange.STALLED)

    def _arm(self, session: PublisherSession, delay: float, reason: str) -> None:
        self._disarm(session)
        loop = asyncio.get_running_loop()
        session.timer = loop.call_later(delay, self.end_soon, session, reason)

    def _disarm(self, session: PublisherSession) -> None:
        if session.timer is not None:
            session.timer.cancel()
            session.timer = None

    def end_soon(self, session: PublisherSession, reason: str) -> None:
        if session.closing is None and session.state is not PublisherState.ENDED:
            session.closing = asyncio.create_task(self._end(session, reason))
            self._ending.add(session.closing)
            session.closing.add_done_callback(self._ending.discard)

    async def settled(self) -> None:
        """Wait until every publisher that is being ended has freed its resources,
        and no pool is being topped up (what Janus holds is then what we name)."""
        while self._ending:
            await asyncio.gather(*list(self._ending), return_exceptions=True)
        for pool in list(self.pools.values()):
            await pool.settled()

    async def _end(self, session: PublisherSession, reason: str) -> None:
        """Free everything the session holds; safe to call more than once."""
        if session.state is PublisherState.ENDED:
            if session.closing is not None and session.closing is not asyncio.current_task():
                await asyncio.shield(session.closing)
            return
        session.set_state(PublisherState.ENDED)
        session.end_reason = reason
        self._disarm(session)
        self.registry.remove(session)
        log.info("stream %s: publisher %s ended: %s", session.stream, session.id[:8], reason)
        if session.backend is not None:
            self.registry.announce(session, PublisherChange.ENDED)
            restart = self._restarts.get(session.id)
            if restart is not None:  # never hang up under a restart (bounded by its timeout)
                await asyncio.shield(restart)
            await session.backend.close()
            if self.recorder is not None:
                self.recorder.closed(session)

    def node_up(self, node: JanusNode) -> None:
        """Fill the node's pool (made on its first start) if it takes publishers."""
        if self.policy.pool_size <= 0 or node.role not in ("ingest", "both"):
            return
        pool = self.pools.get(node.name)
        if pool is None or pool.node is not node:
            pool = self.pools[node.name] = PublisherPool(node, self.policy.pool_size,
                                                         self._room_options(None))
        pool.node_up()

    def node_down(self, node: JanusNode) -> None:
        """End what lived on the node; a set-up still running there fails (503).
        Its pool is emptied (its handles died with the session)."""
        pool = self.pools.get(node.name)
        if pool is not None and pool.node is node:
            pool.node_down()
        for session in self.registry.sessions():
            if session.node_name != node.name:
                continue
            if session.backend is not None:
                self.end_soon(session, f"node {node.name} went down")
            else:  # still being set up: publish() sees this and fails with 503
                session.set_state(PublisherState.ENDED)

    async def node_removed(self, node: JanusNode) -> None:
        """The operator removed the node: its publishers end (their
        reconnect POST lands on another ingest node)."""
        await asyncio.gather(*(self._end(s, f"node {node.name} removed")
                               for s in self.registry.sessions() if s.node_name == node.name))
        pool = self.pools.pop(node.name, None)
        if pool is not None:
            await pool.close()


def _backend(session: PublisherSession) -> RoomPublisher:
    if session.backend is None or session.state is PublisherState.ENDED:
        raise ResourceNotFound("no such WHIP session")
    return session.backend


def _bundle_mid(session: PublisherSession) -> str:
    """Janus reads trickled candidates for the first m-line only."""
    return session.offer.media[0].mid or "0"
