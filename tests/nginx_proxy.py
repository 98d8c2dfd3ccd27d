"""A real nginx (the Debian package) as the reverse proxy in front of a gateway.

Configured as the README tells users to: ``X-Forwarded-For`` appended with
``$proxy_add_x_forwarded_for``, ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` set.  One process (``master_process off``), everything
in a temporary prefix.  Tests that need it are skipped when the binary is
missing (``deploy/gateway.sh test`` installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from gateway.janus.process import free_port

CONFIG = """
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {upstream};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
        }}
    }}
}}
"""


@asynccontextmanager
async def nginx_proxy(upstream: str, timeout: float = 10.0) -> AsyncIterator[str]:
    """Yields the proxy's base URL (``http://127.0.0.1:PORT``) in front of ``upstream``."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nginx-") as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(CONFIG.format(prefix=prefix, port=port, upstream=upstream))
        proc = await asyncio.create_subprocess_exec(
            binary, "-p", prefix, "-c", str(conf), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await _listening(port, proc, Path(prefix) / "error.log", timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()


async def _listening(port: int, proc: asyncio.subprocess.Process, log: Path, timeout: float) -> None:
    """Until nginx accepts connections (it says nothing when ready); fail if it exits."""
    async with asyncio.timeout(timeout):
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"nginx exited: {log.read_text() if log.exists() else ''}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return
