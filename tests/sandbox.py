"""A private network namespace for tests and benchmarks.

Janus never offers candidates on a loopback interface, so a test on one
machine needs an interface that is not loopback yet carries a 127.0.0.x
address.  ``enter_private_netns`` moves the calling process into a fresh
network namespace with ``lo`` up and a veth pair whose end ``v0`` holds
127.0.0.2; Janus then runs with ``ice_enforce_list = "v0"``.  Nothing in the
namespace can reach any other network, which is what we want in tests.

Call it before any thread starts (namespaces are per thread): first thing in
a benchmark's ``main``, or at pytest start-up in ``tests/conftest.py``.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess

CLONE_NEWNET = 0x40000000
INTERFACE = "v0"
ADDRESS = "127.0.0.2"


class SandboxUnavailable(RuntimeError):
    pass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def in_sandbox() -> bool:
    """Whether this process sees ``v0`` (sysfs would show the host's interfaces)."""
    names = {name for _, name in socket.if_nameindex()}
    return INTERFACE in names and os.environ.get("WHIP_GATEWAY_SANDBOX") == "1"


def enter_private_netns() -> None:
    """Unshare the network namespace of this process and set up ``v0``."""
    if in_sandbox():
        return
    if os.geteuid() != 0:
        raise SandboxUnavailable("a private network namespace needs root (or run under unshare -rn)")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")
    try:
        _ip("link", "set", "lo", "up")
        _ip("link", "add", INTERFACE, "type", "veth", "peer", "name", "v1")
        _ip("addr", "add", f"{ADDRESS}/32", "dev", INTERFACE)
        _ip("link", "set", INTERFACE, "up")
        _ip("link", "set", "v1", "up")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SandboxUnavailable(f"could not set up {INTERFACE}: {exc}") from exc
    os.environ["WHIP_GATEWAY_SANDBOX"] = "1"
