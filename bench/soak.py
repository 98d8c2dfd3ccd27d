#!/usr/bin/env python3
"""Soak: thousands of random WHIP/WHEP lifecycle operations, then leaks and memory.

The gateway runs as its own process, ``whip-gateway serve`` in its embedded
default: it starts and supervises two Janus processes of its own (an ingest
node and an ICE-lite egress node).  The bench then drives it with ``--ops``
operations chosen at random (weights below), ``--concurrency`` at a time:

- publish: POST a real aiortc offer to /whip/sN.  Most are signalling only
  (an offer from a pool made up front; nobody ever answers Janus's ICE
  checks, so the gateway reaps them after its connect timeout).  A share
  (``--media-share``) makes a fresh aiortc publisher that connects and
  sends media (tone + test pattern), so streams go live;
- view: POST a recvonly aiortc offer to /whep/sN of a stream that is live
  (or has a publisher): 201 or 409.  The same share connects real media;
- trickle: PATCH a candidate to a known resource with its ETag (204);
- ice_restart: PATCH new ICE credentials, ``If-Match: "*"`` (WHIP, 200);
- delete: DELETE a known resource (200; 404 once the gateway reaped it);
- drop: forget a resource without DELETE (a media peer is closed).

At 50 % of the run the ingest Janus gets SIGKILL, at 75 % the egress one;
the gateway must restart them.  503s while a node is down are expected and
counted apart.  Then everything still known is DELETEd, the gateway's
timeouts are left to expire, and both Janus nodes are asked (admin API) what
they still hold: sessions beyond the gateway's own, handles beyond its two
control handles, VideoRoom rooms, Streaming mountpoints, RTP forwarders.
The gateway's RSS is compared after warm-up and at the end.

Run as root (it makes a private network namespace, see gateway/sandbox.py):

    sudo .venv/bin/python bench/soak.py [--ops 10000] [--concurrency 8]
        [--media-share 0.03] [--seed 1] [--json out.json] [--max-seconds 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from harness import (KEEPALIVE_S, SDP, STREAMING, VIDEOROOM, AsyncJanusAdmin, GatewayProcess, Json,
                     aiortc_offerer, apply_env_items, cpu_seconds, enter_netns, gateway_command,
                     gateway_env, git, guarded, install_hard_cap, janus_children, params_of,
                     percentile, proc_stat, rss_kb, run_capped, write_json)

from gateway.janus.process import free_port

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
GATEWAY_ENV = {
    "WHIP_GATEWAY_RATE_LIMIT_PER_CLIENT": "",
    "WHIP_GATEWAY_RATE_LIMIT_PER_STREAM": "",
    "WHIP_GATEWAY_PUBLISHER_CONNECT_TIMEOUT": "3",
    "WHIP_GATEWAY_PUBLISHER_MEDIA_TIMEOUT": "2",
    "WHIP_GATEWAY_VIEWER_CONNECT_TIMEOUT": "3",
    "WHIP_GATEWAY_MOUNTPOINT_GRACE": "0.5",
}
RECENT_S = 2.0  # a resource this young is most likely still alive at the gateway
FORGET_S = 20.0  # signalling-only resources older than this are forgotten (abandoned)


# --------------------------------------------------------------------------
# /proc: the gateway's Janus children and their configs


@dataclass
class JanusNodeInfo:
    role: str  # "ingest" or "egress"
    pid: int
    folder: Path
    admin_url: str
    admin_secret: str
    admin_key: str
    ice_lite: bool
    streaming_range: str


def _jcfg_value(text: str, key: str) -> str:
    found = re.search(rf'^\s*{key}\s*=\s*"?([^"\n]*)"?\s*$', text, re.MULTILINE)
    if not found:
        raise ValueError(f"no {key}")
    return found.group(1)


def read_node(pid: int) -> JanusNodeInfo:
    """Admin URL, secret and plugin admin_key from the configs named by ``-C``."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    config = Path(args[args.index(b"-C") + 1].decode())
    folder = config.parent
    for attempt in range(20):  # Janus's configs are rewritten at each restart
        try:
            general = config.read_text()
            http = (folder / "janus.transport.http.jcfg").read_text()
            videoroom = (folder / "janus.plugin.videoroom.jcfg").read_text()
            streaming = (folder / "janus.plugin.streaming.jcfg").read_text()
            ice_lite = _jcfg_value(general, "ice_lite") == "true"
            return JanusNodeInfo(
                role="egress" if ice_lite else "ingest", pid=pid, folder=folder,
                admin_url=(f"http://{_jcfg_value(http, 'admin_ip')}:"
                           f"{_jcfg_value(http, 'admin_port')}{_jcfg_value(http, 'admin_base_path')}"),
                admin_secret=_jcfg_value(general, "admin_secret"),
                admin_key=_jcfg_value(videoroom, "admin_key"),
                ice_lite=ice_lite,
                streaming_range=_jcfg_value(streaming, "rtp_port_range"),
            )
        except (OSError, ValueError):
            if attempt == 19:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def managed_nodes(gateway_pid: int) -> dict[str, JanusNodeInfo]:
    nodes = [read_node(pid) for pid in janus_children(gateway_pid)]
    if len(nodes) != 2 or {n.role for n in nodes} != {"ingest", "egress"}:
        # Both ICE-lite (janus_ice_lite set): the lower streaming range is ingest's.
        nodes.sort(key=lambda n: int(n.streaming_range.split("-")[0]))
        if len(nodes) == 2:
            nodes[0].role, nodes[1].role = "ingest", "egress"
        else:
            raise RuntimeError(f"expected 2 Janus children of {gateway_pid}, found {len(nodes)}")
    return {n.role: n for n in nodes}


# --------------------------------------------------------------------------
# the gateway process


class Gateway(GatewayProcess):
    """The gateway in its embedded default: two Janus nodes of its own, supervised."""

    def __init__(self, workdir: Path, log_level: str, extra_env: list[str],
                 heap_dir: Path | None = None) -> None:
        env = gateway_env(clean=True)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(GATEWAY_ENV)
        apply_env_items(env, extra_env, prepend=())
        self.env = {k: v for k, v in env.items() if k.startswith("WHIP_GATEWAY_")}
        self.heap_dir = heap_dir
        self.heap_dumps = 0
        base = gateway_command()
        if heap_dir is not None:
            # The same CLI, under tracemalloc, dumping its heap on SIGUSR2.
            base = [sys.executable, str(Path(__file__).resolve()), HEAP_PROBE_FLAG, str(heap_dir)]
        super().__init__(base, env, workdir / "gateway.log", free_port(),
                         ["--janus-interface", "v0", "--log-level", log_level])
        self.janus_pids: set[int] = set()  # every Janus child ever seen
        self.janus_folders: set[Path] = set()

    async def heap_dump(self, timeout: float = 120.0) -> int | None:
        """Ask the gateway (run with --heap-profile) for a heap snapshot; its index."""
        if self.heap_dir is None:
            return None
        index = self.heap_dumps
        self.heap_dumps += 1
        os.kill(self.proc.pid, signal.SIGUSR2)
        done = self.heap_dir / f"done-{index}"
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no heap snapshot {index} within {timeout} s")
            await asyncio.sleep(0.2)
        return index

    def nodes(self) -> dict[str, JanusNodeInfo]:
        nodes = managed_nodes(self.proc.pid)
        for node in nodes.values():
            self.janus_pids.add(node.pid)
            self.janus_folders.add(node.folder)
        return nodes

    def stop(self, timeout: float = 25.0) -> Json:  # type: ignore[override]
        """SIGTERM, wait; then check that none of its Janus processes is left."""
        t0 = time.monotonic()
        self.janus_pids.update(janus_children(self.proc.pid))
        super().stop(timeout)
        took = time.monotonic() - t0
        time.sleep(0.2)
        left = sorted(pid for pid in self.janus_pids | set(self.janus_by_folder())
                      if (st := proc_stat(pid)) and st[0] == "janus" and st[1] != "Z")
        return {"returncode": self.proc.returncode, "stop_s": took, "janus_left": left}

    def janus_by_folder(self) -> list[int]:
        """Any Janus process, whoever its parent, running from one of our config folders."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "janus" in cmdline and any(str(f) in cmdline for f in self.janus_folders):
                found.append(int(entry.name))
        return found

    def kill_all(self) -> None:
        """Last resort (the run-time cap was exceeded by far)."""
        for pid in [self.proc.pid, *self.janus_pids, *self.janus_by_folder()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def log_summary(path: Path) -> Json:
    """ERROR/WARNING lines of the gateway's log, grouped by message shape."""
    errors: Counter[str] = Counter()
    warnings: Counter[str] = Counter()
    lines = tracebacks = unexpected = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        lines += 1
        if line.startswith("Traceback"):
            tracebacks += 1
        if "unexpected error" in line:
            unexpected += 1
        for level, counter in ((" ERROR ", errors), (" WARNING ", warnings)):
            if level in line:
                message = line.split(level, 1)[1]
                shape = re.sub(r"\b[0-9a-f]{6,}\b|\d+(\.\d+)?", "N", message)
                counter[re.sub(r"'[^']*'", "'…'", shape)[:160]] += 1
    return {"lines": lines, "tracebacks": tracebacks, "unexpected_errors": unexpected,
            "errors": dict(errors.most_common(15)), "warnings": dict(warnings.most_common(15))}


# --------------------------------------------------------------------------
# --heap-profile: the gateway under tracemalloc (bench code in the gateway's
# process; nothing in gateway/ changes)

HEAP_PROBE_FLAG = "--run-gateway-with-heap-probe"
SESSION_TYPES = ("gateway.core.streams.PublisherSession", "gateway.janus.videoroom.RoomPublisher",
                 "gateway.core.egress.ViewerSession", "gateway.janus.streaming.StreamingViewer",
                 "gateway.core.egress.Variant", "gateway.core.egress.StreamEgress",
                 "gateway.janus.streaming.Mountpoint")


def run_gateway_with_heap_probe(out_dir: Path, argv: list[str]) -> int:
    """``whip-gateway <argv>``, traced; on SIGUSR2 write a snapshot and object counts."""
    import tracemalloc

    tracemalloc.start(int(os.environ.get("WHIP_SOAK_TRACE_FRAMES", "12")))
    dumps = 0

    def dump(_signum: int, _frame: Any) -> None:
        nonlocal dumps
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(out_dir / f"heap-{dumps}.snap"))
        types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
        current, peak = tracemalloc.get_traced_memory()
        (out_dir / f"types-{dumps}.json").write_text(json.dumps({
            "traced_bytes": current, "traced_peak_bytes": peak, "rss_kb": rss_kb(os.getpid()),
            "gc_objects": sum(types.values()), "types": dict(types.most_common(400))}))
        wanted = os.environ.get("WHIP_SOAK_REFERRERS", "gateway.core.streams.PublisherSession")
        (out_dir / f"referrers-{dumps}.txt").write_text(referrer_chains(set(wanted.split(","))))
        (out_dir / f"done-{dumps}").touch()
        dumps += 1

    signal.signal(signal.SIGUSR2, dump)
    from gateway.cli import main as gateway_main

    return gateway_main(argv)


def referrer_chains(type_names: set[str], per_type: int = 3, depth: int = 5) -> str:
    """Who keeps objects of these types alive: referrers, depth first, a few each."""
    import types as pytypes

    def name(o: Any) -> str:
        return f"{type(o).__module__}.{type(o).__qualname__}"

    def describe(o: Any) -> str:
        if isinstance(o, dict):
            return f"dict keys={list(o)[:6]}"
        if isinstance(o, pytypes.FrameType):
            return f"frame {o.f_code.co_filename}:{o.f_lineno} {o.f_code.co_name}"
        if isinstance(o, pytypes.FunctionType):
            return f"function {o.__qualname__}"
        if isinstance(o, pytypes.CellType):
            return "cell"
        return name(o)

    gc.collect()
    objects = [o for o in gc.get_objects() if name(o) in type_names]
    out = [f"{len(objects)} objects of {sorted(type_names)}"]
    ignore = {id(objects)}

    def walk(o: Any, level: int, seen: set[int]) -> None:
        if level >= depth:
            return
        refs = gc.get_referrers(o)
        ignore.add(id(refs))
        shown = 0
        for r in refs:
            if id(r) in ignore or id(r) in seen or isinstance(r, pytypes.FrameType):
                continue
            out.append("  " * (level + 1) + "<- " + describe(r))
            shown += 1
            walk(r, level + 1, seen | {id(r)})
            if shown >= 3:
                break

    for obj in objects[:per_type]:
        out.append(f"{describe(obj)} {getattr(obj, 'stream', '')} state="
                   f"{getattr(getattr(obj, 'state', None), 'value', '')} "
                   f"end_reason={getattr(obj, 'end_reason', '')}")
        walk(obj, 0, {id(obj)})
    return "\n".join(out) + "\n"


def heap_report(out_dir: Path, first: int, last: int, top: int = 12) -> Json:
    """What the gateway's Python heap gained between two snapshots."""
    import tracemalloc

    keep = [tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
            tracemalloc.Filter(False, "<unknown>")]
    s0 = tracemalloc.Snapshot.load(str(out_dir / f"heap-{first}.snap")).filter_traces(keep)
    s1 = tracemalloc.Snapshot.load(str(out_dir / f"heap-{last}.snap")).filter_traces(keep)
    t0 = json.loads((out_dir / f"types-{first}.json").read_text())
    t1 = json.loads((out_dir / f"types-{last}.json").read_text())
    by_line = [st for st in s1.compare_to(s0, "lineno") if st.size_diff > 0][:top]
    by_trace = [st for st in s1.compare_to(s0, "traceback") if st.size_diff > 0][:4]
    types = Counter(t1["types"])
    types.subtract(t0["types"])
    return {
        "traced_start_bytes": t0["traced_bytes"], "traced_end_bytes": t1["traced_bytes"],
        "traced_peak_bytes": t1["traced_peak_bytes"],
        "rss_start_kb": t0["rss_kb"], "rss_end_kb": t1["rss_kb"],
        "gc_objects_start": t0["gc_objects"], "gc_objects_end": t1["gc_objects"],
        "top_lines": [{"where": str(st.traceback[0]), "size_diff": st.size_diff,
                       "count_diff": st.count_diff} for st in by_line],
        "top_tracebacks": [{"size_diff": st.size_diff, "count_diff": st.count_diff,
                            "traceback": st.traceback.format(most_recent_first=True)[:24]}
                           for st in by_trace],
        "type_count_diff": {k: v for k, v in types.most_common() if v > 0}
        if len(types) else {},
        # Per-session objects that must all be gone once the gateway is empty.
        "sessions_alive_end": {k: t1["types"].get(k, 0) for k in SESSION_TYPES},
        "sessions_alive_start": {k: t0["types"].get(k, 0) for k in SESSION_TYPES},
        "referrers_end": (out_dir / f"referrers-{last}.txt").read_text()[:6000],
    }


# --------------------------------------------------------------------------
# Janus admin API: what each node still holds


class Admin(AsyncJanusAdmin):
    """One managed node's admin API: its forwarders, and all it holds (the leak figures)."""

    def __init__(self, http: httpx.AsyncClient, node: JanusNodeInfo) -> None:
        super().__init__(http, node.admin_url, node.admin_secret, node.admin_key)
        self.node = node

    async def forwarders(self, room: int) -> list[Json]:
        reply = await self.plugin(VIDEOROOM, {"request": "listforwarders", "room": room})
        return [f for p in reply.get("publishers", []) for f in p.get("forwarders", [])]

    async def state(self) -> Json:
        """Sessions, handles, rooms, mountpoints and forwarders, with the leak figures."""
        sessions = list((await self.call("", {"janus": "list_sessions"})).get("sessions", []))
        handles = {}
        for sid in sessions:
            try:
                handles[sid] = list((await self.call(f"/{sid}", {"janus": "list_handles"}))
                                    .get("handles", []))
            except RuntimeError:  # the session went away between the two calls
                handles[sid] = []
        rooms = await self.rooms()
        forwarders = 0
        for room in rooms:
            try:
                forwarders += len(await self.forwarders(room["room"]))
            except RuntimeError:
                pass
        mounts = await self.mountpoints()
        total_handles = sum(len(h) for h in handles.values())
        return {
            "sessions": len(sessions),
            "handles": total_handles,
            # The gateway keeps 1 session per node with 2 control handles in it.
            "extra_sessions": len(sessions) - 1,
            "extra_handles": total_handles - 2,
            "rooms": len(rooms),
            "mountpoints": len(mounts),
            "forwarders": forwarders,
            "detail": {
                "handles": {str(k): v for k, v in handles.items()},
                "rooms": [(r.get("room"), r.get("description")) for r in rooms][:20],
                "mountpoints": [(m.get("id"), m.get("description")) for m in mounts][:20],
            },
        }


async def forwarder_audit(ingest: Admin, egress: Admin) -> Json:
    """Where the ingest node's RTP forwarders point, against the egress mountpoints.

    ok: the port belongs to a mountpoint of the same stream; orphan: to no
    mountpoint; crossed: to a mountpoint of ANOTHER stream (its viewers would
    get the wrong stream's media, or two streams at once).  Forwarders are
    listed before and after the mountpoints, and only those in both listings
    count: the gateway makes a mountpoint before its forwarders and stops them
    before destroying it, so one that outlives both listings without a
    mountpoint is a real orphan, not a set-up or teardown caught half-way.
    """

    async def forwarders() -> dict[tuple[int, int], Json]:
        found = {}
        for room in await ingest.rooms():
            try:
                for fwd in await ingest.forwarders(room["room"]):
                    found[(room["room"], int(fwd.get("stream_id", 0)))] = {
                        "room": room.get("description"), "port": int(fwd.get("port", 0)),
                        "stream_id": fwd.get("stream_id")}
            except RuntimeError:
                continue
        return found

    before = await forwarders()
    ports: dict[int, str] = {}
    for mount in await egress.mountpoints():
        try:
            info = (await egress.plugin(STREAMING, {"request": "info", "id": mount["id"]})).get("info", {})
        except RuntimeError:
            continue
        for media in info.get("media", []):
            for key in ("port", "rtcpport"):
                if media.get(key):
                    ports[int(media[key])] = str(info.get("description", ""))
    after = await forwarders()
    out: Counter[str] = Counter()
    crossed: list[Json] = []
    orphans: list[Json] = []
    for key in before.keys() & after.keys():
        fwd = after[key]
        target = ports.get(fwd["port"])
        if target is None:
            out["orphan"] += 1
            orphans.append(fwd)
        elif target == fwd["room"]:
            out["ok"] += 1
        else:
            out["crossed"] += 1
            crossed.append({**fwd, "mountpoint": target})
    return {"ok": out["ok"], "orphan": out["orphan"], "crossed": out["crossed"],
            "transient": len(before.keys() ^ after.keys()),
            "crossed_detail": crossed[:10], "orphan_detail": orphans[:10],
            "mountpoint_ports": {str(k): v for k, v in ports.items()}}


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
    done = asyncio.Event()

    @pc.on("connectionstatechange")
    def _changed() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            done.set()

    if pc.connectionState != "connected":
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            return False
    return pc.connectionState == "connected"


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
    exceptions: list[str] = field(default_factory=list)
    count_503: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, op, detail, down
    ops: int = 0
    started: float = 0.0
    elapsed: float = 0.0


class Soak:
    def __init__(self, args: argparse.Namespace, gateway: Gateway, http: httpx.AsyncClient,
                 admin_http: httpx.AsyncClient, pub_offers: list[Offer],
                 view_offers: list[Offer]) -> None:
        self.args = args
        self.gw = gateway
        self.http = http
        self.admin_http = admin_http
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
        self.outages: list[Json] = []
        self.audits: list[Json] = []
        self.series: list[Json] = []
        self.health_seen: Counter[str] = Counter()
        self.nodes = gateway.nodes()
        self.stop_ops_at = float("inf")
        self.aborted = False
        self._bg: list[asyncio.Task[Any]] = []

    # -- bookkeeping ------------------------------------------------------

    def admin(self, role: str) -> Admin:
        return Admin(self.admin_http, self.nodes[role])

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
        elif status not in EXPECTED[op] and status != "no_target" and len(ph.unexpected) < 50:
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
        pc = None
        if media:
            from tests.publishers import aiortc_publisher

            self.media["publish_attempts"] += 1
            self.media_open += 1
            self.media_pending["whip"] += 1
            try:
                pc = await aiortc_publisher()
            except BaseException:
                self.media_open -= 1
                self.media_pending["whip"] -= 1
                raise
            offer = offer_info(pc.localDescription.sdp)
        else:
            offer = self.rng.choice(self.pub_offers)
        registered = False
        try:
            r = await self.http.post(f"{self.gw.url}/whip/{stream}", content=offer.sdp,
                                     headers={"Content-Type": SDP})
            if r.status_code != 201:
                return r.status_code, r.text
            if not r.text.startswith("v=0"):
                return "201-without-sdp", r.text
            res = Resource("whip", stream, urljoin(self.gw.url, r.headers["location"]),
                           r.headers.get("etag", ""), offer, offer.ufrag, offer.pwd)
            if pc is not None:
                from aiortc import RTCSessionDescription

                res.pc, res.lifetime = pc, self.rng.uniform(4, 12)
                self.media["publishers"] += 1
                await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            self.resources.append(res)
            registered = True
            if pc is not None:
                res.busy = True
                try:
                    ok = await wait_connected(pc, 10)
                finally:
                    res.busy = False
                self.media["publishers_connected" if ok else "publishers_not_connected"] += 1
            return 201, ""
        finally:
            if pc is not None:
                self.media_pending["whip"] -= 1
                if not registered:
                    self.media_open -= 1
                    await pc.close()

    async def op_view(self) -> tuple[Any, str]:
        live = sorted(self.live)
        if live and self.rng.random() < 0.7:
            stream = self.rng.choice(live)
        else:
            known = sorted(self.published | {r.stream for r in self.resources if r.kind == "whip"})
            stream = self.rng.choice(known or self.streams)
        pc = frames = None
        if stream in self.live and self.media_slot("whep"):
            from tests.viewers import aiortc_viewer

            self.media["view_attempts"] += 1
            self.media_open += 1
            self.media_pending["whep"] += 1
            try:
                pc, frames = await aiortc_viewer()
            except BaseException:
                self.media_open -= 1
                self.media_pending["whep"] -= 1
                raise
            offer = offer_info(pc.localDescription.sdp)
        else:
            offer = self.rng.choice(self.view_offers)
        registered = False
        try:
            r = await self.http.post(f"{self.gw.url}/whep/{stream}", content=offer.sdp,
                                     headers={"Content-Type": SDP})
            if r.status_code != 201:
                return r.status_code, r.text
            res = Resource("whep", stream, urljoin(self.gw.url, r.headers["location"]),
                           r.headers.get("etag", ""), offer, offer.ufrag, offer.pwd)
            if pc is not None:
                from aiortc import RTCSessionDescription

                res.pc, res.frames, res.lifetime = pc, frames, self.rng.uniform(3, 8)
                self.media["viewers"] += 1
                await pc.setRemoteDescription(RTCSessionDescription(r.text, "answer"))
            self.resources.append(res)
            registered = True
            if pc is not None:
                res.busy = True
                try:
                    ok = await wait_connected(pc, 10)
                finally:
                    res.busy = False
                self.media["viewers_connected" if ok else "viewers_not_connected"] += 1
            return 201, ""
        finally:
            if pc is not None:
                self.media_pending["whep"] -= 1
                if not registered:
                    self.media_open -= 1
                    await pc.close()

    async def op_trickle(self) -> tuple[Any, str]:
        res = self.pick(recent=True)
        if res is None:
            return "no_target", ""
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
        await self.close_peer(res)  # a media peer hangs up (DTLS close), no DELETE
        return "dropped", ""

    async def one(self, op: str) -> None:
        t0 = time.perf_counter()
        detail = ""
        try:
            status, detail = await asyncio.wait_for(getattr(self, f"op_{op}")(),
                                                    self.args.op_timeout)
        except TimeoutError:
            status = "timeout"
        except Exception as exc:  # noqa: BLE001 - counted and sampled; the run goes on
            status = f"exception:{type(exc).__name__}"
            if len(self.phase.exceptions) < 30:
                self.phase.exceptions.append(f"{op}: {exc!r}")
        self.record(op, status, time.perf_counter() - t0, detail)

    # -- the run ----------------------------------------------------------

    async def run_ops(self, name: str, n: int, kills: bool) -> None:
        self.phase = Phase(started=time.monotonic())
        self.phases[name] = self.phase
        plan = self.rng.choices(OPS, weights=[self.args.weights[o] for o in OPS], k=n)
        kill_at = {}
        if kills and not self.args.no_kills:
            kill_at = {int(n * 0.5): "ingest", int(n * 0.75): "egress"}
        next_index = 0
        kill_tasks: list[asyncio.Task[None]] = []

        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                if time.monotonic() > self.stop_ops_at:
                    self.aborted = True
                    return
                i = next_index
                next_index += 1
                if i in kill_at:
                    kill_tasks.append(asyncio.create_task(self.kill(kill_at[i], i)))
                if i % 200 == 0:
                    self.forget_old()
                    if i % 500 == 0:
                        self.sample(name, i)
                await self.one(plan[i])
                self.phase.ops += 1

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        if kill_tasks:
            await asyncio.gather(*kill_tasks)
        self.phase.elapsed = time.monotonic() - self.phase.started

    def sample(self, phase: str, index: int) -> None:
        entry: Json = {"phase": phase, "op": index, "t": round(time.monotonic(), 2),
                       "gateway_rss_kb": rss_kb(self.gw.proc.pid),
                       "known_resources": len(self.resources), "live": len(self.live),
                       "published": len(self.published), "media_open": self.media_open}
        for role, node in self.nodes.items():
            try:
                entry[f"{role}_rss_kb"] = rss_kb(node.pid)
            except (OSError, RuntimeError):
                pass
        self.series.append(entry)

    async def kill(self, role: str, at_op: int) -> None:
        """SIGKILL one managed Janus; time how the gateway notices and restarts it."""
        old = self.nodes[role]
        event: Json = {"role": role, "at_op": at_op, "old_pid": old.pid}
        # Mountpoint ports just before the kill: forwarders still aimed at them
        # afterwards were left behind for the dead node's mountpoints.
        await self.audit(f"just before the {role} kill")
        before = dict(self.audits[-1].get("mountpoint_ports", {}))
        t0 = time.monotonic()
        event["t_kill"] = round(t0, 3)
        os.kill(old.pid, signal.SIGKILL)
        outage: Json = {"role": role, "start": t0, "end": None}
        self.outages.append(outage)
        deadline = t0 + 30
        while time.monotonic() < deadline:
            if not (await self.health()).get(role, {}).get("healthy", True):
                event["marked_down_s"] = round(time.monotonic() - t0, 3)
                break
            await asyncio.sleep(0.05)
        while time.monotonic() < deadline:
            fresh = [p for p in janus_children(self.gw.proc.pid) if p != old.pid]
            found = [read_node(p) for p in fresh]
            new = [n for n in found if n.role == role]
            if new:
                event["new_pid"] = new[0].pid
                event["new_process_s"] = round(time.monotonic() - t0, 3)
                break
            await asyncio.sleep(0.05)
        while time.monotonic() < deadline:
            if (await self.health()).get(role, {}).get("healthy"):
                event["healthy_s"] = round(time.monotonic() - t0, 3)
                break
            await asyncio.sleep(0.05)
        else:
            event["healthy_s"] = None
        outage["end"] = time.monotonic() + 1.0  # a request sent just before may still 503
        try:
            self.nodes = self.gw.nodes()  # re-read: same folder, same ports and secrets expected
            new_node = self.nodes[role]
            event["same_admin"] = (new_node.admin_url, new_node.admin_secret, new_node.admin_key) == (
                old.admin_url, old.admin_secret, old.admin_key)
        except (OSError, RuntimeError, ValueError) as exc:
            event["reread_error"] = repr(exc)
        outage["event"] = event
        # Forwarders made for the old node's mountpoints: are any left, or feeding
        # mountpoints that the restarted node gave the same ports?
        for delay in (0.5, 3.0):
            await asyncio.sleep(delay)
            await self.audit(f"{delay:g} s after the {role} restart")
            found = self.audits[-1]
            found["orphans_aimed_at_killed_mountpoints"] = [
                {**o, "old_mountpoint": before[str(o["port"])]}
                for o in found.get("orphan_detail", []) if str(o["port"]) in before]

    async def health(self) -> dict[str, Json]:
        try:
            reply = await self.http.get(f"{self.gw.url}/healthz", timeout=2)
            return dict(reply.json().get("nodes", {}))
        except (httpx.HTTPError, ValueError):
            return {}

    async def poller(self) -> None:
        """Once a second: which streams are live (for views), node health; audits."""
        last_audit = time.monotonic()
        while True:
            try:
                body = (await self.http.get(f"{self.gw.url}/api/streams", timeout=3)).json()
                streams = body.get("streams", {})
                self.live = {name for name, s in streams.items() if s.get("live")}
                self.published = set(streams)
            except (httpx.HTTPError, ValueError):
                pass
            for name, node in (await self.health()).items():
                self.health_seen[f"{name}:{'up' if node.get('healthy') else 'down'}"] += 1
            if self.args.audit_every and time.monotonic() - last_audit > self.args.audit_every:
                last_audit = time.monotonic()
                await self.audit("periodic")
            await asyncio.sleep(1.0)

    async def audit(self, label: str) -> None:
        try:
            found = await forwarder_audit(self.admin("ingest"), self.admin("egress"))
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
            found = {"error": repr(exc)}
        found.update(label=label, t=round(time.monotonic(), 2),
                     op=self.phase.ops if self.phase else None)
        if "error" not in found and not label.startswith("just before"):
            found.pop("mountpoint_ports", None)
        self.audits.append(found)

    # -- the end of a phase: delete, settle, look -------------------------

    async def settle(self, label: str) -> Json:
        """DELETE everything known; wait for the gateway to be empty and its timeouts to pass."""
        t0 = time.monotonic()
        out: Json = {}
        deletes: Counter[Any] = Counter()
        todo, self.resources = list(self.resources), []
        sem = asyncio.Semaphore(self.args.concurrency)

        async def delete(res: Resource) -> None:
            async with sem:
                try:
                    r = await self.http.delete(res.url)
                    deletes[r.status_code] += 1
                except httpx.HTTPError as exc:
                    deletes[f"exception:{type(exc).__name__}"] += 1
                finally:
                    await self.close_peer(res)

        await asyncio.gather(*(delete(r) for r in todo))
        out["final_deletes"] = dict(deletes)
        deleted_at = time.monotonic()
        # Wait: /api/streams empty and every node's load 0, up to 15 s.
        bound = deleted_at + self.args.settle_timeout
        streams: Json = {}
        loads: Json = {}
        while True:
            try:
                streams = (await self.http.get(f"{self.gw.url}/api/streams")).json()["streams"]
            except (httpx.HTTPError, ValueError, KeyError):
                streams = {"?": "unreadable"}
            loads = {name: n.get("load") for name, n in (await self.health()).items()}
            if not streams and not any(loads.values()) or time.monotonic() > bound:
                break
            await asyncio.sleep(0.2)
        out["streams_empty_after_s"] = round(time.monotonic() - deleted_at, 2) if not streams else None
        out["streams_left"] = streams
        # ... and the gateway's own timers: connect timeouts, mountpoint grace.
        timers = max([float(v) for k, v in self.gw.env.items()
                      if k.endswith(("CONNECT_TIMEOUT", "MEDIA_TIMEOUT", "GRACE")) and v] or [3.0])
        wait = min(deleted_at + timers + 1.0, bound) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        loads = {name: n.get("load") for name, n in (await self.health()).items()}
        out["node_load"] = loads
        out["settle_s"] = round(time.monotonic() - t0, 2)
        out["janus"] = await self.janus_state()
        out["gateway_rss_kb"] = rss_kb(self.gw.proc.pid)
        out["label"] = label
        return out

    async def janus_state(self) -> Json:
        found = {}
        for role in ("ingest", "egress"):
            try:
                found[role] = await self.admin(role).state()
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                found[role] = {"error": repr(exc)}
        return found


# --------------------------------------------------------------------------
# the report


LEAK_KINDS = ("extra_sessions", "extra_handles", "rooms", "mountpoints", "forwarders")


def leak_total(janus: Json) -> int:
    total = 0
    for node in janus.values():
        if "error" in node:
            return -1
        total += sum(abs(node[k]) for k in LEAK_KINDS)
    return total


def in_outage(t: float, outages: list[Json]) -> bool:
    return any(o["start"] <= t <= (o["end"] or float("inf")) for o in outages)


def summarize(soak: Soak, results: Json) -> None:
    main = soak.phases.get("main")
    if main is None:
        return
    statuses = {op: {str(k): v for k, v in main.statuses[op].most_common()} for op in OPS}
    five_xx = {op: {s: n for s, n in c.items() if isinstance(s, int) and s >= 500 and s != 503}
               for op, c in main.statuses.items()}
    in_out = Counter(in_outage(t, soak.outages) for t, *_ in main.count_503)
    shapes = Counter(f"{op} while {down} down: {re.sub(r'[0-9]+(.[0-9]+)? s', 'N s', msg)}"
                     for _, op, msg, down in main.count_503)
    results["main"] = {
        "ops": main.ops,
        "elapsed_s": main.elapsed,
        "ops_per_s": main.ops / main.elapsed if main.elapsed else None,
        "statuses": statuses,
        "latency_ms": {op: {"p50": percentile(v, 50), "p95": percentile(v, 95), "max": max(v)}
                       for op, v in main.latency_ms.items() if v},
        "fivexx_not_503": {op: v for op, v in five_xx.items() if v},
        "503_during_outage": in_out[True],
        "503_outside_outage": in_out[False],
        "503_by_op": dict(Counter(op for _, op, *_ in main.count_503)),
        "503_messages": dict(shapes.most_common()),
        "timeouts": sum(c.get("timeout", 0) for c in main.statuses.values()),
        "exceptions": sum(n for c in main.statuses.values() for s, n in c.items()
                          if str(s).startswith("exception")),
        "exception_samples": main.exceptions,
        "unexpected_samples": main.unexpected,
    }
    warm = soak.phases.get("warmup")
    if warm is not None:
        results["warmup"] = {"ops": warm.ops, "elapsed_s": warm.elapsed,
                             "statuses": {op: {str(k): v for k, v in warm.statuses[op].items()}
                                          for op in OPS}}


def report(results: Json) -> str:
    out = []
    p = results["params"]
    m = results.get("main")
    if m is None:
        return "no main phase ran"
    out.append(f"soak: {m['ops']} ops (+{p['warmup']} warm-up), concurrency {p['concurrency']}, "
               f"media share {p['media_share']} (at most {p['max_media']} media publishers and "
               f"{p['max_media']} media viewers), "
               f"{p['streams']} streams, seed {p['seed']}"
               + ("  ABORTED (run-time cap)" if results.get("aborted") else ""))
    out.append(f"main phase {m['elapsed_s']:.1f} s, {m['ops_per_s']:.1f} ops/s; whole run "
               f"{results.get('elapsed_s', float('nan')):.1f} s")
    out.append("")
    out.append(f"{'op':<12}{'n':>6}  {'p50 ms':>7}{'p95 ms':>8}{'max ms':>8}  statuses")
    for op in OPS:
        counts = m["statuses"].get(op, {})
        lat = m["latency_ms"].get(op, {})
        n = sum(counts.values())
        def fmt(k: str, lat: Json = lat) -> str:
            return f"{lat[k]:>7.1f}" if lat else f"{'-':>7}"

        out.append(f"{op:<12}{n:>6}  {fmt('p50')}{fmt('p95'):>8}{fmt('max'):>8}  "
                   + " ".join(f"{k}:{v}" for k, v in counts.items()))
    med = results.get("media", {})
    out.append(f"media peers: {med.get('publishers', 0)} of {med.get('publish_attempts', 0)} publishers "
               f"({med.get('publishers_connected', 0)} connected), {med.get('viewers', 0)} of "
               f"{med.get('view_attempts', 0)} viewers "
               f"({med.get('viewers_connected', 0)} connected, {med.get('viewers_with_frames', 0)} "
               f"decoded frames); {results.get('forgotten', 0)} signalling-only resources "
               f"abandoned (forgotten after {FORGET_S:.0f} s)")
    out.append("")
    for o in results.get("restarts", []):
        e = o.get("event", {})
        out.append(f"{e.get('role')} Janus SIGKILLed at op {e.get('at_op')}: marked down after "
                   f"{e.get('marked_down_s')} s, new process after {e.get('new_process_s')} s, "
                   f"healthy after {e.get('healthy_s')} s; same admin URL/secret/key after: "
                   f"{e.get('same_admin')}")
    out.append(f"503: {m['503_during_outage']} during outages, {m['503_outside_outage']} outside "
               f"({m['503_by_op']})")
    for message, n in list(m.get("503_messages", {}).items())[:10]:
        out.append(f"  503 x{n}: {message[:150]}")
    out.append(f"5xx other than 503: {m['fivexx_not_503'] or 0}; timeouts: {m['timeouts']}; "
               f"exceptions: {m['exceptions']}")
    for sample in m["unexpected_samples"][:8]:
        out.append(f"  unexpected: {sample['op']} -> {sample['status']}: {sample['detail'][:160]}")
    for sample in m["exception_samples"][:5]:
        out.append(f"  exception: {sample[:200]}")
    audits = [a for a in results.get("audits", []) if "error" not in a]
    if audits:
        out.append(f"forwarder audits ({len(audits)}): max orphan {max(a['orphan'] for a in audits)}, "
                   f"max crossed {max(a['crossed'] for a in audits)} (target 0; orphan = aimed at no "
                   "mountpoint, crossed = feeding another stream's mountpoint)")
        for a in audits:
            stale = a.get("orphans_aimed_at_killed_mountpoints")
            if stale:
                out.append(f"  {a['label']}: {len(stale)} forwarder(s) still aimed at the killed "
                           f"node's mountpoints: " + ", ".join(
                               f"{o['room']} -> port {o['port']} (was {o['old_mountpoint']})"
                               for o in stale[:4]))
            for c in a.get("crossed_detail", [])[:4]:
                out.append(f"  {a['label']}: CROSSED {c['room']} -> port {c['port']} of {c['mountpoint']}")
    out.append("")
    for label in ("after_warmup", "end"):
        s = results.get(label)
        if not s:
            continue
        empty = (f"/api/streams empty after {s['streams_empty_after_s']} s"
                 if s["streams_empty_after_s"] is not None else
                 f"/api/streams NOT empty after {p['settle_timeout']:g} s: "
                 + ", ".join(f"{k} ({v['publisher']['state']})" if isinstance(v, dict) else k
                             for k, v in s["streams_left"].items()))
        out.append(f"Janus after {'warm-up' if label == 'after_warmup' else 'the run'} "
                   f"(final DELETEs {s['final_deletes']}; {empty}; node load {s['node_load']}; "
                   f"settled {s['settle_s']} s):")
        out.append(f"  {'node':<8}" + "".join(f"{k:>16}" for k in LEAK_KINDS))
        for role, st in s["janus"].items():
            if "error" in st:
                out.append(f"  {role:<8}  {st['error']}")
            else:
                out.append(f"  {role:<8}" + "".join(f"{st[k]:>16}" for k in LEAK_KINDS))
        again = s.get("janus_again")
        if again is not None:
            out.append(f"  5 s later: total {leak_total(again)} (target 0)")
    rss = results.get("rss")
    if rss:
        out.append("")
        out.append(f"gateway RSS: start {rss['start_kb'] / 1024:.1f} MiB (after {p['warmup']} warm-up "
                   f"ops and their clean-up, so imports, lazy set-up and caches are excluded), "
                   f"end {rss['end_kb'] / 1024:.1f} MiB, growth {rss['growth_pct']:+.2f} % "
                   f"(target < 5 %); peak seen {rss['peak_kb'] / 1024:.1f} MiB")
        marks = rss.get("trajectory_kb") or {}
        if marks:
            out.append("gateway RSS during the run: " + ", ".join(
                f"{k} {v / 1024:.1f}" for k, v in marks.items()) + " MiB (live sessions included)")
        out.append(f"gateway CPU: {rss['gateway_cpu_s']:.1f} s in the main phase, "
                   f"{rss['gateway_cpu_ms_per_op']:.2f} ms per op")
    heap = results.get("heap")
    if heap:
        mib = 1024 * 1024
        out.append(f"gateway Python heap (tracemalloc, after gc): start "
                   f"{heap['traced_start_bytes'] / mib:.2f} MiB, end {heap['traced_end_bytes'] / mib:.2f}"
                   f" MiB ({(heap['traced_end_bytes'] - heap['traced_start_bytes']) / 1024:+.0f} KiB), "
                   f"peak {heap['traced_peak_bytes'] / mib:.2f} MiB; gc objects "
                   f"{heap['gc_objects_start']} -> {heap['gc_objects_end']}")
        for line in heap["top_lines"][:8]:
            out.append(f"  {line['size_diff'] / 1024:+8.1f} KiB {line['count_diff']:+7d} blocks  "
                       f"{line['where']}")
        grown = list(heap["type_count_diff"].items())[:10]
        if grown:
            out.append("  object types grown: " + ", ".join(f"{k} +{v}" for k, v in grown))
        alive = {k.rsplit(".", 1)[1]: v for k, v in heap["sessions_alive_end"].items() if v}
        out.append(f"  per-session objects still alive in the empty gateway: {alive or 'none'} "
                   "(target none; who holds them: referrers-N.txt in the heap folder)")
    logs = results.get("gateway_log", {})
    out.append(f"gateway log: {results.get('gateway_log_path')} ({logs.get('lines')} lines, "
               f"{logs.get('tracebacks')} tracebacks, {logs.get('unexpected_errors')} "
               f"'unexpected error')")
    for message, n in list(logs.get("errors", {}).items())[:8]:
        out.append(f"  ERROR x{n}: {message}")
    stop = results.get("gateway_exit")
    if stop:
        out.append(f"gateway stopped (exit {stop['returncode']}) in {stop['stop_s']:.1f} s; Janus "
                   f"processes left: {stop['janus_left'] or 'none'}")
    return "\n".join(out)


# --------------------------------------------------------------------------
# main


async def run(args: argparse.Namespace, gateway: Gateway, results: Json, started: float) -> None:
    http = httpx.AsyncClient(timeout=httpx.Timeout(args.request_timeout), limits=httpx.Limits(
        max_connections=None, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_S))
    admin_http = httpx.AsyncClient(timeout=5)
    soak: Soak | None = None
    poller: asyncio.Task[None] | None = None
    try:
        t0 = time.monotonic()
        pub_offers = await offer_pool(args.offers, "sendonly")
        view_offers = await offer_pool(args.offers, "recvonly")
        results["offer_pool_s"] = time.monotonic() - t0
        soak = Soak(args, gateway, http, admin_http, pub_offers, view_offers)
        soak.stop_ops_at = started + args.max_seconds - 90  # leave time to clean up
        results["nodes_at_start"] = {r: {"pid": n.pid, "admin_url": n.admin_url,
                                         "folder": str(n.folder)} for r, n in soak.nodes.items()}
        results["janus_at_start"] = await soak.janus_state()
        poller = asyncio.create_task(soak.poller())

        print(f"warm-up: {args.warmup} ops ...", flush=True)
        await soak.run_ops("warmup", args.warmup, kills=False)
        results["after_warmup"] = await soak.settle("after_warmup")
        await gateway.heap_dump()
        rss_start = rss_kb(gateway.proc.pid)
        cpu0 = cpu_seconds(gateway.proc.pid)
        soak.sample("main", 0)
        print(f"gateway RSS after warm-up {rss_start / 1024:.1f} MiB; {args.ops} ops ...", flush=True)

        progress = asyncio.create_task(show_progress(soak, args.ops))
        try:
            await soak.run_ops("main", args.ops, kills=True)
        finally:
            progress.cancel()
        await soak.audit("end of ops")
        cpu1 = cpu_seconds(gateway.proc.pid)
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        poller = None
        print("deleting what is left, letting the gateway's timers expire ...", flush=True)
        end = await soak.settle("end")
        await asyncio.sleep(5)
        end["janus_again"] = await soak.janus_state()
        results["end"] = end
        rss_end = rss_kb(gateway.proc.pid)
        last = await gateway.heap_dump()
        if last is not None:
            results["heap"] = heap_report(gateway.heap_dir, 0, last)  # type: ignore[arg-type]
        peak = max([rss_end, rss_start] + [s["gateway_rss_kb"] for s in soak.series
                                           if s["phase"] == "main"])
        main_series = [x for x in soak.series if x["phase"] == "main"]
        trajectory = {}
        for share in (0.25, 0.5, 0.75):
            near = [x for x in main_series if x["op"] >= args.ops * share]
            if near:
                trajectory[f"op {near[0]['op']}"] = near[0]["gateway_rss_kb"]
        results["rss"] = {"start_kb": rss_start, "end_kb": rss_end, "peak_kb": peak,
                          "trajectory_kb": trajectory,
                          "growth_pct": (rss_end - rss_start) * 100 / rss_start,
                          "gateway_cpu_s": cpu1 - cpu0,
                          "gateway_cpu_ms_per_op": (cpu1 - cpu0) * 1000 / max(args.ops, 1)}
    finally:
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        if soak is not None:
            for res in soak.resources:
                await soak.close_peer(res)
            summarize(soak, results)
            results["aborted"] = soak.aborted
            results["media"] = dict(soak.media)
            results["forgotten"] = soak.forgotten
            results["restarts"] = [{k: v for k, v in o.items() if k != "start" and k != "end"}
                                   for o in soak.outages]
            results["audits"] = soak.audits
            results["series"] = soak.series
            results["health_seen"] = dict(soak.health_seen)
        await http.aclose()
        await admin_http.aclose()


async def show_progress(soak: Soak, total: int) -> None:
    while True:
        await asyncio.sleep(15)
        ph = soak.phase
        rate = ph.ops / max(time.monotonic() - ph.started, 1e-9)
        print(f"  {ph.ops}/{total} ops, {rate:.1f} ops/s, known {len(soak.resources)}, "
              f"live {len(soak.live)}, media peers {soak.media_open}, gateway RSS "
              f"{rss_kb(soak.gw.proc.pid) / 1024:.1f} MiB", flush=True)


def parse_weights(text: str) -> dict[str, float]:
    weights = {op: 0.0 for op in OPS}
    for part in text.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in weights:
            raise argparse.ArgumentTypeError(f"unknown operation {name!r} (known: {', '.join(OPS)})")
        weights[name.strip()] = float(value)
    if sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError("the weights add up to nothing")
    return weights


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=10_000, help="operations in the measured run")
    parser.add_argument("--warmup", type=int, default=200,
                        help="operations before the RSS baseline (not counted in --ops)")
    parser.add_argument("--concurrency", type=int, default=8, help="operations in flight at once")
    parser.add_argument("--media-share", type=float, default=0.03,
                        help="share of publishes and views that connect real aiortc media")
    parser.add_argument("--max-media", type=int, default=3,
                        help="media publishers open at once, at most; the same again for viewers")
    parser.add_argument("--streams", type=int, default=500, help="stream names s0..sN-1")
    parser.add_argument("--offers", type=int, default=30, help="pooled offers of each kind")
    parser.add_argument("--weights", type=parse_weights, default=parse_weights(DEFAULT_WEIGHTS),
                        help=f"operation weights (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-kills", action="store_true", help="do not SIGKILL Janus mid-way")
    parser.add_argument("--op-timeout", type=float, default=20.0, help="per operation, seconds")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="per HTTP request")
    parser.add_argument("--settle-timeout", type=float, default=15.0,
                        help="bound on waiting for the gateway to empty after the final DELETEs")
    parser.add_argument("--audit-every", type=float, default=5.0,
                        help="seconds between forwarder audits during the run (0: off)")
    parser.add_argument("--max-seconds", type=float, default=1200.0,
                        help="cap on the whole run: no new operations after cap-90 s, then clean-up")
    parser.add_argument("--gateway-log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the gateway (e.g. to change a timeout)")
    parser.add_argument("--heap-profile", action="store_true",
                        help="run the gateway under tracemalloc and report what its Python heap "
                             "gained between the two settled points (slows the gateway down)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.ops < 4 or args.concurrency < 1 or args.offers < 1 or args.streams < 1:
        parser.error("--ops >= 4, --concurrency, --offers and --streams >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not enter_netns("soak"):
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="whip-soak-"))
    gateway: Gateway | None = None

    def kill_children() -> None:
        if gateway is not None:
            gateway.kill_all()

    install_hard_cap("soak", args.max_seconds + 120, kill_children)
    results: Json = {"params": params_of(args), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    started = time.monotonic()

    def body() -> None:
        nonlocal gateway
        heap_dir = workdir / "heap" if args.heap_profile else None
        if heap_dir is not None:
            heap_dir.mkdir()
        gateway = Gateway(workdir, args.gateway_log_level, args.gateway_env, heap_dir)
        results["gateway_command"] = gateway.command
        results["gateway_env"] = gateway.env
        results["gateway_log_path"] = str(gateway.log_path)
        print(f"gateway log: {gateway.log_path}", flush=True)
        results["gateway_health"] = gateway.wait_healthy(60, poll=0.1)
        results["gateway_commit"] = git("describe", "--always", "--dirty")
        results["gateway_dirty_files"] = git("status", "--porcelain", "--", "gateway").splitlines()
        print(f"gateway {results['gateway_commit']} at {gateway.url} (pid {gateway.proc.pid}), "
              f"nodes {list(results['gateway_health']['nodes'])}", flush=True)
        run_capped(lambda: run(args, gateway, results, started),  # type: ignore[arg-type]
                   lambda: args.max_seconds - (time.monotonic() - started))

    status = 1
    try:
        status, outcome = guarded("soak", body, args.max_seconds,
                                  lambda: gateway.log_tail() if gateway is not None else "")
        if outcome == "timeout":
            results["aborted"] = True
    finally:
        if gateway is not None:
            results["gateway_exit"] = gateway.stop()
            results["gateway_log"] = log_summary(gateway.log_path)
        signal.alarm(0)
    results["elapsed_s"] = time.monotonic() - started

    if "main" in results:
        print()
        print(report(results))
    failures = []
    m = results.get("main", {})
    if m.get("fivexx_not_503"):
        failures.append("5xx other than 503")
    if m.get("timeouts") or m.get("exceptions"):
        failures.append("timeouts/exceptions")
    end = results.get("end")
    if end is None or leak_total(end["janus"]) != 0:
        failures.append("Janus leftovers")
    if end is not None and end["streams_left"]:
        failures.append("streams left in the gateway")
    if end is not None and any(end["node_load"].values()):
        failures.append("node load not back to 0")
    heap = results.get("heap")
    if heap and any(heap["sessions_alive_end"].values()):
        failures.append("session objects alive in the empty gateway")
    if results.get("rss") and results["rss"]["growth_pct"] >= 5:
        failures.append("RSS growth >= 5 %")
    if (results.get("gateway_exit") or {}).get("janus_left"):
        failures.append("Janus processes left")
    results["failures"] = failures
    print(f"\nresult: {'PASS' if not failures else 'FAIL: ' + ', '.join(failures)}")
    write_json(args.json, results)
    return status if status else (1 if failures else 0)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == HEAP_PROBE_FLAG:
        sys.exit(run_gateway_with_heap_probe(Path(sys.argv[2]), sys.argv[3:]))
    sys.exit(main())
