"""What the benches in bench/ share: the gateway process, /proc, the run's frame.

whip_setup.py, whep_ttff.py and soak.py all start ``whip-gateway serve`` as
a process of its own, wait for ``/healthz``, read CPU and memory of it and
of Janus from /proc, describe the machine, and run capped in time inside a
private network namespace.  These pieces live here once, so that a fix (say,
to how the gateway is stopped) reaches every bench; what a bench measures,
and how it reports it, stays in its own files.  Talking to Janus without the
gateway (admin API, baseline clients) is in janus_direct.py; listening
inside the gateway is in probes.py.

Importing this module puts the repository on ``sys.path`` (the benches run
as scripts from bench/, and ``gateway`` lives one level up).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

Json = dict[str, Any]
VIDEOROOM = "janus.plugin.videoroom"
STREAMING = "janus.plugin.streaming"
SDP = "application/sdp"
# Below uvicorn's 5 s keep-alive timeout: never reuse a connection the server
# may be closing (that race shows up as ReadError).
KEEPALIVE_S = 4.0
# The benches are one client (127.0.0.1) making hundreds of POSTs: the
# gateway's per-client/per-stream rate limits (abuse protection) would answer
# with 429 and the bench would measure those.
RATE_LIMITS_OFF = {f"WHIP_GATEWAY_RATE_LIMIT_{name}": "" for name in (
    "PER_CLIENT", "VIEW_PER_CLIENT", "PUBLISH_PER_CLIENT", "PER_STREAM", "PER_SESSION",
    "AUTH_FAILURES_PER_CLIENT")}


class BenchError(RuntimeError):
    """Something a bench did not expect from the gateway or Janus."""


# --------------------------------------------------------------------------
# statistics


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), NaN if empty.

    No numpy: the benches run in the gateway's own venv.
    """
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --------------------------------------------------------------------------
# /proc: processes, their CPU and memory, the machine's load


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of ``pid``, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1:stat.rindex(")")]
    rest = stat[stat.rindex(")") + 2:].split()
    return comm, rest[0], int(rest[1])


def janus_children(ppid: int) -> list[int]:
    """Live (not zombie) Janus processes whose parent is ``ppid``.

    How a bench finds the Janus nodes a gateway started and supervises itself.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = proc_stat(int(entry.name))
            if st and st[0] == "janus" and st[2] == ppid and st[1] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def rss_threads(pid: int) -> tuple[float, float]:
    """(VmRSS in KiB, thread count) of ``pid``; NaNs if it is gone."""
    rss = threads = float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = float(line.split()[1])
            elif line.startswith("Threads:"):
                threads = float(line.split()[1])
    except OSError:
        pass
    return rss, threads


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads, dead ones too); NaN if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


class CpuMeter:
    """CPU seconds of a few named processes, so a bench can say who spent what."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def add(self, into: dict[str, float], before: dict[str, float]) -> None:
        """Add what each process spent since ``before`` (a ``read()``) to ``into``."""
        for name, value in self.read().items():
            into[name] = into.get(name, 0.0) + value - before[name]


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far, from /proc/stat.

    Against the benches' own processes, it shows how much other load fell on
    a run (figures from a busy machine are noisier).
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # - idle, iowait


# --------------------------------------------------------------------------
# the machine, for the record


def git(*args: str) -> str:
    """``git -C REPO <args>``: which gateway code was measured ("?" if git fails)."""
    try:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def package_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"


def machine_info(janus_info: Json,
                 packages: Iterable[str] = ("httpx", "uvicorn", "starlette", "aiortc")) -> Json:
    """Cores, CPU model, kernel, Python, Janus (its /info), gateway commit, packages, load."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "janus": janus_info.get("version_string", "?"),
        "janus_server_name": janus_info.get("server-name", ""),
        "gateway_commit": git("describe", "--always", "--dirty"),
        "gateway_dirty_files": git("status", "--porcelain", "--", "gateway").splitlines(),
        "packages": {m: package_version(m) for m in packages},
        "loadavg": os.getloadavg(),
    }


def machine_line(m: Json) -> str:
    """The report's first line, from ``machine_info``."""
    return (f"machine: {m['nproc']} cores ({m['cpu']}), kernel {m['kernel']}, "
            f"Python {m['python']}, Janus {m['janus']}")


# --------------------------------------------------------------------------
# the gateway as its own process


def gateway_command() -> list[str]:
    """How to run the gateway's CLI: the venv's script, one on PATH, or ``-m``."""
    script = Path(sys.executable).parent / "whip-gateway"
    if script.exists():
        return [str(script)]
    found = shutil.which("whip-gateway")
    return [found] if found else [sys.executable, "-m", "gateway.cli"]


def gateway_env(*, clean: bool = False) -> dict[str, str]:
    """This process's environment for the gateway, with the repository on PYTHONPATH.

    ``clean`` drops any WHIP_GATEWAY_* setting of the caller's shell (but the
    sandbox one), so that only what the bench sets applies.
    """
    env = {k: v for k, v in os.environ.items()
           if not clean or not k.startswith("WHIP_GATEWAY_") or k == "WHIP_GATEWAY_SANDBOX"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def janus_nodes_env(cfg: Any) -> str:
    """WHIP_GATEWAY_JANUS for one bench-managed Janus (a ``JanusProcessConfig``).

    A Janus that serves its WebSocket transport gets a ``ws_url`` too, which
    the gateway uses by default (``janus_transport = "websocket"``)."""
    return json.dumps([{
        "url": cfg.api_url, "admin_url": cfg.admin_url,
        "admin_secret": cfg.admin_secret, "plugin_admin_key": cfg.plugin_admin_key,
        **({"ws_url": cfg.ws_url} if getattr(cfg, "websockets", False) else {}),
    }])


def apply_env_items(env: dict[str, str], items: Iterable[str] | None,
                    prepend: tuple[str, ...] = ("PYTHONPATH",)) -> None:
    """``--gateway-env KEY=VALUE`` items; keys in ``prepend`` are put in front, path-style."""
    for item in items or []:
        key, _, value = item.partition("=")
        env[key] = value + os.pathsep + env[key] if key in prepend and key in env else value


def start_on_janus(cfg: Any, port: int, log_path: Path, *, log_level: str | None = None,
                   extra_env: Iterable[str] | None = None, settings: Mapping[str, str] | None = None,
                   wrapper: Iterable[str] = (), **probes: Path | None) -> GatewayProcess:
    """``whip-gateway serve`` on one bench-managed Janus (a ``JanusProcessConfig``).

    Its POST rate limits are off (every request of a bench comes from
    127.0.0.1); ``settings`` and then ``--gateway-env`` items come on top;
    ``probes`` (records=, profile=) run it through bench/probes.py.
    """
    from probes import gateway_base

    env = gateway_env()
    env["WHIP_GATEWAY_JANUS"] = janus_nodes_env(cfg)
    env.update(RATE_LIMITS_OFF)
    env.update(settings or {})
    apply_env_items(env, extra_env)
    return GatewayProcess(gateway_base(env, **probes), env, log_path, port,
                          ["--log-level", log_level] if log_level else [], wrapper)


class LoggedProcess:
    """A child in a session of its own, its output in a log file: stop, kill, last lines.

    The gateway and the peers a bench compares it with (bench/peer_*.py) run
    this way, so that stopping them is done (and fixed) once.
    """

    def __init__(self, command: list[str], env: Mapping[str, str] | None, log_path: Path,
                 cwd: Path = REPO) -> None:
        self.command = command
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603
            self.command, env=dict(env) if env is not None else None, cwd=cwd,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (a graceful shutdown, as in production), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill_now(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class GatewayProcess(LoggedProcess):
    """``<base> serve --port P …`` in a session of its own, its output in a log file.

    Its own process, not in the bench's event loop: what is measured is the
    gateway as deployed, and the bench's own work does not slow it down.
    A bench peer (another HTTP server, bench/peer_*.py) passes its own
    ``command`` and sets ``name`` and ``health_path``.
    """

    name = "the gateway"
    health_path = "/healthz"

    def __init__(self, base: list[str], env: Mapping[str, str], log_path: Path, port: int,
                 extra_args: Iterable[str] = (), wrapper: Iterable[str] = (),
                 cwd: Path = REPO, command: list[str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        super().__init__(command or [*wrapper, *base, "serve", "--port", str(port), *extra_args],
                         env, log_path, cwd)

    def wait_healthy(self, timeout: float, poll: float = 0.05) -> Json:
        """Block until ``GET <health_path>`` says 200 (its JSON body, or the text in
        ``{"body": …}``); measuring starts only then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                reply = httpx.get(f"{self.url}{self.health_path}", timeout=1)
                if reply.status_code == 200:
                    try:
                        return dict(reply.json())
                    except ValueError:
                        return {"body": reply.text}
            except httpx.HTTPError:
                pass
            time.sleep(poll)
        raise RuntimeError(f"{self.name} was not healthy within {timeout} s:\n{self.log_tail()}")


# --------------------------------------------------------------------------
# a run's processes


def kill_now(*children: Any) -> None:
    """SIGKILL every child that still runs (the hard cap's last resort): anything
    with ``kill_now()`` (gateways, peers, viewer workers) or a ``ManagedJanus``;
    ``None`` (not started yet) is skipped."""
    for child in children:
        if child is None:
            continue
        if hasattr(child, "kill_now"):
            child.kill_now()
        elif child.proc is not None and child.proc.poll() is None:
            child.proc.kill()


# --------------------------------------------------------------------------
# offers


async def aiortc_offerer(direction: str) -> Any:
    """An aiortc peer with its offer set: audio + video; sendonly ones Opus + VP8 (rtx).

    Real offers (candidates gathered), so the gateway and Janus do their usual work.
    """
    from aiortc import RTCPeerConnection, RTCRtpSender

    wanted = {"audio": ("audio/opus",), "video": ("video/vp8", "video/rtx")}
    pc = RTCPeerConnection()
    try:
        for kind in ("audio", "video"):
            transceiver = pc.addTransceiver(kind, direction=direction)
            if direction == "sendonly":
                transceiver.setCodecPreferences([
                    c for c in RTCRtpSender.getCapabilities(kind).codecs
                    if c.mimeType.lower() in wanted[kind]])
        await asyncio.wait_for(pc.setLocalDescription(await pc.createOffer()), 10)
    except BaseException:
        await pc.close()
        raise
    return pc


# --------------------------------------------------------------------------
# the run: a private network namespace, a cap on the time, clean exits


def enter_netns(name: str) -> bool:
    """Enter a private network namespace (Janus offers no candidates on loopback).

    First thing, before any thread exists: namespaces are per thread.  False
    (and a message) if that is not possible, i.e. not root.
    """
    from tests.sandbox import SandboxUnavailable, enter_private_netns

    try:
        enter_private_netns()
    except SandboxUnavailable as exc:
        print(f"{name}: {exc} (run it with sudo)", file=sys.stderr)
        return False
    return True


def install_hard_cap(name: str, seconds: float, kill: Callable[[], None]) -> None:
    """SIGALRM after ``seconds``: ``kill`` the children and leave (exit 124).

    The last resort for when the asyncio cap (``run_capped``) did not end the
    run, e.g. a blocking call hung; also makes SIGINT a KeyboardInterrupt even
    if the bench was started in the background.
    """

    def hard_stop(signum: int, _frame: Any) -> None:
        print(f"{name}: run-time cap exceeded by far (signal {signum}); killing", file=sys.stderr)
        kill()
        os._exit(124)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(int(seconds))


def run_capped(make: Callable[[], Awaitable[None]], remaining: Callable[[], float]) -> None:
    """``asyncio.run(make())`` within ``remaining()`` seconds; SIGTERM cancels it.

    Cancelled, the bench's own ``finally`` blocks still clean up (DELETEs,
    Janus sessions) before the processes are stopped.
    """

    async def bounded() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await asyncio.wait_for(make(), max(remaining(), 1))

    asyncio.run(bounded())


def guarded(name: str, body: Callable[[], None], max_seconds: float,
            log_tail: Callable[[], str]) -> tuple[int, str]:
    """Run ``body``; turn the ways a run ends into (exit status, "ok"/"timeout"/…).

    One message per failure on stderr, with the gateway's last log lines for
    an unexpected error; the caller's clean-up comes after, either way.
    """
    try:
        body()
        return 0, "ok"
    except TimeoutError:
        print(f"{name}: the run hit the cap of {max_seconds} s", file=sys.stderr)
        return 1, "timeout"
    except asyncio.CancelledError:
        print(f"{name}: stopped by SIGTERM", file=sys.stderr)
        return 1, "sigterm"
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130, "interrupted"
    except Exception as exc:  # noqa: BLE001 - report, then the caller cleans up
        print(f"{name}: {exc!r}", file=sys.stderr)
        tail = log_tail()
        if tail:
            print(tail, file=sys.stderr)
        return 1, "error"


def keep_logs(dest: Path | None, paths: Iterable[Path]) -> None:
    """Copy the logs that exist to ``dest`` (--keep-logs) before the workdir goes."""
    if not dest:
        return
    dest.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if path.exists():
            shutil.copy(path, dest / path.name)


def finish_on_janus(name: str, results: Json, status: int, gateway: GatewayProcess | None,
                    janus: Any, keep: Path | None, logs: Iterable[Path],
                    stop_timeout: float = 10.0) -> int:
    """The end of a run on a bench-managed Janus: stop the gateway, ask Janus what is
    left (``results["leftovers"]``), keep the logs, stop Janus; the exit status.

    The leak check comes after the gateway stopped, so that what its shutdown
    frees does not count; not being able to look fails the run.
    """
    from janus_direct import leftovers_of

    if gateway is not None:
        results["gateway_exit"] = gateway.stop(stop_timeout)
    if janus is not None:
        if janus.running():
            results["leftovers"] = leftovers_of(name, janus.cfg)
            status = status or (1 if results["leftovers"] is None else 0)
        keep_logs(keep, (janus.log_path, *logs))
        janus.stop()
    return status


def at_least_one(parser: Any, args: Any, names: Iterable[str]) -> None:
    """``parser.error`` unless each of these counts is 1 or more."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")


def params_of(args: Any) -> Json:
    """The command-line arguments, JSON-ready, for the results file."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def write_json(path: Path | None, results: Json) -> None:
    if path:
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {path}")


def print_node_leftovers(leftovers: list[Json | None]) -> None:
    """What each Janus node held after a multi-node run (webinar, setup_rate)."""
    left = [x for x in leftovers if x]
    print("left in Janus after the run (sessions, handles, rooms, mountpoints per node): "
          + "; ".join(f"{x['sessions']} {x['handles']} {x['rooms']} {x['mountpoints']}" for x in left))


def report_leftovers(results: Json, kinds: tuple[str, ...], status: int) -> int:
    """Print what Janus held after the run (results["leftovers"]); the exit status.

    Anything left (target 0) turns a successful run into a failed one.
    """
    left = results.get("leftovers")
    if left is None:
        return status
    total = sum(left[k] for k in kinds)
    print("left in Janus after the run: " + ", ".join(f"{left[k]} {k}" for k in kinds)
          + f" -> {total} (target 0)")
    results["leftover_total"] = total
    return 1 if total and status == 0 else status
