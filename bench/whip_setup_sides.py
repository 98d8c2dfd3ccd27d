"""whip_setup.py's sides and rounds: one publish per side, timed; sequential,
concurrent and survival rounds; the ABBA order.

A side is anything that turns an SDP offer into an answer: the gateway, the
direct baseline, a simple-whip-server peer.  Each publish returns the time
to the answer and a teardown, which runs outside the timed part, after the
untimed pauses of ``STATE``.  Apart from whip_setup.py so that each file
keeps one concern: this one is how a side is driven, that one the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Sequence
from urllib.parse import urljoin

import httpx
from harness import BenchError, CpuMeter, Json
from janus_direct import DirectJanus
from peer_simple_whip import PeerServer, error_kind

Teardown = Callable[[], Awaitable[None]]


@dataclass
class Side:
    name: str
    publish: Callable[[str, str], Awaitable[tuple[float, Teardown]]]
    sequential: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    round_walls: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # CPU seconds each process spent during this side's recorded sequential
    # blocks (publish and teardown), from /proc/<pid>/stat.
    cpu: dict[str, float] = field(default_factory=dict)
    # A WHIP server of Meetecho's: restarted when it dies (see PeerServer).
    server: PeerServer | None = None


def whip_publisher(http: httpx.AsyncClient, base: str) -> Callable[[str, str], Awaitable[tuple[float, Teardown]]]:
    """POST the offer to a WHIP URL -> (time to the 201 with an answer, DELETE of its resource)."""

    async def publish(url: str, offer: str) -> tuple[float, Teardown]:
        start = time.perf_counter()
        response = await http.post(url, content=offer, headers={"Content-Type": "application/sdp"})
        elapsed = time.perf_counter() - start
        if response.status_code != 201 or not response.text.startswith("v=0"):
            raise BenchError(f"POST {url}: {response.status_code} {response.text[:200]!r}")
        location = urljoin(base + "/", response.headers["location"])

        async def teardown() -> None:
            reply = await http.delete(location)
            if reply.status_code != 200:
                raise BenchError(f"DELETE {location}: {reply.status_code} {reply.text[:200]!r}")

        return elapsed, teardown

    return publish


def gateway_side(http: httpx.AsyncClient, base: str) -> Side:
    post = whip_publisher(http, base)

    async def publish(stream: str, offer: str) -> tuple[float, Teardown]:
        return await post(f"{base}/whip/{stream}", offer)

    return Side("gateway", publish)


def direct_side(janus: DirectJanus) -> Side:
    async def publish(stream: str, offer: str) -> tuple[float, Teardown]:
        start = time.perf_counter()
        handle, room, answer = await janus.publish(offer, stream)
        elapsed = time.perf_counter() - start

        async def teardown() -> None:
            await janus.unpublish(handle, room)

        if not answer.startswith("v=0"):
            await teardown()
            raise BenchError("the answer is not SDP")
        return elapsed, teardown

    return Side("direct", publish)


def peer_side(http: httpx.AsyncClient, server: PeerServer) -> Side:
    """A simple-whip-server: each publish takes a free endpoint (untimed), gives it back after."""
    post = whip_publisher(http, server.url)
    free: asyncio.Queue[str] = asyncio.Queue()
    for endpoint in server.endpoint_ids():
        free.put_nowait(endpoint)

    async def publish(_stream: str, offer: str) -> tuple[float, Teardown]:
        endpoint = await free.get()
        try:
            elapsed, delete = await post(f"{server.url}/whip/endpoint/{endpoint}", offer)
        except BaseException:
            free.put_nowait(endpoint)
            raise

        async def teardown() -> None:
            try:
                await delete()
            finally:
                free.put_nowait(endpoint)

        return elapsed, teardown

    return Side(server.kind, publish, server=server)


async def recover(side: Side, when: str) -> None:
    """If the side's peer died, note the crash and restart it (untimed)."""
    if side.server is None:
        return
    try:
        if await asyncio.to_thread(side.server.check, when):
            side.errors.append(f"{side.name} died ({when}); restarted")
    except Exception as exc:  # noqa: BLE001 - it stays down; its POSTs fail and are counted
        side.errors.append(f"{side.name} died ({when}); restart failed: {exc!r}")


@dataclass
class RunState:
    """What every round follows: untimed pauses (before each DELETE, and after it
    before the next publish), and the CPU meter of the recorded sequential blocks."""

    settle_s: float = 0.0
    gap_s: float = 0.0
    cpu: CpuMeter | None = None


STATE = RunState()


async def run_sequential(side: Side, offers: list[str], start: int, count: int,
                         record: bool = True) -> None:
    before = STATE.cpu.read() if STATE.cpu and record else None
    for i in range(start, start + count):
        try:
            elapsed, teardown = await side.publish(f"bench-{i}", offers[i % len(offers)])
        except Exception as exc:
            side.errors.append(f"{side.name} sequential {i}: {exc!r}")
            await recover(side, f"sequential {i}")
            continue
        if record:
            side.sequential.append(elapsed)
        await asyncio.sleep(STATE.settle_s)
        try:
            await teardown()
        except Exception as exc:  # the leak check at the end will show what stayed
            side.errors.append(f"{side.name} sequential {i} teardown: {exc!r}")
        await asyncio.sleep(STATE.gap_s)
    if STATE.cpu and before is not None:
        STATE.cpu.add(side.cpu, before)
    await recover(side, f"after sequential {start}..{start + count - 1}")


async def run_concurrent(side: Side, offers: list[str], round_no: int | str, width: int,
                         record: bool = True) -> tuple[int, list[str]]:
    """``width`` publishes at once, then their DELETEs; (how many got 201, the failures)."""
    async def one(j: int) -> tuple[float, Teardown] | Exception:
        try:
            return await side.publish(f"bench-c{round_no}-{j}", offers[j % len(offers)])
        except Exception as exc:
            return exc

    wall = time.perf_counter()
    results = await asyncio.gather(*(one(j) for j in range(width)))
    wall = time.perf_counter() - wall
    teardowns, failures = [], []
    for j, result in enumerate(results):
        if isinstance(result, Exception):
            failures.append(f"{side.name} concurrent round {round_no} #{j}: {result!r}")
            continue
        elapsed, teardown = result
        if record:
            side.concurrent.append(elapsed)
        teardowns.append(teardown())
    if record:
        side.round_walls.append(wall)
    await asyncio.sleep(STATE.settle_s)
    for outcome in await asyncio.gather(*teardowns, return_exceptions=True):
        if isinstance(outcome, Exception):
            failures.append(f"{side.name} concurrent round {round_no} teardown: {outcome!r}")
    side.errors.extend(failures)
    await asyncio.sleep(STATE.gap_s)
    await recover(side, f"after concurrent round {round_no} ({width} at once)")
    return len(teardowns), failures


def abba(index: int, sides: Sequence[Side]) -> list[Side]:
    """Block order A B B A A B B A ...: each side goes first (and last) equally often."""
    return list(sides) if index % 4 in (0, 3) else list(reversed(sides))


async def survival(side: Side, offers: list[str], widths: list[int], rounds: int) -> list[Json]:
    """Untimed rounds at each width: how many POSTs got 201, the failures by kind, crashes."""
    out = []
    for width in widths:
        ok, errors = 0, Counter[str]()
        crashes_before = len(side.server.crashes) if side.server else 0
        kept = list(side.errors)
        for r in range(rounds):
            got, failures = await run_concurrent(side, offers, f"s{width}-{r}", width, record=False)
            ok += got
            errors.update(error_kind(f.split(": ", 1)[1]) if ": " in f else f for f in failures)
        side.errors[:] = kept  # survival failures are reported in their own table
        crashes = (len(side.server.crashes) if side.server else 0) - crashes_before
        out.append({"width": width, "rounds": rounds, "total": width * rounds, "ok": ok,
                    "errors": dict(errors), "crashes": crashes})
    return out
