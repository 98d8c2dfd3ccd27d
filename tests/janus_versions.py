"""Fixtures for Janus versions other than the host's Debian package.

``janus_new`` runs the Janus of a Debian sid chroot (1.4.x at the time of
writing), made by ``deploy/janus-sid.sh``, through the same ManagedJanus as
the ``janus`` fixture: ``chroot`` does not change the network namespace, so
that Janus listens on the same loopback and sees the same ``v0``.

The chroot is ``$WHIP_GATEWAY_JANUS_SID`` or /var/cache/whip-gateway/janus-sid;
without it, tests that use ``janus_new`` are skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from gateway.janus.process import JanusProcessConfig, ManagedJanus
from tests.sandbox import INTERFACE

DEFAULT_SID_CHROOT = "/var/cache/whip-gateway/janus-sid"


def sid_chroot() -> Path:
    return Path(os.environ.get("WHIP_GATEWAY_JANUS_SID") or DEFAULT_SID_CHROOT)


@pytest.fixture(scope="session")
def janus_new() -> Iterator[ManagedJanus]:
    """One Janus from Debian sid for the whole run, or a skip saying how to get it."""
    root = sid_chroot()
    if not (root / "usr/bin/janus").is_file():
        pytest.skip(f"no Debian sid Janus chroot at {root}: run deploy/janus-sid.sh (as root)")
    process = ManagedJanus(JanusProcessConfig(
        ice_enforce_list=INTERFACE, debug_level=4, chroot=str(root), websockets=True,
    ))
    process.start()
    yield process
    process.stop()
