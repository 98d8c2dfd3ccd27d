"""Fixtures: a real Janus 1.1.2 in a private network namespace, and gateways on it.

At start-up the pytest process moves itself into a fresh network namespace
(``tests.sandbox``), so Janus, the gateway and every client (aiortc,
GStreamer, Chromium) share an interface ``v0`` at 127.0.0.2 and nothing can
leave the machine.  Integration tests need root for that; without it they
are skipped with the reason.

After every test that used a gateway, ``Leaks`` asks Janus's admin API what
it still holds: while the gateway runs, its two control handles and exactly
the rooms and handles its publisher pools name (``Ingest.pooled``), nothing
else; once it stopped, no session and no room at all.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
import uvicorn

from gateway.app import SERVER_OPTIONS, create_app
from gateway.config import JanusNodeSettings, Settings, load_settings
from gateway.janus.admin import JanusAdmin
from gateway.janus.process import JanusProcessConfig, ManagedJanus, free_port
from tests.bare_janus import bare_janus  # noqa: F401  (a Janus of a test's own, per version)
from tests.janus_versions import janus_new  # noqa: F401  (Janus 1.4.x from deploy/janus-sid.sh)
from tests.redis_server import redis_server
from tests.sandbox import INTERFACE, SandboxUnavailable, enter_private_netns

FIXTURES = Path(__file__).parent / "fixtures"
_sandbox_error: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _sandbox_error
    if os.environ.get("WHIP_GATEWAY_NO_SANDBOX") == "1":
        _sandbox_error = "WHIP_GATEWAY_NO_SANDBOX=1"
        return
    try:
        enter_private_netns()
    except SandboxUnavailable as exc:
        _sandbox_error = str(exc)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)
            if _sandbox_error:
                item.add_marker(pytest.mark.skip(reason=f"no private network namespace: {_sandbox_error}"))


@pytest.fixture(scope="session")
def janus() -> Iterator[ManagedJanus]:
    """One Janus for the whole run, as the Debian package ships it.  It serves
    its WebSocket transport too, which gateways use by default
    (WHIP_GATEWAY_JANUS_TRANSPORT=http runs a whole run on the long poll)."""
    process = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, debug_level=4,
                                              websockets=True))
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def janus_lite() -> Iterator[ManagedJanus]:
    """A second Janus 1.1.2 in ICE-lite mode, as a dedicated egress node."""
    process = ManagedJanus(JanusProcessConfig(ice_enforce_list=INTERFACE, ice_lite=True,
                                              rtp_port_range="40001-45000",
                                              streaming_port_range="45001-50000",
                                              websockets=True))
    process.start()
    yield process
    process.stop()


@dataclass
class Leaks:
    """Janus's own view of what the gateway holds, on every node of a test."""

    admins: list[tuple[JanusAdmin, str]]  # (admin API, plugin admin key) per node
    apps: list[Any] = field(default_factory=list)  # the in-process gateways (start_gateway)

    @property
    def admin(self) -> JanusAdmin:
        """The first (ingest) node's admin API."""
        return self.admins[0][0]

    async def _list(self, plugin: str, key: str) -> list[int]:
        found = []
        for admin, admin_key in self.admins:
            reply = await admin.message_plugin(plugin, {"request": "list", "admin_key": admin_key})
            found += [entry[key] for entry in reply.get("list", [])]
        return found

    async def pooled(self) -> tuple[set[int], set[int]]:
        """(handle ids, room ids) the gateways' publisher pools hold, once no
        pool is being topped up."""
        handles: set[int] = set()
        rooms: set[int] = set()
        ours = {admin.url for admin, _ in self.admins}
        for app in self.apps:
            for pool in list(app.state.ingest.pools.values()):
                admin = pool.node.admin
                if admin is None or admin.url not in ours:
                    continue  # a Janus the gateway runs itself (janus=[]): not one we see
                await pool.settled()
                h, r = pool.held()
                handles |= h
                rooms |= r
        return handles, rooms

    async def all_rooms(self) -> list[int]:
        """Every VideoRoom room, pooled ones included."""
        return await self._list("janus.plugin.videoroom", "room")

    async def rooms(self) -> list[int]:
        """The rooms publishers hold: every room but the idle pooled ones."""
        _, pooled = await self.pooled()
        return [r for r in await self.all_rooms() if r not in pooled]

    async def mountpoints(self) -> list[int]:
        return await self._list("janus.plugin.streaming", "id")

    async def assert_only_control_handles(self, gateways: int = 1) -> None:
        pooled_handles, pooled_rooms = await self.pooled()
        seen: set[int] = set()
        for admin, _ in self.admins:
            handles = await admin.all_handles()
            assert len(handles) <= gateways, f"more than the gateways' own Janus sessions: {handles}"
            for session, hs in handles.items():
                seen |= set(hs)
                rest = [h for h in hs if h not in pooled_handles]
                assert len(rest) == 2, f"session {session} holds handles beyond the 2 control ones and the pool's: {rest}"
        rooms = await self.all_rooms()
        if self.admins:
            assert pooled_handles <= seen, f"pooled handles Janus does not hold: {pooled_handles - seen}"
            assert pooled_rooms <= set(rooms), f"pooled rooms Janus does not hold: {pooled_rooms - set(rooms)}"
        assert [r for r in rooms if r not in pooled_rooms] == [], "a VideoRoom room was left behind"
        assert await self.mountpoints() == [], "a Streaming mountpoint was left behind"

    async def assert_nothing(self) -> None:
        for admin, _ in self.admins:
            assert await admin.sessions() == [], "a Janus session was left behind"
        assert await self.all_rooms() == [], "a VideoRoom room (pooled or not) was left behind"
        assert await self.mountpoints() == []


Topology = list[tuple[ManagedJanus, str]]  # (Janus, role) per node


@pytest.fixture
def janus_node(janus: ManagedJanus) -> ManagedJanus | Topology:
    """The Janus a test's gateways use: one node, or a list of (node, role).
    A module may override it, e.g. with ``params`` over versions and topologies."""
    return janus


def topology(janus_node: ManagedJanus | Topology) -> Topology:
    return janus_node if isinstance(janus_node, list) else [(janus_node, "both")]


@pytest.fixture
async def leaks(janus_node: ManagedJanus | Topology) -> AsyncIterator[Leaks]:
    admins = [(JanusAdmin(j.cfg.admin_url, j.cfg.admin_secret), j.cfg.plugin_admin_key)
              for j, _ in topology(janus_node)]
    yield Leaks(admins)
    for admin, _ in admins:
        await admin.close()


@dataclass
class RunningGateway:
    url: str
    settings: Settings
    app: Any

    def whip(self, stream: str) -> str:
        return f"{self.url}/whip/{stream}"

    def whep(self, stream: str) -> str:
        return f"{self.url}/whep/{stream}"


GatewayFactory = Callable[..., Awaitable[RunningGateway]]

# Every rate limit off ("" turns one off; None would keep the default, as
# load_settings drops None overrides), for tests about something else that
# make hundreds of requests from 127.0.0.1.
RATE_LIMITS_OFF = {name: "" for name in (
    "rate_limit_per_client", "rate_limit_view_per_client", "rate_limit_publish_per_client",
    "rate_limit_per_stream", "rate_limit_per_session", "rate_limit_auth_failures_per_client")}


def janus_settings(janus: ManagedJanus, role: str = "both") -> JanusNodeSettings:
    return JanusNodeSettings(
        url=janus.cfg.api_url, admin_url=janus.cfg.admin_url, role=role,  # type: ignore[arg-type]
        admin_secret=janus.cfg.admin_secret, plugin_admin_key=janus.cfg.plugin_admin_key,
        ws_url=janus.cfg.ws_url if janus.cfg.websockets else None,
    )


@pytest.fixture
async def start_gateway(janus_node: ManagedJanus | Topology,
                        leaks: Leaks) -> AsyncIterator[GatewayFactory]:
    """Start gateways on the shared Janus; check for leftovers when the test ends."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(access_log: bool = False, **overrides: Any) -> RunningGateway:
        port = free_port()
        overrides.setdefault("janus", [janus_settings(j, role) for j, role in topology(janus_node)])
        if servers:  # gateways sharing a Janus need tags of their own, or each reaps the other
            overrides.setdefault("instance_name", f"whip-gateway-{len(servers) + 1}")
        settings = load_settings(host="127.0.0.1", port=port, **overrides)
        app = create_app(settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on",
                                               log_level="info" if access_log else "warning",
                                               **SERVER_OPTIONS))
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("gateway did not start")
            await asyncio.sleep(0.01)
        servers.append((server, task))
        leaks.apps.append(app)
        return RunningGateway(url=f"http://127.0.0.1:{port}", settings=settings, app=app)

    yield start
    try:
        for server, _task in servers:
            await server.config.app.state.egress.settled()
            await server.config.app.state.ingest.settled()
            await server.config.app.state.egress.settled()
        if servers:
            await leaks.assert_only_control_handles(len(servers))
    finally:
        for server, task in servers:
            server.should_exit = True
            await task
        leaks.apps.clear()
    if servers:
        await leaks.assert_nothing()


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> RunningGateway:
    """A gateway whose /api/streams also shows viewer counts and codecs
    (``public_listing = "details"``): tests wait on them."""
    return await start_gateway(public_listing="details")


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A real redis-server (Debian's) on a free port, for rate limits and replicas."""
    try:
        with redis_server() as url:
            yield url
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15) as client:
        yield client


def read_fixture(*parts: str) -> str:
    return (FIXTURES.joinpath(*parts)).read_text()
