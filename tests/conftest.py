"""Shared fixtures: a PostgreSQL database per test, a real Synapse with the bridge registered."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
import contextlib
import shutil

from mautrix.client import ClientAPI
from mautrix.types import Membership, RoomID, UserID
from mautrix.util.async_db import Database
from playwright.async_api import Browser
import aioice.ice
import pytest

from bridge.db import build_upgrade_table, init
from demo.bridge_process import BridgeProcess, edit_config
from demo.livekit_client import LiveKitClient, Protocol, focus_token
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import SERVER_NAME, MatrixUser, Synapse
from demo.web import web_pages

from .support.browser import chromium
from .support.calls import BOT, CALL_MEMBER, ClientFactory
from .support.netns import Namespace
from .support.postgres import BACKENDS, empty_database, fresh_database

# Who the test bridge serves: everyone on the test server, except mallory.
PERMISSIONS = {
    SERVER_NAME: "user",
    f"@admin:{SERVER_NAME}": "admin",
    f"@mallory:{SERVER_NAME}": "none",
}


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


@pytest.fixture(params=BACKENDS)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The same test on the embedded default and on PostgreSQL."""
    async with empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def bridge_db(database_url: str) -> AsyncIterator[Database]:
    """The bridge's tables, migrated, on each backend in turn."""
    database = Database.create(database_url, upgrade_table=build_upgrade_table())
    try:
        await database.start()
        init(database)
        yield database
    finally:
        await database.stop()


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    """Synapse, not started yet: its address must go into the bridge config first."""
    return Synapse(tmp_path_factory.mktemp("synapse"))


@pytest.fixture(scope="session")
def bridge_home(tmp_path_factory: pytest.TempPathFactory, homeserver: Synapse) -> BridgeProcess:
    """A bridge configured and registered through its CLI, exactly as the README says."""
    bridge = BridgeProcess(tmp_path_factory.mktemp("bridge"), homeserver.base_url, SERVER_NAME)
    bridge.configure(PERMISSIONS)
    return bridge


@pytest.fixture(scope="session")
def synapse(homeserver: Synapse, bridge_home: BridgeProcess) -> Iterator[Synapse]:
    """The homeserver running with the bridge's generated registration installed."""
    homeserver.start(
        appservice_files=[bridge_home.registration_path], focus_url=bridge_home.focus_url
    )
    try:
        yield homeserver
    finally:
        homeserver.stop()


@pytest.fixture(scope="session")
def users(synapse: Synapse) -> dict[str, MatrixUser]:
    return {name: synapse.register_user(name) for name in ("alice", "bob", "carol", "mallory")}


@pytest.fixture(scope="session", autouse=True)
def loopback_ice() -> Iterator[None]:
    """aiortc peers in tests gather ICE candidates on 127.0.0.1 only (aioice skips loopback
    by default, and tests must not use other interfaces)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


@asynccontextmanager
async def bridge_running_on(
    bridge: BridgeProcess, backend: str, directory: Path
) -> AsyncIterator[tuple[BridgeProcess, str]]:
    async with empty_database(backend, directory) as url:
        bridge.use_database(url)
        bridge.start()
        try:
            yield bridge, url
        finally:
            assert bridge.stop() == 0


@contextmanager
def config_edited(
    bridge: BridgeProcess, directory: Path, settings: dict[str, Any]
) -> Iterator[None]:
    """``settings`` in the bridge's config (the session's, shared by every module) until the
    end; then its usual config comes back."""
    saved = directory / "saved-config.yaml"
    shutil.copy(bridge.config_path, saved)
    edit_config(bridge.config_path, settings)
    try:
        yield
    finally:
        shutil.copy(saved, bridge.config_path)


@asynccontextmanager
async def bridge_reachable_from(
    netns: Namespace,
    bridge: BridgeProcess,
    directory: Path,
    settings: dict[str, Any],
) -> AsyncIterator[BridgeProcess]:
    """The bridge running with its focus and media also on this machine's end of the link to
    ``netns`` (and ``settings`` more of its config); its usual config comes back after."""
    bridge.focus_host = netns.host_address
    try:
        with config_edited(
            bridge,
            directory,
            {
                "focus.hostname": netns.host_address,
                "focus.public_url": bridge.focus_url,
                "media.bind_addresses": ["127.0.0.1", netns.host_address],
                **settings,
            },
        ):
            async with bridge_running_on(bridge, "sqlite", directory) as it:
                yield it[0]
    finally:
        bridge.focus_host = "127.0.0.1"


@pytest.fixture(scope="module", params=BACKENDS)
async def bridge_with_database(
    request: pytest.FixtureRequest,
    bridge_home: BridgeProcess,
    synapse: Synapse,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[BridgeProcess, str]]:
    """The bridge process, once on SQLite and once on PostgreSQL, with its database URL."""
    async with bridge_running_on(bridge_home, request.param, tmp_path_factory.mktemp("db")) as it:
        yield it


@pytest.fixture(scope="module")
async def running_bridge(
    bridge_home: BridgeProcess, synapse: Synapse, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BridgeProcess]:
    """The bridge process on its embedded SQLite database, for tests where the backend
    does not matter."""
    async with bridge_running_on(bridge_home, "sqlite", tmp_path_factory.mktemp("db")) as it:
        yield it[0]


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Headless Chromium with fake camera and microphone, for the browser tests."""
    async with chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
async def pages_url() -> AsyncIterator[str]:
    """The base URL of ``web/``, its scripts bundled."""
    async with web_pages() as url:
        yield url


@pytest.fixture
async def alice(users: dict[str, MatrixUser], synapse: Synapse) -> AsyncIterator[ClientAPI]:
    """Alice's Matrix client (she creates the test rooms)."""
    async with matrix_client(users["alice"], synapse.base_url) as client:
        yield client


@pytest.fixture
async def bob(users: dict[str, MatrixUser], synapse: Synapse) -> AsyncIterator[ClientAPI]:
    async with matrix_client(users["bob"], synapse.base_url) as client:
        yield client


@pytest.fixture
async def room_id(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> AsyncIterator[RoomID]:
    """A room with the bot, alice (its creator), bob and carol."""
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room = await alice.create_room(
            invitees=[BOT, UserID(users["bob"].user_id)],
            # As Element Call sets up call rooms: every member may publish.
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(alice, room, BOT, Membership.JOIN)
        await alice.invite_user(room, UserID(users["carol"].user_id))
        for name in ("bob", "carol"):
            async with matrix_client(users[name], synapse.base_url) as member:
                await member.join_room_by_id(room)
        yield room


@pytest.fixture
def protocol() -> Protocol:
    """The signalling protocol clients speak unless a test chooses (see BOTH_PROTOCOLS)."""
    return "v0"


@pytest.fixture
async def connect(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
    protocol: Protocol,
) -> AsyncIterator[ClientFactory]:
    """Connect a user's LiveKit client to the room's call; all are closed afterwards."""
    clients: list[LiveKitClient] = []

    async def factory(
        name: str,
        auto_subscribe: bool = True,
        protocol: Protocol = protocol,
        media_sections: tuple[int, int] = (3, 3),
    ) -> LiveKitClient:
        token = await focus_token(running_bridge, synapse, users[name], room_id)
        client = LiveKitClient(running_bridge.focus_url, token, protocol, media_sections)
        clients.append(client)
        await client.connect(auto_subscribe)
        return client

    yield factory
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
