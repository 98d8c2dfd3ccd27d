"""Install and bundle the third-party browser players for the tests.

``tests/browser/players/package.json`` pins exact versions of
``@eyevinn/webrtc-player``, ``whip-whep`` and ``esbuild``.  They are
installed with npm into ``/var/cache/whip-gateway/npm-players/<hash of
package.json>`` and bundled there by esbuild into one IIFE script
(``players.js``) from ``players/entry.js``; nothing generated is committed.

npm needs the registry, and the test process lives in a network namespace
without one.  So ``deploy/gateway.sh test`` runs ``python -m
tests.browser.npm_players`` before pytest; a test that finds no bundle tries
npm once from the machine's own network namespace (PID 1's, through
``nsenter``) and is skipped with the command to run if that fails too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent / "players"
CACHE_ROOT = Path(os.environ.get("WHIP_GATEWAY_NPM_CACHE", "/var/cache/whip-gateway/npm-players"))


class PlayersUnavailable(RuntimeError):
    pass


def cache_dir() -> Path:
    digest = hashlib.sha256((HERE / "package.json").read_bytes()).hexdigest()[:16]
    return CACHE_ROOT / digest


def bundle_path() -> Path:
    return cache_dir() / "players.js"


def _run(command: list[str], cwd: Path, outside_netns: bool) -> None:
    if outside_netns:  # the registry is reachable from the machine's namespace only
        command = ["nsenter", "--net=/proc/1/ns/net", "--", *command]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise PlayersUnavailable(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")


def ensure_bundle(outside_netns: bool = False) -> Path:
    """The bundle's path; install and bundle first when it is missing."""
    target = bundle_path()
    if target.is_file():
        return target
    if not (shutil.which("node") and shutil.which("npm")):
        raise PlayersUnavailable("node and npm are needed (Debian packages nodejs, npm)")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "package.json", folder / "package.json")
    shutil.copy(HERE / "entry.js", folder / "entry.js")
    if not (folder / "node_modules" / "esbuild").is_dir():
        # --ignore-scripts: esbuild's postinstall only checks its binary, which
        # comes as the optional package @esbuild/linux-x64.
        _run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts",
              "--no-package-lock"], folder, outside_netns)
    _run([str(folder / "node_modules" / ".bin" / "esbuild"), "entry.js", "--bundle",
          "--format=iife", "--target=es2020", f"--outfile={target.name}.tmp"], folder, False)
    (folder / f"{target.name}.tmp").rename(target)
    return target


if __name__ == "__main__":
    try:
        print(ensure_bundle())
    except PlayersUnavailable as exc:
        print(f"npm players: {exc}", file=sys.stderr)
        sys.exit(1)
