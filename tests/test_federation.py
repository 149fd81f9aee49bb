"""Two organisations, one call: two homeservers federating on loopback, each with its own
bridge, and users of both in a call held in a room of the first.

In a multi-SFU call (MatrixRTC's default) each member publishes to their own homeserver's
focus and subscribes to every other focus of the call, so each test user has a LiveKit
client per focus: one that publishes at home, and subscribe-only ones elsewhere.
"""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
import asyncio
import contextlib
import secrets

from mautrix.client import ClientAPI
from mautrix.errors import MatrixRequestError
from mautrix.types import Membership, RoomID, UserID
from playwright.async_api import Browser, Page
import aiohttp
import pytest

from bridge.focus.livekit_ids import identity_for
from demo.bridge_process import BridgeProcess, edit_config
from demo.federation import TestAuthority
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .focus.test_proxied_focus import member, through_synapse
from .support.calls import CALL_MEMBER, LUMAS, decodes
from .test_browser_call import open_call, state


@dataclass
class Operator:
    """One organisation: its homeserver, its bridge, and its users."""

    synapse: Synapse
    bridge: BridgeProcess
    users: dict[str, MatrixUser] = field(default_factory=dict)

    @property
    def bot(self) -> UserID:
        return UserID(f"@callbot:{self.synapse.server_name}")

    def user_id(self, name: str) -> UserID:
        return UserID(self.users[name].user_id)


@pytest.fixture(scope="module")
def operators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, Operator]]:
    """Homeservers A (alice) and B (bob, carol, erin), federating over TLS with a test
    authority, each with its bridge.

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
            tmp_path_factory.mktemp("bridge"),
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
            Operator(synapse, bridge) for synapse, bridge in zip(synapses, bridges, strict=True)
        )
        for operator, localparts in ((a, ("alice",)), (b, ("bob", "carol", "erin"))):
            for localpart in localparts:
                operator.users[localpart] = operator.synapse.register_user(localpart)
        yield a, b
    finally:
        for bridge in bridges:
            bridge.kill()
        for synapse in synapses:
            synapse.stop()


async def _join(client: ClientAPI, room: RoomID) -> bool:
    """One attempt to join over federation (the invite may not have arrived yet)."""
    try:
        await client.join_room_by_id(room)
    except MatrixRequestError:
        return False
    return True


@pytest.fixture
async def federated_room(operators: tuple[Operator, Operator]) -> RoomID:
    """A room on A with both bridges' bots, alice (A), and bob and carol (B), who joined
    over federation. Every member may take part in calls."""
    a, b = operators
    async with matrix_client(a.users["alice"], a.synapse.base_url) as alice:
        room = await alice.create_room(
            invitees=[a.bot, b.bot, b.user_id("bob"), b.user_id("carol")],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        for name in ("bob", "carol"):
            async with matrix_client(b.users[name], b.synapse.base_url) as remote:
                await eventually(lambda remote=remote: _join(remote, room), timeout=60)
        for member in (a.bot, b.bot, b.user_id("bob"), b.user_id("carol")):
            await wait_for_membership(alice, room, member, Membership.JOIN, timeout=60)
    return room


async def token_answer(
    bridge: BridgeProcess, issuer: Synapse, user: MatrixUser, room: RoomID
) -> tuple[int, dict]:
    """``/sfu/get`` at ``bridge`` with an OpenID token of ``issuer``: status and body."""
    body = {
        "room": room,
        "openid_token": issuer.openid_token(user),
        "device_id": user.device_id,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bridge.focus_url}/sfu/get", json=body) as response,
    ):
        return response.status, await response.json()


@dataclass
class Participants:
    """The LiveKit clients a test opened; closed afterwards."""

    clients: list[LiveKitClient] = field(default_factory=list)

    async def join(
        self, operator: Operator, home: Operator, name: str, room: RoomID
    ) -> LiveKitClient:
        """``name`` (a user of ``home``) joins the call at ``operator``'s focus."""
        token = await focus_token(operator.bridge, home.synapse, home.users[name], room)
        client = LiveKitClient(operator.bridge.focus_url, token)
        self.clients.append(client)
        await client.connect()
        return client


@pytest.fixture
async def participants() -> AsyncIterator[Participants]:
    opened = Participants()
    yield opened
    for client in opened.clients:
        with contextlib.suppress(Exception):
            await client.close()


async def test_a_remote_user_joins_through_the_rooms_focus(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    participants: Participants,
) -> None:
    a, b = operators
    # Erin of B is no member of the room: A's bridge, which knows its state, refuses her.
    status, body = await token_answer(a.bridge, b.synapse, b.users["erin"], federated_room)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), body
    assert "join the room" in body["error"]

    alice = await participants.join(a, a, "alice", federated_room)
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    # Bob's OpenID token is issued by B, and A's bridge asks B who it belongs to.
    bob = await participants.join(a, b, "bob", federated_room)
    assert bob.identity.startswith(b.users["bob"].user_id)
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    # Bob publishes at his own homeserver's focus: here he may only watch and listen.
    assert bob.join is not None and not bob.join.participant.permission.can_publish
    assert alice.join is not None and alice.join.participant.permission.can_publish

    # At home, bob publishes; B's bridge too sees the room through its bot.
    bob_at_b = await participants.join(b, b, "bob", federated_room)
    assert bob_at_b.join is not None and bob_at_b.join.participant.permission.can_publish

    async with matrix_client(a.users["alice"], a.synapse.base_url) as client:
        await client.ban_user(federated_room, b.user_id("bob"), reason="test")
    # The ban, made on A, cuts bob off at both bridges.
    await bob.wait_closed()
    await bob_at_b.wait_closed()

    async def refused() -> bool:
        status, _ = await token_answer(a.bridge, b.synapse, b.users["bob"], federated_room)
        return status == 403

    await eventually(refused)


async def test_a_token_for_the_other_focus_through_both_homeservers(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    participants: Participants,
) -> None:
    """MSC4195 through MSC4512: bob asks his own homeserver for a token for A's SFU; B's
    bridge asks A over federation (B's Synapse signs), A's Synapse hands the request to A's
    bridge, which answers for a member of its room, subscribe-only."""
    a, b = operators
    alice = await participants.join(a, a, "alice", federated_room)
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    bob = b.users["bob"]
    sfu = "ws" + a.bridge.focus_url.removeprefix("http")
    body = {
        "room_id": federated_room,
        "slot_id": "m.call#ROOM",
        "member": member(bob, "m-bob"),
        "server_name": a.synapse.server_name,
        "url": sfu,
    }
    status, answer = await through_synapse(b.synapse, bob, "get_token", body)
    assert status == 200, answer
    assert answer["url"] == sfu
    watcher = LiveKitClient(a.bridge.focus_url, answer["jwt"])
    participants.clients.append(watcher)
    join = await watcher.connect()
    assert join.participant.identity == identity_for(bob.user_id, bob.device_id, "m-bob")
    assert not join.participant.permission.can_publish
    await wait_until(lambda: decodes(watcher, alice, LUMAS["alice"]))

    # Erin is no member of the room: A refuses, and B passes the refusal on.
    erin = b.users["erin"]
    body["member"] = member(erin, "m-erin")
    status, answer = await through_synapse(b.synapse, erin, "get_token", body)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), answer


async def test_each_publishes_at_home_and_subscribes_to_the_other_focus(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    participants: Participants,
) -> None:
    a, b = operators
    alice = await participants.join(a, a, "alice", federated_room)
    bob = await participants.join(b, b, "bob", federated_room)
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await bob.publish(luma=LUMAS["bob"], amplitude=0.2)
    # B's bridge sees the room on A through its bot, and lets alice of A watch there.
    alice_at_b = await participants.join(b, a, "alice", federated_room)
    bob_at_a = await participants.join(a, b, "bob", federated_room)
    await wait_until(lambda: decodes(bob_at_a, alice, LUMAS["alice"]))
    await wait_until(lambda: decodes(alice_at_b, bob, LUMAS["bob"]))
    assert alice_at_b.join is not None
    assert not alice_at_b.join.participant.permission.can_publish


async def test_encrypted_media_decodes_across_both_focuses(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    browser: Browser,
    pages_url: str,
) -> None:
    """Browsers on livekit-client with end-to-end encryption: each user publishes at home and
    watches at the other focus; what arrives decodes only if both SFUs forward the encrypted
    payload untouched."""
    a, b = operators
    key = secrets.token_urlsafe(16)
    paths: list[str] = []
    # (user, their homeserver, the focus the page joins)
    layout = {
        "alice": ("alice", a, a),
        "bob": ("bob", b, b),
        "alice at B": ("alice", a, b),
        "bob at A": ("bob", b, a),
    }
    pages: dict[str, Page] = {}
    try:
        for label, (name, home, focus) in layout.items():
            pages[label] = await open_call(
                browser,
                pages_url,
                focus.bridge,
                home.synapse,
                home.users[name],
                federated_room,
                key,
                "v1",
                paths,
            )
        identity = {
            name: f"{home.users[name].user_id}:{home.users[name].device_id}"
            for name, home in (("alice", a), ("bob", b))
        }
        watching = {"bob at A": identity["alice"], "alice at B": identity["bob"]}

        async def received() -> dict[str, dict[str, Any]] | None:
            seen = {}
            for label, publisher in watching.items():
                page_state = await state(pages[label])
                remote = page_state["remotes"].get(publisher)
                if not (
                    page_state["connected"]
                    and page_state["e2ee"]
                    and remote
                    and remote["videoFrames"] > 10
                    and remote["audioBytes"] > 1000
                ):
                    return None
                seen[label] = remote
            return seen

        first = await eventually(received, timeout=60, interval=0.5)
        await asyncio.sleep(2)
        second = await received()
        assert second is not None
        for label, remote in second.items():
            assert remote["videoFrames"] > first[label]["videoFrames"], (label, "video frozen")
            assert remote["audioBytes"] > first[label]["audioBytes"], (label, "audio stopped")
            assert remote["videoWidth"] > 0
    finally:
        for page in pages.values():
            await page.context.close()


async def keeps_receiving(receiver: LiveKitClient, sender: LiveKitClient) -> None:
    """Fail unless ``receiver`` decodes more of ``sender``'s video and audio from now on."""
    video, audio = receiver.video_from(sender), receiver.audio_from(sender)
    seen = (video.video_frames, audio.audio_frames)
    await wait_until(
        lambda: video.video_frames >= seen[0] + 30 and audio.audio_frames >= seen[1] + 50
    )


async def test_a_bridge_stopping_leaves_the_other_operators_call_running(
    operators: tuple[Operator, Operator],
    federated_room: RoomID,
    participants: Participants,
) -> None:
    a, b = operators
    alice = await participants.join(a, a, "alice", federated_room)
    bob = await participants.join(b, b, "bob", federated_room)
    carol = await participants.join(b, b, "carol", federated_room)
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await bob.publish(luma=LUMAS["bob"], amplitude=0.2)
    await carol.publish(luma=LUMAS["carol"], amplitude=0.2)
    alice_at_b = await participants.join(b, a, "alice", federated_room)
    bob_at_a = await participants.join(a, b, "bob", federated_room)
    await wait_until(lambda: decodes(carol, bob, LUMAS["bob"]))
    await wait_until(lambda: decodes(bob, carol, LUMAS["carol"]))
    await wait_until(lambda: decodes(alice_at_b, bob, LUMAS["bob"]))
    await wait_until(lambda: decodes(bob_at_a, alice, LUMAS["alice"]))

    assert a.bridge.stop() == 0
    try:
        await bob_at_a.wait_closed()
        await alice.wait_closed()
        # B's focus carries on: its users see and hear each other, and alice still watches
        # them there.
        await keeps_receiving(carol, bob)
        await keeps_receiving(bob, carol)
        await keeps_receiving(alice_at_b, bob)
    finally:
        a.bridge.start()

    alice = await participants.join(a, a, "alice", federated_room)
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    bob_at_a = await participants.join(a, b, "bob", federated_room)
    await wait_until(lambda: decodes(bob_at_a, alice, LUMAS["alice"]))
    await keeps_receiving(carol, bob)
