"""The soak's driver: the gateway and its Janus nodes, the run, the kills, the audits.

The gateway runs in its embedded default and starts two Janus processes of
its own; the bench finds them in /proc and reads their admin API from the
configs they were started with.  ``Soak`` runs ``SoakOps``' operations
``--concurrency`` at a time, SIGKILLs each Janus once mid-way and times the
gateway's recovery, audits the RTP forwarders, and at the end DELETEs what
is left, waits for the gateway to settle and asks both nodes what they hold.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import (STREAMING, VIDEOROOM, GatewayProcess, Json, apply_env_items, gateway_env,
                     janus_children, proc_stat, rss_kb)
from janus_direct import AsyncJanusAdmin
from probes import gateway_base
from soak_scenario import OPS, Phase, Resource, SoakOps

from gateway.janus.process import free_port

GATEWAY_ENV = {
    # Every rate limit off: one client address makes thousands of sessions a
    # minute here (with the 120/minute publish default, 2 in 3 publishes were
    # 429 and ICE restarts had almost nothing to restart).
    "WHIP_GATEWAY_RATE_LIMIT_PER_CLIENT": "",
    "WHIP_GATEWAY_RATE_LIMIT_VIEW_PER_CLIENT": "",
    "WHIP_GATEWAY_RATE_LIMIT_PUBLISH_PER_CLIENT": "",
    "WHIP_GATEWAY_RATE_LIMIT_PER_SESSION": "",
    "WHIP_GATEWAY_RATE_LIMIT_PER_STREAM": "",
    "WHIP_GATEWAY_PUBLISHER_CONNECT_TIMEOUT": "3",
    "WHIP_GATEWAY_PUBLISHER_MEDIA_TIMEOUT": "2",
    "WHIP_GATEWAY_VIEWER_CONNECT_TIMEOUT": "3",
    "WHIP_GATEWAY_MOUNTPOINT_GRACE": "0.5",
}


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


# The gateway's line for each Janus exit (gateway/janus/process.py): -N is signal N.
EXIT_LINE = re.compile(r"Janus exited \(code (-?\d+|None)\)")


def janus_by_config(folder: Path) -> int | None:
    """The live Janus started with ``-C <folder>/janus.jcfg``, or None.

    A node keeps its config folder across restarts, and its pid does not: a
    planned kill looks its target up here at the moment of the kill (a pid
    remembered from before an unplanned restart would hit the dead process).
    """
    config = str(folder / "janus.jcfg").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-C" in args and args.index(b"-C") + 1 < len(args) and args[args.index(b"-C") + 1] == config:
            st = proc_stat(int(entry.name))
            if st and st[0] == "janus" and st[1] != "Z":
                found.append(int(entry.name))
    return max(found) if found else None


def exit_status(pid: int) -> int | None:
    """The wait status of a zombie ``pid`` (/proc/PID/stat field 52), or None if gone/alive."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    if rest[0] != "Z" or len(rest) < 50:
        return None
    return int(rest[49])


def describe_status(status: int | None) -> Json:
    """A wait status as signal name / exit code / core dumped."""
    if status is None:
        return {"signal": None, "exit_code": None, "core_dumped": None}
    sig = status & 0x7F
    if sig:
        return {"signal": signal.Signals(sig).name if sig in signal.Signals._value2member_map_
                else f"signal {sig}", "exit_code": None, "core_dumped": bool(status & 0x80)}
    return {"signal": None, "exit_code": (status >> 8) & 0xFF, "core_dumped": False}


def chroot_wrapper(workdir: Path, root: Path) -> Path:
    """A Janus "binary" that runs the chroot's Janus (e.g. 1.4.1 of deploy/janus-sid.sh).

    The gateway writes a node's configs to a host folder and passes its path;
    the wrapper bind-mounts that folder at the same path inside the chroot in a
    mount namespace of its own, then execs chroot, which execs Janus: the pid
    the gateway holds is Janus's, and ``-C`` names the same path on both sides.
    """
    script = workdir / "janus-chroot.sh"
    script.write_text(f"""#!/bin/sh
root={str(root)!r}
folder=""
prev=""
for arg in "$@"; do [ "$prev" = "-F" ] && folder="$arg"; prev="$arg"; done
exec unshare --mount --propagation private /bin/sh -c \
  'r=$1; f=$2; shift 2; mkdir -p "$r$f" && mount --bind "$f" "$r$f" && exec chroot "$r" /usr/bin/janus "$@"' \
  janus-chroot "$root" "$folder" "$@"
""")
    script.chmod(0o755)
    return script


def backtrace(core: Path, chroot: Path | None, timeout: float = 240.0) -> str:
    """gdb's backtrace of a Janus core: the crashing thread, then every thread (short)."""
    binary = (chroot / "usr/bin/janus") if chroot else Path("/usr/bin/janus")
    command = ["gdb", "-batch", "-nx"]
    if chroot is not None:
        command += ["-ex", f"set sysroot {chroot}"]
    command += ["-ex", "bt 40", "-ex", "info threads", "-ex", "thread apply all bt 12",
                str(binary), str(core)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"gdb failed: {exc!r}"
    return done.stdout + done.stderr[-2000:]


# --------------------------------------------------------------------------
# the gateway process


class Gateway(GatewayProcess):
    """The gateway in its embedded default: two Janus nodes of its own, supervised."""

    def __init__(self, workdir: Path, log_level: str, extra_env: list[str],
                 heap_dir: Path | None = None, janus_chroot: Path | None = None) -> None:
        env = gateway_env(clean=True)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(GATEWAY_ENV)
        self.workdir = workdir
        self.janus_chroot = janus_chroot
        if janus_chroot is not None:
            env["WHIP_GATEWAY_JANUS_BINARY"] = str(chroot_wrapper(workdir, janus_chroot))
        apply_env_items(env, extra_env, prepend=())
        self.env = {k: v for k, v in env.items() if k.startswith("WHIP_GATEWAY_")}
        self.heap_dir = heap_dir
        self.heap_dumps = 0
        # With heap_dir, the same CLI under tracemalloc, dumping its heap on SIGUSR2.
        base = gateway_base(env, heap=heap_dir)
        # Janus inherits the gateway's working directory: with core_pattern
        # "core", that is where a crashing Janus leaves its core dump.
        super().__init__(base, env, workdir / "gateway.log", free_port(),
                         ["--janus-interface", "v0", "--log-level", log_level], cwd=workdir)
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

    def core_paths(self) -> list[Path]:
        """Where a Janus of this run dumps core (core_pattern "core": its working directory)."""
        paths = [self.workdir / "core"]
        if self.janus_chroot is not None:
            paths.append(self.janus_chroot / "core")  # chroot(1) changes to the new root
        return paths

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

    async def state(self, pooled_handles: int = 0, pooled_rooms: int = 0) -> Json:
        """Sessions, handles, rooms, mountpoints and forwarders, with the leak figures.

        The gateway's publisher pool (``ingest_pool_size``) holds handles and rooms
        by design: ``pooled_*`` is what it says it holds (its /metrics), and must
        match Janus exactly: the pool's rooms are the ones described as pooled."""
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
        described_pooled = sum(1 for r in rooms if " pool " in str(r.get("description") or ""))
        return {
            "sessions": len(sessions),
            "handles": total_handles,
            "pooled": {"handles": pooled_handles, "rooms": pooled_rooms},
            # The gateway keeps 1 session per node with 2 control handles in it,
            # and its pool's handles.
            "extra_sessions": len(sessions) - 1,
            "extra_handles": total_handles - 2 - pooled_handles,
            # Rooms beyond the pool's, and any mismatch between the pool's word and Janus's.
            "rooms": len(rooms) - described_pooled + abs(described_pooled - pooled_rooms),
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


class Soak(SoakOps):
    """The operations, run: workers, Janus kills, audits, samples, the settling."""

    def __init__(self, args: Any, gateway: Gateway, http: httpx.AsyncClient,
                 admin_http: httpx.AsyncClient, pub_offers: list[Any], view_offers: list[Any]) -> None:
        super().__init__(args, gateway.url, http, pub_offers, view_offers)
        self.gw = gateway
        self.admin_http = admin_http
        self.audits: list[Json] = []
        self.series: list[Json] = []
        self.health_seen: Counter[str] = Counter()
        self.nodes = gateway.nodes()
        self.stop_ops_at = float("inf")
        self.aborted = False
        self.started = time.monotonic()
        self.planned_pids: set[int] = set()  # Janus pids the bench SIGKILLs itself
        self.crashes: list[Json] = []  # every other Janus exit
        self.kill_errors: list[Json] = []
        self.crash_dir: Path | None = None  # where crash evidence is copied
        self._fills: set[asyncio.Task[None]] = set()
        self._log_pos = 0  # "Janus exited" lines of the gateway log read so far

    def admin(self, role: str) -> Admin:
        return Admin(self.admin_http, self.nodes[role])

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
                if kills and self.args.inject_crash and i == self.args.inject_crash[1]:
                    self.inject_crash(self.args.inject_crash[0])
                if i % 200 == 0:
                    self.forget_old()
                if i % 500 == 0:  # RSS against operations, for the plateau
                    self.sample(name, i)
                self.next_index = i
                await self.one(plan[i], i)
                self.phase.ops += 1

        await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))
        if kill_tasks:
            for outcome in await asyncio.gather(*kill_tasks, return_exceptions=True):
                if isinstance(outcome, Exception):  # reported; the run goes on to its report
                    self.kill_errors.append({"error": repr(outcome)})
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
        event: Json = {"role": role, "at_op": at_op}
        # Mountpoint ports just before the kill: forwarders still aimed at them
        # afterwards were left behind for the dead node's mountpoints.
        await self.audit(f"just before the {role} kill")
        before = dict(self.audits[-1].get("mountpoint_ports", {}))
        # The target is whatever Janus runs from the node's folder now: after an
        # unplanned restart, the pid known at start is long gone.
        target = None
        for _ in range(100):  # the node may be restarting right now: up to ~10 s
            target = janus_by_config(old.folder)
            if target is not None:
                break
            await asyncio.sleep(0.1)
        if target is None:
            event["error"] = f"no live Janus runs from {old.folder}; not killed"
            self.kill_errors.append(event)
            print(f"  planned {role} kill at op {at_op}: {event['error']}", flush=True)
            return
        event["old_pid"] = target
        t0 = time.monotonic()
        event["t_kill"] = round(t0, 3)
        self.planned_pids.add(target)
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            event["error"] = f"Janus {target} of {old.folder} exited just before the kill"
            self.kill_errors.append(event)
            print(f"  planned {role} kill at op {at_op}: {event['error']}", flush=True)
            return
        old = JanusNodeInfo(**{**old.__dict__, "pid": target})
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

    # -- unplanned Janus exits --------------------------------------------

    def inject_crash(self, role: str) -> None:
        """SIGSEGV to a node's Janus, NOT counted as planned: the test of the crash path."""
        pid = janus_by_config(self.nodes[role].folder)
        if pid is not None:
            os.kill(pid, signal.SIGSEGV)

    async def watch_janus(self, every: float = 0.05) -> None:
        """Notice every exit of a Janus of this run, and record the unplanned ones.

        Polls each node's pid; a zombie still holds its wait status (the gateway
        reaps it within ~0.25 s).  The gateway log's "Janus exited (code N)"
        lines are the cross-check at the end (``crashes_from_log``).
        """
        watched: dict[str, int | None] = {role: node.pid for role, node in self.nodes.items()}
        folders = {role: node.folder for role, node in self.nodes.items()}
        while True:
            for role, pid in list(watched.items()):
                if pid is None:
                    new = janus_by_config(folders[role])
                    if new is not None:
                        watched[role] = new
                        try:
                            self.nodes[role] = read_node(new)
                        except (OSError, ValueError):
                            pass
                    continue
                st = proc_stat(pid)
                if st is not None and st[1] != "Z":
                    continue
                status = exit_status(pid)
                watched[role] = None
                if pid not in self.planned_pids:
                    self.crash(role, pid, status)
            await asyncio.sleep(every)

    def crash(self, role: str, pid: int, status: int | None) -> None:
        """Record an unplanned exit: signal, time, operation number, operations in flight."""
        now = time.monotonic()
        event: Json = {
            "role": role, "pid": pid, **describe_status(status),
            "t_run_s": round(now - self.started, 3), "wall": time.strftime("%H:%M:%S"),
            "phase": next((k for k, v in self.phases.items() if v is self.phase), "?"),
            "op": getattr(self, "next_index", None),
            "in_flight": [dict(v) for v in self.in_flight.values()],
        }
        self.outages.append({"role": role, "start": now, "end": now + 3.0, "event": event,
                             "unplanned": True})
        self.crashes.append(event)
        if status is None:  # reaped before we looked: the gateway's log line says how it ended
            task = asyncio.get_running_loop().create_task(self.status_from_log(event))
            self._fills.add(task)
            task.add_done_callback(self._fills.discard)
        what = event["signal"] or (f"exit code {event['exit_code']}" if status is not None
                                   else "status from the gateway log, below")
        print(f"  UNPLANNED EXIT: {role} Janus {pid} ({what}) at {event['t_run_s']} s, "
              f"{event['phase']} op {event['op']}; in flight: "
              + "; ".join(f"#{f.get('i')} {f.get('op')} {f.get('target', '')}"
                          for f in event["in_flight"]), flush=True)
        self.keep_evidence(event)

    async def status_from_log(self, event: Json, bound: float = 5.0) -> None:
        """Fill an exit's signal from the next unread non-SIGKILL "Janus exited" log line."""
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            try:
                text = self.gw.log_path.read_text(errors="replace")
            except OSError:
                return
            for found in EXIT_LINE.finditer(text, self._log_pos):
                if found.group(1) not in ("-9", "None"):
                    self._log_pos = found.end()
                    event.update(describe_status(-int(found.group(1)) if int(found.group(1)) < 0
                                                 else int(found.group(1)) << 8))
                    event["status_from"] = "gateway log"
                    print(f"  UNPLANNED EXIT: {event['role']} Janus {event['pid']} was "
                          f"{event['signal'] or 'exit code ' + str(event['exit_code'])}", flush=True)
                    return
            await asyncio.sleep(0.1)

    def keep_evidence(self, event: Json) -> None:
        """Copy the node's Janus log and its core dump out of the run's temporary folders."""
        if self.crash_dir is None:
            return
        dest = self.crash_dir / f"{event['role']}-{event['pid']}"
        try:
            dest.mkdir(parents=True, exist_ok=True)
            node = self.nodes[event["role"]]
            log_file = node.folder / "janus.log"
            if log_file.exists():
                shutil.copy2(log_file, dest / "janus.log")
                event["janus_log"] = str(dest / "janus.log")
            for core in self.gw.core_paths():
                if core.exists() and core.stat().st_mtime >= time.time() - 30:
                    shutil.move(str(core), dest / "core")
                    event["core"] = str(dest / "core")
                    break
        except OSError as exc:
            event["evidence_error"] = repr(exc)

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

    async def pooled(self) -> dict[str, tuple[int, int]]:
        """(handles, rooms) the gateway's publisher pools hold, by node name (/metrics)."""
        out: dict[str, list[int]] = {}
        reply = await self.http.get(f"{self.gw.url}/metrics", timeout=5)
        for line in reply.text.splitlines():
            found = re.match(r'whip_gateway_publisher_pool_(handles|rooms)\{node="([^"]+)"\} (\S+)', line)
            if found:
                kind, node, value = found.groups()
                out.setdefault(node, [0, 0])[0 if kind == "handles" else 1] = int(float(value))
        return {node: (h, r) for node, (h, r) in out.items()}

    async def janus_state(self) -> Json:
        found = {}
        try:
            pooled = await self.pooled()
        except (httpx.HTTPError, ValueError) as exc:
            pooled = {}
            found["pool"] = {"error": repr(exc)}
        for role in ("ingest", "egress"):
            try:
                found[role] = await self.admin(role).state(*pooled.get(role, (0, 0)))
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                found[role] = {"error": repr(exc)}
        return found


