"""Media on two media nodes with Redis (at 127.0.0.1:6379; these tests fail without it):
the bridge places conferences on the less loaded node and sends clients there, a call runs
through a node, and a node that dies is noticed within 5 s and avoided."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

from mautrix.types import Membership, RoomID, UserID
import pytest
import redis

from demo.bridge_process import BridgeProcess, edit_config
from demo.livekit_client import LiveKitClient, focus_grant, wait_until
from demo.matrix_client import matrix_client, wait_for_membership
from demo.ports import free_port, free_udp_port
from demo.synapse import MatrixUser, Synapse

from .conftest import bridge_running_on
from .support.calls import BOT, CALL_MEMBER, LUMAS, decodes

REDIS_URL = "redis://127.0.0.1:6379/0"
PREFIX = f"test-{secrets.token_hex(4)}:"
NOTICED_WITHIN_S = 5.0
"""A node's report expires after 4 s and the bridge reads the registry every second."""


class MediaNodeProcess:
    """A media node on this machine: its own config (the bridge's, with a node section) and
    process."""

    def __init__(self, name: str, bridge: BridgeProcess, workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "node.yaml"
        self.log_path = workdir / "node.log"
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(bridge.config_path, self.config_path)
        edit_config(
            self.config_path,
            {
                "node.id": name,
                "node.public_url": self.url,
                "node.hostname": "127.0.0.1",
                "node.port": self.port,
                "media.workers": 1,
                "media.udp_port": free_udp_port(),
                "redis.url": REDIS_URL,
                "redis.prefix": PREFIX,
            },
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge.media.node", "-c", str(self.config_path)],
            cwd=workdir,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    assert client.ping(), "Redis must run at 127.0.0.1:6379"
    yield client
    for key in client.scan_iter(f"{PREFIX}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="module")
async def running_bridge(
    bridge_home: BridgeProcess,
    synapse: Synapse,
    redis_server: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[BridgeProcess]:
    """The bridge as the control role: its media on the nodes found through Redis."""
    edit_config(bridge_home.config_path, {"redis.url": REDIS_URL, "redis.prefix": PREFIX})
    try:
        async with bridge_running_on(bridge_home, "sqlite", tmp_path_factory.mktemp("db")) as it:
            yield it[0]
    finally:
        edit_config(bridge_home.config_path, {"redis.url": ""})


@pytest.fixture
async def nodes(
    running_bridge: BridgeProcess, tmp_path: Path
) -> AsyncIterator[dict[str, MediaNodeProcess]]:
    """Two nodes, named afresh for each test."""
    started = {
        key: MediaNodeProcess(f"{key}-{secrets.token_hex(3)}", running_bridge, tmp_path / key)
        for key in ("m1", "m2")
    }
    log = running_bridge.log_text
    try:
        for node in started.values():
            await wait_until(lambda n=node.name: f"Media node {n} joined" in log())
        yield started
    finally:
        for node in started.values():
            node.kill()
        for node in started.values():
            await wait_until(lambda n=node.name: f"Media node {n} is gone" in log())


async def new_room(users: dict[str, MatrixUser], synapse: Synapse) -> RoomID:
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room = await alice.create_room(
            invitees=[BOT, UserID(users["bob"].user_id)],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(alice, room, BOT, Membership.JOIN)
        async with matrix_client(users["bob"], synapse.base_url) as bob:
            await bob.join_room_by_id(room)
    return room


def http(url: str) -> str:
    return url.replace("ws://", "http://", 1)


async def call_on_node(
    bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser], room: RoomID
) -> list[LiveKitClient]:
    """Alice and Bob in the room's call, on the node its token names, each decoding the other."""
    clients = []
    for name in ("alice", "bob"):
        url, jwt = await focus_grant(bridge, synapse, users[name], room)
        client = LiveKitClient(http(url), jwt, "v0", (3, 3))
        clients.append(client)
        await client.connect()
        await client.publish(luma=LUMAS[name], amplitude=0.3)
    alice, bob = clients
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    await wait_until(lambda: decodes(alice, bob, LUMAS["bob"]))
    return clients


async def close_all(clients: list[LiveKitClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def test_conferences_are_balanced_over_nodes_and_calls_run_through_them(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    nodes: dict[str, MediaNodeProcess],
) -> None:
    rooms = [await new_room(users, synapse) for _ in range(2)]
    placed = [await focus_grant(running_bridge, synapse, users["alice"], r) for r in rooms]
    assert {http(url) for url, _ in placed} == {node.url for node in nodes.values()}
    clients = await call_on_node(running_bridge, synapse, users, rooms[0])
    try:
        # The node reports its participants to the bridge, which records the call.
        await wait_until(lambda: f"Call started in {rooms[0]}" in running_bridge.log_text())
    finally:
        await close_all(clients)


async def test_a_bridge_that_crashed_learns_who_is_on_its_nodes(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    nodes: dict[str, MediaNodeProcess],
) -> None:
    room = await new_room(users, synapse)
    clients = await call_on_node(running_bridge, synapse, users, room)
    started = f"Call started in {room}"
    try:
        await wait_until(lambda: running_bridge.log_text().count(started) == 1)
        running_bridge.kill()
        running_bridge.start()
        await wait_until(lambda: running_bridge.log_text().count(started) == 2)
        frames = clients[1].video_from(clients[0]).video_frames
        await wait_until(lambda: clients[1].video_from(clients[0]).video_frames > frames + 30)
    finally:
        await close_all(clients)


async def test_a_dead_node_is_noticed_within_5_s_and_avoided(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    nodes: dict[str, MediaNodeProcess],
) -> None:
    dead = nodes["m1"]
    dead.kill()
    killed_at = time.monotonic()
    await wait_until(
        lambda: f"Media node {dead.name} is gone" in running_bridge.log_text(),
        timeout=NOTICED_WITHIN_S,
    )
    assert time.monotonic() - killed_at <= NOTICED_WITHIN_S
    for _ in range(3):
        room = await new_room(users, synapse)
        url, _ = await focus_grant(running_bridge, synapse, users["alice"], room)
        assert http(url) == nodes["m2"].url
