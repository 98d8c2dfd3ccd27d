"""The worker side of the benches' viewer processes (``whep_ttff_driver.Workers``).

whep_ttff, webinar and setup_rate each run their viewers in worker processes
that take one command at a time over a pipe, run it in a fresh event loop and
send one result back; this is that loop, written once.
"""

from __future__ import annotations

import asyncio
import resource
import signal
from typing import Any, Awaitable, Callable

Json = dict[str, Any]


def serve(conn: Any, index: int, run: Callable[[Json], Awaitable[Json]], *,
          lift_open_files: bool = False) -> None:
    """Until ``stop`` or the pipe closes: ``run(command)`` in a fresh event loop, its
    result (or the error, as ``{"phase": "error"}``) sent back.  SIGINT is ignored:
    the main process decides when workers stop.  ``lift_open_files``: raise the
    soft open-files limit to the hard one (about three sockets per viewer)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if lift_open_files:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            return
        if cmd.get("op") == "stop":
            return
        try:
            result = asyncio.run(run(cmd))  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - report it; the main process decides
            result = {"phase": "error", "error": f"worker {index}: {exc!r}"}
        try:
            conn.send(result)
        except (OSError, EOFError):
            return
