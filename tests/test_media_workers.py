"""Media workers of a running bridge (``media.workers: 2``): conferences spread over both,
each worker's one UDP port carries all its participants, a worker killed with SIGKILL ends
only its calls (and comes back), SIGTERM drains a worker, and a worker serves more than a
hundred participants."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
import asyncio
import contextlib
import os
import re
import signal

from mautrix.types import Membership, RoomID, UserID
from ruamel.yaml import YAML
import pytest

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, wait_for_membership, wait_for_message
from demo.minted_tokens import MintedTokens, bridge_secret
from demo.synapse import SERVER_NAME, MatrixUser, Synapse

from .conftest import bridge_running_on, config_edited
from .support.calls import BOT, CALL_MEMBER, LUMAS, decodes

DRAIN_GRACE_S = 10
CROWD = 110
"""Participants of one conference (so of one worker): more than aiohttp's default pool of 100
connections, which the bridge's connections to a worker once had."""
CANDIDATE_PORT = re.compile(r"^a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host", re.MULTILINE)


@pytest.fixture(scope="module")
async def running_bridge(
    bridge_home: BridgeProcess, synapse: Synapse, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BridgeProcess]:
    """The bridge with two media workers and a short drain grace, admitting callers of rooms
    without its bot (with minted tokens), a crowd of them in one call from one address."""
    directory = tmp_path_factory.mktemp("db")
    settings = {
        "media.workers": 2,
        "media.drain_grace": DRAIN_GRACE_S,
        "focus.rooms_without_bot": "bridge_permissions",
        "focus.limits.max_connections_per_ip": 2 * CROWD,
        "media.limits.participants_per_room": CROWD,
    }
    with config_edited(bridge_home, directory, settings):
        async with bridge_running_on(bridge_home, "sqlite", directory) as it:
            yield it[0]


class Calls:
    """Rooms and LiveKit clients of one test; clients are closed at the end."""

    def __init__(self, bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser]):
        self.bridge = bridge
        self.synapse = synapse
        self.users = users
        self.clients: list[LiveKitClient] = []
        config = YAML().load(Path(bridge.config_path).read_text())
        self.first_port = int(config["media"]["udp_port"])

    async def room(self) -> RoomID:
        async with matrix_client(self.users["alice"], self.synapse.base_url) as alice:
            room = await alice.create_room(
                invitees=[BOT, UserID(self.users["bob"].user_id)],
                power_level_override={"events": {CALL_MEMBER: 0}},
            )
            await wait_for_membership(alice, room, BOT, Membership.JOIN)
            await alice.invite_user(room, UserID(self.users["carol"].user_id))
            for name in ("bob", "carol"):
                async with matrix_client(self.users[name], self.synapse.base_url) as member:
                    await member.join_room_by_id(room)
        return room

    async def join(self, name: str, room: RoomID) -> LiveKitClient:
        token = await focus_token(self.bridge, self.synapse, self.users[name], room)
        client = LiveKitClient(self.bridge.focus_url, token, "v0", (3, 3))
        self.clients.append(client)
        await client.connect()
        await client.publish(luma=LUMAS[name], amplitude=0.3)
        return client

    async def call(
        self, room: RoomID, names: tuple[str, ...] = ("alice", "bob")
    ) -> list[LiveKitClient]:
        """Everyone of ``names`` in the room's call, each decoding every other."""
        clients = [await self.join(name, room) for name in names]
        for receiver in clients:
            for sender, sender_name in zip(clients, names, strict=True):
                if sender is not receiver:
                    await wait_until(
                        lambda r=receiver, s=sender, n=sender_name: decodes(r, s, LUMAS[n])
                    )
        return clients

    def worker_of(self, client: LiveKitClient) -> int:
        """Which worker carries the client's media: the one whose port its SFU candidates
        name (worker i listens on udp_port + i)."""
        description = client.pub_pc.remoteDescription
        assert description is not None
        ports = {int(port) for port in CANDIDATE_PORT.findall(description.sdp)}
        assert len(ports) == 1, ports
        return ports.pop() - self.first_port

    def worker_pid(self, index: int) -> int:
        """The running process of worker ``index``, as the bridge logged it."""
        started = re.findall(
            rf"Media worker {index} started \(pid (\d+)\)", self.bridge.log_text()
        )
        return int(started[-1])

    def starts(self, index: int) -> int:
        return len(re.findall(rf"Media worker {index} started", self.bridge.log_text()))

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()


@pytest.fixture
async def calls(
    running_bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser]
) -> AsyncIterator[Calls]:
    it = Calls(running_bridge, synapse, users)
    yield it
    await it.close()


async def still_flowing(receiver: LiveKitClient, sender: LiveKitClient, frames: int = 30) -> None:
    video = receiver.video_from(sender)
    seen = video.video_frames
    await wait_until(lambda: video.video_frames >= seen + frames, timeout=15)


async def test_conferences_land_on_both_workers_each_on_one_port(calls: Calls) -> None:
    first = await calls.call(await calls.room(), ("alice", "bob", "carol"))
    second = await calls.call(await calls.room())
    workers = {calls.worker_of(client) for client in first}
    assert len(workers) == 1, "a conference lives on one worker, all on its one port"
    assert {calls.worker_of(client) for client in second} == {0, 1} - workers


async def test_a_killed_worker_ends_only_its_calls_and_its_clients_rejoin(calls: Calls) -> None:
    doomed_room, other_room = await calls.room(), await calls.room()
    doomed = await calls.call(doomed_room)
    other = await calls.call(other_room)
    index = calls.worker_of(doomed[0])
    assert calls.worker_of(other[0]) != index
    starts = calls.starts(index)
    os.kill(calls.worker_pid(index), signal.SIGKILL)
    for client in doomed:
        await client.wait_closed()
    await still_flowing(other[1], other[0])
    await still_flowing(other[0], other[1])
    # The bridge ends the call in the room's history and says so, as when everyone leaves.
    async with matrix_client(calls.users["alice"], calls.synapse.base_url) as client:
        await wait_for_message(
            client, doomed_room, BOT, lambda e: "The call ended" in e.content.body
        )
    rejoined = await calls.call(doomed_room)
    assert calls.worker_of(rejoined[0]) == calls.worker_of(rejoined[1])
    await wait_until(lambda: calls.starts(index) == starts + 1)
    await still_flowing(other[1], other[0])


async def test_sigterm_drains_a_worker(calls: Calls) -> None:
    draining_room, other_room, newcomer_room = [await calls.room() for _ in range(3)]
    draining = await calls.call(draining_room)
    other = await calls.call(other_room)
    index = calls.worker_of(draining[0])
    starts = calls.starts(index)
    os.kill(calls.worker_pid(index), signal.SIGTERM)
    await wait_until(lambda: f"Media worker {index} draining" in calls.bridge.log_text())
    await still_flowing(draining[1], draining[0])  # its calls go on for the grace
    newcomer = await calls.call(newcomer_room)
    assert calls.worker_of(newcomer[0]) == calls.worker_of(other[0]) != index
    for client in draining:
        await client.wait_closed(timeout=DRAIN_GRACE_S + 15)
    await wait_until(lambda: calls.starts(index) == starts + 1)
    await still_flowing(other[1], other[0])


async def test_a_worker_signals_to_more_than_a_hundred_participants(
    running_bridge: BridgeProcess,
) -> None:
    """Each participant's signalling holds a connection to its conference's worker for the
    whole call: every one of a crowd in one conference gets its join response. (Last in the
    module: the crowd's worker reports its load a moment later, which would sway the
    placements other tests check.)"""
    tokens = MintedTokens(bridge_secret(running_bridge))
    room = f"!crowd:{SERVER_NAME}"
    clients = [
        LiveKitClient(running_bridge.focus_url, tokens.issue(f"@crowd{i}:{SERVER_NAME}", room))
        for i in range(CROWD)
    ]
    joins = [asyncio.ensure_future(client.connect()) for client in clients]
    try:
        done, waiting = await asyncio.wait(joins, timeout=20)
        assert len(waiting) == 0, f"{len(waiting)} of {CROWD} participants got no join response"
        assert len({join.result().room.name for join in done}) == 1
    finally:
        for join in joins:
            join.cancel()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
