"""The soak's scenario: the operations, what each may answer, the offers they send.

``SoakOps`` holds what the bench knows (resources it made, streams seen
live, media peers open) and the six operations it picks from at random:
publish, view, trickle, ice_restart, delete, drop.  ``soak_driver.Soak``
adds how they are run (workers, Janus kills, audits, the settling at the
end); ``soak_report`` turns the counts into the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import random
import secrets
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin

import httpx
from harness import SDP, Json, aiortc_offerer

SDPFRAG = "application/trickle-ice-sdpfrag"

OPS = ("publish", "view", "trickle", "ice_restart", "delete", "drop")
DEFAULT_WEIGHTS = "publish=34,view=22,trickle=14,ice_restart=7,delete=12,drop=11"
# What each operation may answer besides 503 while a node is down.
EXPECTED = {
    "publish": {201, 409},  # 409: the stream has a live or still-connecting publisher
    "view": {201, 409},  # 409: the stream is not live
    "trickle": {204, 404},  # 404: the gateway already reaped the session
    "ice_restart": {200, 404},
    "delete": {200, 404},
    "drop": {"dropped"},
}
# The gateway's settings for the run: rate limits off, short timeouts so that
# abandoned sessions are reaped within the run.
# Per kind of media peer: its counters (attempts, made), its lifetime in s before a DELETE/drop.
MEDIA_COUNTERS = {"whip": ("publish_attempts", "publishers"), "whep": ("view_attempts", "viewers")}
MEDIA_LIFETIME = {"whip": (4.0, 12.0), "whep": (3.0, 8.0)}
# The in-flight entry of the operation running in this task (see SoakOps.one).
_CURRENT: contextvars.ContextVar[Json | None] = contextvars.ContextVar("soak_op", default=None)
RECENT_S = 2.0  # a resource this young is most likely still alive at the gateway
FORGET_S = 20.0  # signalling-only resources older than this are forgotten (abandoned)


# --------------------------------------------------------------------------
# offers and media peers


@dataclass(frozen=True)
class Offer:
    sdp: str
    ufrag: str
    pwd: str
    candidate: str
    mids: tuple[str, ...]


def offer_info(text: str) -> Offer:
    from gateway.sdp import model as sdp

    desc = sdp.parse(text)
    ufrag, pwd = desc.ice_credentials()
    if not desc.candidates:
        raise RuntimeError("aiortc gathered no candidate; is v0 up?")
    return Offer(text, ufrag or "", pwd or "", desc.candidates[0],
                 tuple(m.mid or str(i) for i, m in enumerate(desc.media)))


async def offer_pool(count: int, direction: str) -> list[Offer]:
    """Real aiortc offers: sendonly Opus + VP8 (publishers) or recvonly audio + video."""
    out = []
    for _ in range(count):
        pc = await aiortc_offerer(direction)
        try:
            out.append(offer_info(pc.localDescription.sdp))
        finally:
            await pc.close()  # only the text is reused
    return out


async def wait_connected(pc: Any, timeout: float) -> bool:
    """Whether an aiortc peer got connected within ``timeout`` (the tests' wait, as a bool)."""
    from tests.publishers import wait_connected as settled

    with contextlib.suppress(TimeoutError, AssertionError):
        await settled(pc, timeout)
    return bool(pc.connectionState == "connected")


def trickle_fragment(ufrag: str, pwd: str, candidate: str, mids: tuple[str, ...]) -> str:
    return (f"a=group:BUNDLE {' '.join(mids)}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
            f"a=mid:{mids[0]}\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n"
            f"a=candidate:{candidate}\r\n")


def restart_fragment(ufrag: str, pwd: str, candidate: str, mids: tuple[str, ...]) -> str:
    return (f"a=ice-options:trickle ice2\r\na=group:BUNDLE {' '.join(mids)}\r\n"
            f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:{mids[0]}\r\n"
            f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=candidate:{candidate}\r\n")


# --------------------------------------------------------------------------
# the soak


@dataclass(eq=False)
class Resource:
    kind: str  # "whip" or "whep"
    stream: str
    url: str
    etag: str
    offer: Offer
    ufrag: str
    pwd: str
    created: float = field(default_factory=time.monotonic)
    pc: Any = None  # an aiortc peer that really connects (media share)
    frames: Any = None  # tests.viewers.Frames of a media viewer
    lifetime: float = 0.0  # media peers: DELETE/drop prefers them after this
    busy: bool = False


@dataclass
class Phase:
    statuses: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    latency_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[Json] = field(default_factory=list)
    unexpected_n: int = 0  # answers outside EXPECTED (a 429 means the soak is misconfigured)
    exceptions: list[str] = field(default_factory=list)
    count_503: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, op, detail, down
    ops: int = 0
    started: float = 0.0
    elapsed: float = 0.0


class SoakOps:
    """What the bench knows of the gateway's resources, and the operations on them."""

    def __init__(self, args: argparse.Namespace, url: str, http: httpx.AsyncClient,
                 pub_offers: list[Offer], view_offers: list[Offer]) -> None:
        self.args = args
        self.url = url
        self.http = http
        self.rng = random.Random(args.seed)
        self.pub_offers = pub_offers
        self.view_offers = view_offers
        self.streams = [f"s{i}" for i in range(args.streams)]
        self.resources: list[Resource] = []
        self.media_open = 0
        self.media_pending: Counter[str] = Counter()  # media peers being set up, by kind
        self.media: Counter[str] = Counter()
        self.forgotten = 0
        self.phase = Phase()
        self.phases: dict[str, Phase] = {}
        self.live: set[str] = set()  # from /api/streams
        self.published: set[str] = set()
        self.outages: list[Json] = []  # Janus nodes down: a 503 then is expected
        # Operations in flight, by a token of their own: what was going on when
        # a Janus crashed (op, index, target resource).
        self.in_flight: dict[int, Json] = {}

    # -- bookkeeping ------------------------------------------------------

    def record(self, op: str, status: Any, elapsed: float, detail: str = "") -> None:
        ph = self.phase
        ph.statuses[op][status] += 1
        if isinstance(status, int):
            ph.latency_ms[op].append(elapsed * 1000)
        if status == 503:
            try:
                message = str(json.loads(detail).get("detail", ""))
            except (ValueError, AttributeError):
                message = detail[:100]
            down = [o["role"] for o in self.outages
                    if o["start"] <= time.monotonic() <= (o["end"] or float("inf"))]
            ph.count_503.append((time.monotonic(), op, message, ",".join(down) or "none"))
        elif status not in EXPECTED[op] and status != "no_target":
            ph.unexpected_n += 1
            if len(ph.unexpected) < 50:
                ph.unexpected.append({"op": op, "status": status, "t": round(time.monotonic(), 3),
                                      "detail": detail[:300]})

    def pick(self, *, kinds: tuple[str, ...] = ("whip", "whep"), recent: bool = False,
             signalling_only: bool = False, prefer_overdue: bool = False) -> Resource | None:
        now = time.monotonic()
        pool = [r for r in self.resources if not r.busy and r.kind in kinds
                and not (signalling_only and r.pc is not None)]
        if not pool:
            return None
        if prefer_overdue:
            # Media peers go when their lifetime is over, and then first: kept
            # out of the random picks, or they would rarely get to be live.
            overdue = [r for r in pool if r.pc is not None and now - r.created > r.lifetime]
            if overdue:
                return self.rng.choice(overdue)
            pool = [r for r in pool if r.pc is None]
            if not pool:
                return None
        if recent and self.rng.random() < 0.8:
            young = [r for r in pool if now - r.created < RECENT_S]
            if young:
                return self.rng.choice(young)
        return self.rng.choice(pool)

    def forget_old(self) -> None:
        now = time.monotonic()
        keep = []
        for r in self.resources:
            if r.pc is None and not r.busy and now - r.created > FORGET_S:
                self.forgotten += 1
            else:
                keep.append(r)
        self.resources = keep

    def take(self, r: Resource) -> None:
        if r in self.resources:
            self.resources.remove(r)

    async def close_peer(self, r: Resource) -> None:
        if r.pc is not None:
            if r.frames is not None:
                self.media["viewer_frames"] += r.frames.count
                if r.frames.count:
                    self.media["viewers_with_frames"] += 1
            pc, r.pc = r.pc, None
            self.media_open -= 1
            await asyncio.gather(pc.close(), return_exceptions=True)

    def media_slot(self, kind: str) -> bool:
        open_now = sum(1 for r in self.resources if r.pc is not None and r.kind == kind)
        return (open_now + self.media_pending[kind] < self.args.max_media
                and self.rng.random() < self.args.media_share)

    # -- operations -------------------------------------------------------

    async def op_publish(self) -> tuple[Any, str]:
        now = time.monotonic()
        media = self.media_slot("whip")
        if media:
            # A stream without a publisher of ours that may still hold it.
            busy = {r.stream for r in self.resources if r.kind == "whip"
                    and (r.pc is not None or now - r.created < 4)}
            free = [s for s in self.streams if s not in busy and s not in self.live]
            media = bool(free)
            stream = self.rng.choice(free) if free else self.rng.choice(self.streams)
        else:
            stream = self.rng.choice(self.streams)
        if not media:
            return await self.offer_to("whip", stream, self.rng.choice(self.pub_offers))
        from tests.publishers import aiortc_publisher

        pc = await self.media_peer("whip", aiortc_publisher)
        return await self.offer_to("whip", stream, offer_info(pc.localDescription.sdp), pc)

    async def op_view(self) -> tuple[Any, str]:
        live = sorted(self.live)
        if live and self.rng.random() < 0.7:
            stream = self.rng.choice(live)
        else:
            known = sorted(self.published | {r.stream for r in self.resources if r.kind == "whip"})
            stream = self.rng.choice(known or self.streams)
        if not (stream in self.live and self.media_slot("whep")):
            return await self.offer_to("whep", stream, self.rng.choice(self.view_offers))
        from tests.viewers import aiortc_viewer

        pc, frames = await self.media_peer("whep", aiortc_viewer)
        return await self.offer_to("whep", stream, offer_info(pc.localDescription.sdp), pc, frames)

    async def media_peer(self, kind: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """A real aiortc peer for the media share, counted as open (and pending) from now on."""
        self.media[MEDIA_COUNTERS[kind][0]] += 1
        self.media_open += 1
        self.media_pending[kind] += 1
        try:
            return await make()
        except BaseException:
            self.media_open -= 1
            self.media_pending[kind] -= 1
            raise

    async def offer_to(self, kind: str, stream: str, offer: Offer, pc: Any = None,
                       frames: Any = None) -> tuple[Any, str]:
        """POST an offer to /whip|whep/<stream>; a 201 is a resource, a media peer connects."""
        noun = MEDIA_COUNTERS[kind][1]
        registered = False
        entry = _CURRENT.get()
        if entry is not None:
            entry["target"] = f"/{kind}/{stream}"
        try:
            r = await self.http.post(f"{self.url}/{kind}/{stream}", content=offer.sdp,
                                     headers={"Content-Type": SDP})
            if r.status_code != 201:
                return r.status_code, r.text
            if kind == "whip" and not r.text.startswith("v=0"):
                return "201-without-sdp", r.text
            res = Resource(kind, stream, urljoin(self.url, r.headers["location"]),
                           r.headers.get("etag", ""), offer, offer.ufrag, offer.pwd)
            if pc is not None:
                from aiortc import RTCSessionDescription

                res.pc, res.frames, res.lifetime = pc, frames, self.rng.uniform(*MEDIA_LIFETIME[kind])
                self.media[noun] += 1
                await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            self.resources.append(res)
            registered = True
            if pc is not None:
                res.busy = True
                try:
                    ok = await wait_connected(pc, 10)
                finally:
                    res.busy = False
                self.media[f"{noun}_connected" if ok else f"{noun}_not_connected"] += 1
            return 201, ""
        finally:
            if pc is not None:
                self.media_pending[kind] -= 1
                if not registered:
                    self.media_open -= 1
                    await pc.close()

    async def op_trickle(self) -> tuple[Any, str]:
        res = self.pick(recent=True)
        if res is None:
            return "no_target", ""
        self.note(res)
        res.busy = True
        try:
            body = trickle_fragment(res.ufrag, res.pwd, res.offer.candidate, res.offer.mids)
            r = await self.http.patch(res.url, content=body, headers={
                "Content-Type": SDPFRAG, "If-Match": res.etag})
            return r.status_code, r.text
        finally:
            res.busy = False

    async def op_ice_restart(self) -> tuple[Any, str]:
        # Media publishers are left alone: aiortc would not follow the new credentials.
        res = self.pick(kinds=("whip",), recent=True, signalling_only=True)
        if res is None:
            return "no_target", ""
        self.note(res)
        res.busy = True
        try:
            ufrag, pwd = secrets.token_hex(4), secrets.token_hex(16)
            body = restart_fragment(ufrag, pwd, res.offer.candidate, res.offer.mids)
            r = await self.http.patch(res.url, content=body, headers={
                "Content-Type": SDPFRAG, "If-Match": "*"})
            if r.status_code == 200:
                res.ufrag, res.pwd = ufrag, pwd
                res.etag = r.headers.get("etag", res.etag)
                if not r.text.startswith(("a=", "m=")):
                    return "200-without-sdpfrag", r.text
            return r.status_code, r.text
        finally:
            res.busy = False

    async def op_delete(self) -> tuple[Any, str]:
        res = self.pick(prefer_overdue=True)
        if res is None:
            return "no_target", ""
        self.take(res)
        self.note(res)
        try:
            r = await self.http.delete(res.url)
            return r.status_code, r.text
        finally:
            await self.close_peer(res)

    async def op_drop(self) -> tuple[Any, str]:
        res = self.pick(prefer_overdue=True)
        if res is None:
            return "no_target", ""
        self.take(res)
        self.note(res)
        await self.close_peer(res)  # a media peer hangs up (DTLS close), no DELETE
        return "dropped", ""

    def note(self, res: Resource) -> None:
        """The resource the current operation works on (for a crash report)."""
        entry = _CURRENT.get()
        if entry is not None:
            entry["target"] = f"{res.kind} {res.url.rsplit('/', 1)[-1][:8]} ({res.stream})"

    async def one(self, op: str, index: int = -1) -> None:
        t0 = time.perf_counter()
        detail = ""
        entry: Json = {"op": op, "i": index}
        token = id(entry)
        self.in_flight[token] = entry
        _CURRENT.set(entry)
        try:
            status, detail = await asyncio.wait_for(getattr(self, f"op_{op}")(),
                                                    self.args.op_timeout)
        except TimeoutError:
            status = "timeout"
        except Exception as exc:  # noqa: BLE001 - counted and sampled; the run goes on
            status = f"exception:{type(exc).__name__}"
            if len(self.phase.exceptions) < 30:
                self.phase.exceptions.append(f"{op}: {exc!r}")
        finally:
            del self.in_flight[token]
            _CURRENT.set(None)
        self.record(op, status, time.perf_counter() - t0, detail)

