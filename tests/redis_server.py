"""A real ``redis-server`` (the Debian package) on 127.0.0.1, for tests of shared state.

Started on a free port with no persistence; ready once it says so on
stdout (no polling).  Tests that need it are skipped when the binary is
missing (``deploy/gateway.sh test`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

from gateway.janus.process import free_port

READY = b"Ready to accept connections"


@contextmanager
def redis_server(timeout: float = 10.0) -> Iterator[str]:
    """Yields ``redis://127.0.0.1:PORT/0``; the server stops when the block ends."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--loglevel", "notice"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        seen = b""
        assert proc.stdout is not None
        for line in proc.stdout:  # redis-server logs readiness; it exits on a bind error
            seen += line
            if READY in line:
                break
        else:
            raise RuntimeError(f"redis-server did not start:\n{seen.decode(errors='replace')}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
