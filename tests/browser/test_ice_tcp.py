"""A viewer whose firewall drops all UDP still watches, over ICE-TCP.

The gateway runs its managed topology (an ingest Janus and an ICE-lite
egress Janus) with ``janus_ice_tcp`` on.  An nftables rule in the test's
network namespace drops every UDP packet to or from the egress node's RTP
ports, so Chromium's viewer can reach Janus over TCP only, while the
publisher (aiortc, to the ingest node's ports) and the rtp_forward inside
Janus (to the mountpoint ports) keep UDP.  Chromium decodes frames over a
TCP candidate pair; with ICE-TCP off, as a control, it never connects
(the gateway gives up on the viewer after ``viewer_connect_timeout``) and
decodes none.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Any, Iterator

import httpx
import pytest

from tests.browser.test_pages import (
    AiortcPublisher,
    Browser,
    chromium,  # noqa: F401  (fixture)
    pytestmark as pages_marks,
    stop_player,
    until,
    wait_frames,
)
from tests.conftest import GatewayFactory
from tests.integration.test_whip import wait_stream
from tests.sandbox import INTERFACE

pytestmark = [*pages_marks,
              pytest.mark.skipif(shutil.which("nft") is None,
                                 reason="no nft (apt-get install nftables)")]

RTP_RANGE = "10000-19999"  # managed: ingest 10000-14999, egress 15000-19999 (below ephemeral ports)
EGRESS_PORTS = "15000-19999"
TABLE = "whip_gateway_no_udp"

# Every RTCPeerConnection the page makes: did one ever connect, how many
# frames did they decode, over which protocol is the selected pair.
RECORD_JS = """(() => {
  const Original = window.RTCPeerConnection;
  window.__pcs = []; window.__connected = false;
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.__pcs.push(pc);
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "connected") window.__connected = true;
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();"""

SUMMARY_JS = """async () => {
  let frames = 0; const protocols = [];
  for (const pc of window.__pcs) {
    let stats; try { stats = await pc.getStats(); } catch (e) { continue; }
    const byId = {}; stats.forEach(r => { byId[r.id] = r; });
    stats.forEach(r => {
      if (r.type === "inbound-rtp" && r.kind === "video") frames += r.framesDecoded || 0;
      if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") {
        const local = byId[r.localCandidateId], remote = byId[r.remoteCandidateId];
        protocols.push([local && local.protocol, remote && remote.protocol,
                        remote && remote.port]);
      }
    });
  }
  return {frames, protocols, connected: window.__connected,
          state: window.player && window.player.state,
          lastError: window.player && window.player.lastError};
}"""


def nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True)


@pytest.fixture
def udp_blocked() -> Iterator[None]:
    """Drop UDP to and from the egress Janus's RTP ports (in this namespace only)."""
    nft("add", "table", "inet", TABLE)
    nft("add", "chain", "inet", TABLE, "out",
        "{ type filter hook output priority 0; policy accept; }")
    nft("add", "rule", "inet", TABLE, "out", "udp", "dport", EGRESS_PORTS, "drop")
    nft("add", "rule", "inet", TABLE, "out", "udp", "sport", EGRESS_PORTS, "drop")
    try:
        yield
    finally:
        nft("delete", "table", "inet", TABLE)


async def watch_page(chromium: Browser, url: str) -> Any:  # noqa: F811
    context = await chromium.browser.new_context()
    await context.add_init_script(RECORD_JS)
    page = await context.new_page()
    page.on("console", lambda m: chromium.console.append(f"[watch] {m.type}: {m.text}"))
    await page.goto(url)
    chromium.pages.append(page)
    return page


@pytest.mark.parametrize("ice_tcp", [True, False], ids=["ice-tcp", "control-udp-only"])
async def test_viewer_without_udp_watches_over_ice_tcp(
        start_gateway: GatewayFactory, chromium: Browser,  # noqa: F811
        http: httpx.AsyncClient, udp_blocked: None, ice_tcp: bool,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.egress")
    gateway = await start_gateway(janus=[], janus_ice_enforce_list=INTERFACE,
                                  janus_rtp_port_range=RTP_RANGE, janus_ice_tcp=ice_tcp,
                                  viewer_connect_timeout=8, public_listing="details")
    publisher = await AiortcPublisher.start(gateway, http, "firewalled")
    try:
        watcher = await watch_page(chromium, f"{gateway.url}/watch/firewalled")
        if ice_tcp:
            await wait_frames(watcher, chromium, minimum=10, timeout=30)
            summary = await watcher.evaluate(SUMMARY_JS)
            print("ICE-TCP viewer:", summary)
            assert summary["connected"] and summary["frames"] >= 10, summary
            assert summary["protocols"], summary
            for local, remote, port in summary["protocols"]:
                assert (local, remote) == ("tcp", "tcp"), summary
                assert 15000 <= port <= 19999, summary
        else:
            async def given_up() -> bool:
                return any("the viewer never connected" in r.getMessage()
                           for r in caplog.records)

            await until(given_up, "the gateway gave up on the viewer", chromium, timeout=30)
            summary = await watcher.evaluate(SUMMARY_JS)
            print("UDP-only viewer (control):", summary)
            assert summary["frames"] == 0 and not summary["connected"], summary
            assert summary["protocols"] == [], summary
        await stop_player(watcher, http, gateway, "firewalled")
    finally:
        await publisher.stop()
    await wait_stream(http, gateway, "firewalled", live=None)
