"""A Janus of a test's own (1.1.2 and the sid chroot's 1.4.1), for tests that
send Janus request sequences straight to it, with no gateway, and may crash
it; and ``quietly``, for sequences meant to fail some requests.  Registered
as fixtures in tests/conftest.py."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import pytest

from gateway.janus.client import JanusError, JanusUnreachable
from gateway.janus.process import JanusProcessConfig, ManagedJanus
from tests.janus_versions import sid_chroot
from tests.sandbox import INTERFACE


@pytest.fixture(params=["1.1.2", "1.4.1"])
async def bare_janus(request: pytest.FixtureRequest) -> AsyncIterator[ManagedJanus]:
    """A Janus of its own per test: a crash here must not take other tests' Janus down."""
    chroot = None
    if request.param == "1.4.1":
        root = sid_chroot()
        if not (root / "usr/bin/janus").is_file():
            pytest.skip(f"no Debian sid Janus chroot at {root}: run deploy/janus-sid.sh")
        chroot = str(root)
    process = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, chroot=chroot))
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


async def quietly(call: Any) -> Any:
    """Any Janus answer, including errors: the overlaps are meant to fail some requests."""
    try:
        return await call
    except (JanusError, JanusUnreachable, TimeoutError) as exc:
        return exc
