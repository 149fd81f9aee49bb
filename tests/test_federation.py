"""Two organisations, one call: two homeservers federating on loopback, each with its own
bridge, and users of both in a call held in a room of the first."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
import contextlib

from mautrix.client import ClientAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import Membership, RoomID, UserID
import pytest

from demo.bridge_process import BridgeProcess, edit_config
from demo.federation import TestAuthority
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .support.calls import CALL_MEMBER, LUMAS, decodes


@dataclass
class Operator:
    """One organisation: its homeserver, its bridge, and its users."""

    synapse: Synapse
    bridge: BridgeProcess
    users: dict[str, MatrixUser]

    @property
    def bot(self) -> UserID:
        return UserID(f"@callbot:{self.synapse.server_name}")


@pytest.fixture(scope="module")
def operators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, Operator]]:
    """Homeservers A and B, federating over TLS with a test authority, each with its bridge.

    Each bridge serves the users of both servers (``bridge.permissions``), and finds the other
    homeserver through ``focus.openid.homeservers``: the other is on loopback, which the
    bridge's guard against request forgery refuses to contact when merely discovered.
    """
    authority = TestAuthority(tmp_path_factory.mktemp("ca"))
    synapses = [Synapse(tmp_path_factory.mktemp(f"synapse-{n}"), authority) for n in "ab"]
    names = [synapse.server_name for synapse in synapses]
    bridges = []
    for synapse, other in zip(synapses, reversed(synapses), strict=True):
        bridge = BridgeProcess(
            tmp_path_factory.mktemp(f"bridge-{synapse.federation_port}"),
            synapse.base_url,
            synapse.server_name,
            ca_file=authority.certificate_path,
        )
        bridge.configure({name: "user" for name in names})
        edit_config(
            bridge.config_path,
            {"focus.openid.homeservers": {other.server_name: other.federation_url}},
        )
        bridges.append(bridge)
    try:
        for synapse, bridge in zip(synapses, bridges, strict=True):
            synapse.launch([bridge.registration_path], bridge.focus_url)
        for synapse in synapses:
            synapse.wait_until_ready()
        for bridge in bridges:
            bridge.start()
        a, b = (
            Operator(synapse, bridge, {"alice": synapse.register_user(name)})
            for synapse, bridge, name in zip(synapses, bridges, ("alice", "bob"), strict=True)
        )
        b.users["bob"] = b.users.pop("alice")
        yield a, b
    finally:
        for bridge in bridges:
            bridge.kill()
        for synapse in synapses:
            synapse.stop()


@pytest.fixture
async def federated_room(operators: tuple[Operator, Operator]) -> RoomID:
    """A room on A with A's bot and alice (A), which bob (B) joined over federation."""
    a, b = operators
    alice, bob = a.users["alice"], b.users["bob"]
    async with matrix_client(alice, a.synapse.base_url) as client:
        room = await client.create_room(
            invitees=[a.bot, UserID(bob.user_id)],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(client, room, a.bot, Membership.JOIN)
        async with matrix_client(bob, b.synapse.base_url) as remote:
            await eventually(lambda: _join(remote, room), timeout=60)
        await wait_for_membership(client, room, UserID(bob.user_id), Membership.JOIN)
    return room


async def _join(client: ClientAPI, room: RoomID) -> bool:
    """One attempt to join over federation (the invite may not have arrived yet)."""
    try:
        await client.join_room_by_id(room)
    except MatrixRequestError:
        return False
    return True


@pytest.fixture
async def clients() -> AsyncIterator[list[LiveKitClient]]:
    """LiveKit clients a test opened; closed afterwards."""
    opened: list[LiveKitClient] = []
    yield opened
    for client in opened:
        with contextlib.suppress(Exception):
            await client.close()


async def test_a_remote_user_joins_through_the_rooms_focus(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    clients: list[LiveKitClient],
) -> None:
    a, b = operators
    alice_token = await focus_token(a.bridge, a.synapse, a.users["alice"], federated_room)
    # Bob's OpenID token is issued by B, and A's bridge asks B who it belongs to.
    bob_token = await focus_token(a.bridge, b.synapse, b.users["bob"], federated_room)
    alice = LiveKitClient(a.bridge.focus_url, alice_token)
    bob = LiveKitClient(a.bridge.focus_url, bob_token)
    clients.extend([alice, bob])
    await alice.connect()
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await bob.connect()
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    assert bob.identity.startswith(b.users["bob"].user_id)
