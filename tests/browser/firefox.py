"""Debian's Firefox ESR, headless, driven over Marionette.

Playwright cannot drive Debian's Firefox (it needs its own patched build),
but every Firefox speaks Marionette; ``marionette-driver`` (PyPI) is its
client.  Each ``Firefox`` starts the binary with a fresh profile in a
temporary folder whose ``user.js``:

- gives WebRTC fake media without a permission prompt
  (``media.navigator.streams.fake``, ``media.navigator.permission.disabled``);
- keeps host candidates as addresses (no mDNS names, loopback-range
  addresses allowed), since the test namespace's address is 127.0.0.2;
- turns off everything that would reach the network on its own: updates,
  telemetry, studies, safe browsing, captive-portal and connectivity
  checks, add-on and GMP (OpenH264) downloads.  Without OpenH264, Firefox
  has no H.264 for WebRTC, so its tests use VP8.

Firefox's ICE agent (nICEr) differs from Chromium's in two ways that
matter in the test namespace: it treats every 127/8 address as loopback,
whatever the interface, and it gathers nothing at all when it cannot find a
default route.  So while a Firefox runs, ``non_loopback_address`` puts a second
address on ``v0``, from the benchmarking range 198.18.0.0/15 (RFC 2544), and
a default route through ``v0`` with that source.  Both live in the test's
own network namespace: ``v0``'s peer ``v1`` is in it too, so no packet can
leave it.  Janus (``ice_enforce_list = v0``) then offers that address as
well, and Firefox pairs with it.

The client is blocking; async tests call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from gateway.janus.process import free_port

FIREFOX = os.environ.get("WHIP_GATEWAY_FIREFOX", "/usr/bin/firefox-esr")

PREFS: dict[str, Any] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.default_address_only": False,
    "media.peerconnection.ice.proxy_only_if_behind_proxy": False,
    "media.gmp-manager.url": "",
    "media.gmp-gmpopenh264.enabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.page": 0,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.newtabpage.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "services.settings.server": "",
    "messaging-system.rsexperimentloader.enabled": False,
    "nimbus.rollouts.enabled": False,
    "network.trr.mode": 5,
    "browser.region.network.url": "",
    "geo.provider.network.url": "",
    "browser.discovery.enabled": False,
    "datareporting.usage.uploadEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "remote.prefs.recommended": True,
}


def _user_js(prefs: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return '"' + str(v).replace('"', '\\"') + '"'

    return "".join(f'user_pref("{k}", {value(v)});\n' for k, v in prefs.items())


NON_LOOPBACK_ADDRESS = "198.18.0.2"


@contextlib.contextmanager
def non_loopback_address() -> Iterator[None]:
    """A non-loopback address and a default route on ``v0`` while Firefox runs."""
    from tests.sandbox import INTERFACE

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    # "replace": a run killed half-way may have left them behind.
    ip("addr", "replace", f"{NON_LOOPBACK_ADDRESS}/32", "dev", INTERFACE)
    try:
        ip("route", "replace", "default", "dev", INTERFACE, "src", NON_LOOPBACK_ADDRESS)
        try:
            yield
        finally:
            ip("route", "del", "default", "dev", INTERFACE)
    finally:
        ip("addr", "del", f"{NON_LOOPBACK_ADDRESS}/32", "dev", INTERFACE)


class Firefox:
    """One headless Firefox with its own profile and Marionette port."""

    def __init__(self) -> None:
        from marionette_driver.marionette import Marionette

        self.profile = Path(tempfile.mkdtemp(prefix="whip-gateway-firefox-"))
        self.port = free_port()
        (self.profile / "user.js").write_text(_user_js({**PREFS, "marionette.port": self.port}))
        self.log = (self.profile / "firefox.log").open("wb")
        self.proc = subprocess.Popen(
            [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(self.profile)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "MOZ_HEADLESS": "1"}, start_new_session=True)
        try:
            self._wait_port(60)
            self.client = Marionette(host="127.0.0.1", port=self.port, socket_timeout=60)
            self.client.start_session()
            self.client.timeout.script = 30
        except BaseException:
            self.close()
            raise

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Firefox exited ({self.proc.returncode}): {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"no Marionette on port {self.port} in {timeout} s: {self.output()}")

    def output(self) -> str:
        try:
            return (self.profile / "firefox.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def navigate(self, url: str) -> None:
        self.client.navigate(url)

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``)."""
        return self.client.execute_script(script, script_args=list(args), new_sandbox=False,
                                             sandbox=None)

    def js_async(self, script: str, *args: Any) -> Any:
        """Run ``script`` that ends by calling ``arguments[arguments.length - 1](result)``."""
        return self.client.execute_async_script(script, script_args=list(args), new_sandbox=False,
                                             sandbox=None)

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            try:
                client.delete_session()
            except Exception:  # Firefox may be gone already; the process is ended below
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)
