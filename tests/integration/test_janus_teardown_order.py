"""A publisher's teardown, against a bare Janus, with its PeerConnection up.

Issue 11: the ingest Janus 1.1.2 died with SIGSEGV under bench/soak.py in
``janus_plugin_session_is_alive`` <- ``janus_plugin_close_pc`` <- the
VideoRoom's synchronous request path: the room's ``destroy`` closing the
PeerConnection of a participant whose handle a ``detach`` just before was
still tearing down.  The gateway then sent ``detach`` and, as soon as Janus
acknowledged it, ``destroy``.  It now destroys the room first, while the
handle is whole, then detaches (gateway/janus/videoroom.py
``RoomPublisher.close``).  Upstream: meetecho/janus-gateway#3154 (segfaults
on VideoRoom hang-up, 1.1.x) is the closest report.

- ``test_room_first_teardown`` runs the gateway's order on connected
  publishers, 1.1.2 and 1.4.1, and checks Janus lives and holds nothing.
- ``test_reproducer_detach_then_destroy`` is the old order, for an upstream
  report.  It is a race: under the soak it struck once in about 7,000
  operations at 110 operations/s on a loaded 2-core machine, and a bare Janus
  survived 60 rounds of 8 publishers here.  So it runs only when asked:
  ``JANUS_TEARDOWN_REPRO=<rounds>`` (it fails when Janus dies).
"""

from __future__ import annotations

import asyncio
import os
import secrets

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from gateway.janus.admin import JanusAdmin
from gateway.janus.client import JanusClient, JanusHandle
from gateway.janus.process import ManagedJanus
from tests.bare_janus import quietly
from tests.integration.test_janus_restart_overlap import VIDEOROOM
from tests.publishers import aiortc_publisher, wait_connected

PUBLISHERS = 4  # at once per round: the soak had 8 operations in flight


async def connected_publishers(janus: ManagedJanus, control: JanusHandle,
                               count: int) -> list[tuple[RTCPeerConnection, JanusHandle, int]]:
    """``count`` aiortc publishers, each alone in a room of its own, ICE and DTLS up."""
    out = []
    for _ in range(count):
        room = secrets.randbits(40) or 1
        await control.request({"request": "create", "room": room, "publishers": 1,
                               "admin_key": janus.cfg.plugin_admin_key,
                               "videocodec": "vp8", "audiocodec": "opus"})
        pc = await aiortc_publisher()
        handle = await control.session.attach(VIDEOROOM)
        event = await handle.message({"request": "joinandconfigure", "ptype": "publisher",
                                      "room": room, "display": "teardown"},
                                     {"type": "offer", "sdp": pc.localDescription.sdp})
        assert event.jsep is not None, event.data
        await pc.setRemoteDescription(RTCSessionDescription(event.jsep["sdp"], "answer"))
        out.append((pc, handle, room))
    await asyncio.gather(*(wait_connected(pc) for pc, _, _ in out))
    return out


async def teardown_rounds(janus: ManagedJanus, *, room_first: bool, rounds: int) -> None:
    client = JanusClient(janus.cfg.api_url)
    admin = JanusAdmin(janus.cfg.admin_url, janus.cfg.admin_secret)
    try:
        session = await client.create_session()
        control = await session.attach(VIDEOROOM)

        async def end(handle: JanusHandle, room: int) -> None:
            destroy = control.request({"request": "destroy", "room": room,
                                       "admin_key": janus.cfg.plugin_admin_key})
            if room_first:
                await quietly(destroy)
                await quietly(handle.detach())
            else:  # what the gateway did before issue 11
                await quietly(handle.detach())
                await quietly(destroy)

        for round_no in range(rounds):
            peers = await connected_publishers(janus, control, PUBLISHERS)
            await asyncio.gather(*(end(handle, room) for _, handle, room in peers))
            await asyncio.gather(*(pc.close() for pc, _, _ in peers))
            assert janus.running(), (f"Janus died in round {round_no} "
                                     f"(room_first={room_first}); see {janus.log_path}")
        rooms = (await control.request({"request": "list",
                                        "admin_key": janus.cfg.plugin_admin_key}))["list"]
        assert rooms == []
        handles = await admin.all_handles()
        assert handles == {session.id: [control.id]}, handles
    finally:
        await client.close()
        await admin.close()


async def test_room_first_teardown(bare_janus: ManagedJanus) -> None:
    await teardown_rounds(bare_janus, room_first=True, rounds=5)


@pytest.mark.skipif(not os.environ.get("JANUS_TEARDOWN_REPRO"),
                    reason="an upstream reproducer for a rare race: JANUS_TEARDOWN_REPRO=<rounds>")
async def test_reproducer_detach_then_destroy(bare_janus: ManagedJanus) -> None:
    await teardown_rounds(bare_janus, room_first=False,
                          rounds=int(os.environ.get("JANUS_TEARDOWN_REPRO", "0")))
