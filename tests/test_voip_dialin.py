"""Dial-in through a real Synapse: 1:1 calls to a room's ghost join the room's conference."""

from __future__ import annotations

from collections.abc import AsyncIterator
import asyncio

from mautrix.client import ClientAPI
from mautrix.types import Membership
import pytest

from demo.bridge_process import BridgeProcess
from demo.matrix_client import matrix_client, wait_for_membership, wait_for_message
from demo.synapse import Synapse
from demo.waiting import eventually

from .support.calls import CALL_MEMBER
from .support.voip_caller import (
    BOT,
    LegacyCaller,
    call_event_type,
    direct_chat,
    request_ghost,
)
from .support.voip_media import CallPeer

HEARD = 100.0
ABSENT = 0.02


@pytest.fixture(scope="module")
async def clients(
    synapse: Synapse, running_bridge: BridgeProcess
) -> AsyncIterator[dict[str, ClientAPI]]:
    names = ("voip_alice", "voip_bob", "voip_carol", "voip_dave")
    logins = {name: synapse.register_user(name) for name in names}
    opened = {}
    for name, login in logins.items():
        opened[name] = matrix_client(login, synapse.base_url)
    entered = {name: await context.__aenter__() for name, context in opened.items()}
    yield entered
    for context in opened.values():
        await context.__aexit__(None, None, None)


def hears_only(peer: CallPeer, present: tuple[int, ...], absent: int) -> bool:
    strengths = [peer.hears(frequency) for frequency in present]
    return min(strengths) > HEARD and peer.hears(absent) < ABSENT * min(strengths)


async def test_dial_in_joins_the_conference(
    clients: dict[str, ClientAPI], running_bridge: BridgeProcess
) -> None:
    alice, bob, carol, dave = (clients[f"voip_{n}"] for n in ("alice", "bob", "carol", "dave"))
    room = await alice.create_room(
        invitees=[BOT, bob.mxid, carol.mxid],
        # As Element Call sets up call rooms: every member may publish.
        power_level_override={"events": {CALL_MEMBER: 0}},
    )
    await wait_for_membership(alice, room, BOT, Membership.JOIN)
    for member in (bob, carol):
        await member.join_room_by_id(room)
    ghost = await request_ghost(alice, room)

    peers = {
        "bob": CallPeer(440, 0.5, luma=60),
        "carol": CallPeer(700, 0.1, luma=190),
        "alice": CallPeer(1000, 0.05, luma=120),
    }
    calls = {}
    try:
        for name, client in (("bob", bob), ("carol", carol), ("alice", alice)):
            calls[name] = LegacyCaller(
                client, await direct_chat(client, ghost), ghost, peers[name]
            )
            answer = await calls[name].place()
            assert answer["version"] == "1" and answer["party_id"]
            assert any(
                m["purpose"] == "m.usermedia" for m in answer["sdp_stream_metadata"].values()
            )

        # Alice hears both others, not herself; she sees the loudest speaker, then the next.
        await eventually(lambda: _true(hears_only(peers["alice"], (440, 700), absent=1000)))
        await eventually(lambda: _true(_sees(peers["alice"], 60)))
        peers["bob"].tone.amplitude, peers["carol"].tone.amplitude = 0.01, 0.8
        await eventually(lambda: _true(_sees(peers["alice"], 190)))

        # Malformed call events are ignored with a log line; the calls go on.
        await carol.send_message_event(
            calls["carol"].chat,
            call_event_type("negotiate"),
            {
                "call_id": calls["carol"].call_id,
                "party_id": calls["carol"].party_id,
                "version": "1",
                "lifetime": 60000,
                "description": {"type": "offer", "sdp": "no SDP at all"},
            },  # type: ignore[arg-type]
        )
        await carol.send_message_event(
            calls["carol"].chat,
            call_event_type("invite"),
            {
                "call_id": "bad",
                "party_id": "x",
                "version": "1",
                "lifetime": 60000,
                "offer": {"type": "offer", "sdp": "not sdp"},
            },  # type: ignore[arg-type]
        )
        await eventually(lambda: _true(running_bridge.log_text().count("Ignoring malformed") >= 2))
        # One that mautrix itself cannot parse is logged without its content (SDP, addresses);
        # sent in alice's chat, whose history (unreadable for mautrix now) is not read again.
        await alice.send_message_event(
            calls["alice"].chat,
            call_event_type("candidates"),
            {
                "call_id": calls["alice"].call_id,
                "version": "1",
                "candidates": "candidate:1 1 udp 2122260223 192.0.2.71 50000 typ host",
            },  # type: ignore[arg-type]
        )
        summary = "Failed to deserialize event: m.call.candidates"
        await eventually(lambda: _true(summary in running_bridge.log_text()))
        assert "192.0.2.71" not in running_bridge.log_text()

        # Alice hangs up: she leaves the mix that bob hears.
        await calls["alice"].hang_up()
        await eventually(lambda: _true(hears_only(peers["bob"], (700,), absent=1000)))

        # Carol leaves the room: the ghost hangs up on her.
        await carol.leave_room(room)
        assert await calls["carol"].hangup_reason() == "not_a_room_member"
        await eventually(lambda: _true(peers["bob"].hears(700) < HEARD))

        # Dave is no member: his call is declined with a reason and an explanation.
        peers["dave"] = CallPeer(300, 0.3, luma=None)
        calls["dave"] = LegacyCaller(dave, await direct_chat(dave, ghost), ghost, peers["dave"])
        await calls["dave"].invite()
        assert await calls["dave"].hangup_reason() == "not_a_room_member"
        assert not await calls["dave"].from_ghost("answer")
        await wait_for_message(
            dave, calls["dave"].chat, ghost, lambda e: "member" in e.content.body
        )
    finally:
        for peer in peers.values():
            await peer.close()


async def test_dial_in_follows_the_right_to_publish(clients: dict[str, ClientAPI]) -> None:
    """In a room whose call memberships need level 50, a member at 0 who dials in hears the
    call but is heard by nobody."""
    alice, bob = clients["voip_alice"], clients["voip_bob"]
    room = await alice.create_room(invitees=[BOT, bob.mxid])
    await wait_for_membership(alice, room, BOT, Membership.JOIN)
    await bob.join_room_by_id(room)
    ghost = await request_ghost(alice, room)
    peers = {"alice": CallPeer(1000, 0.3, luma=120), "bob": CallPeer(440, 0.5, luma=60)}
    try:
        for name, client in (("alice", alice), ("bob", bob)):
            caller = LegacyCaller(client, await direct_chat(client, ghost), ghost, peers[name])
            await caller.place()
        await eventually(lambda: _true(peers["bob"].hears(1000) > HEARD))
        await eventually(lambda: _true(_sees(peers["bob"], 120)))
        await asyncio.sleep(2)  # bob's media, were it forwarded, would reach alice meanwhile
        assert peers["alice"].hears(440) < HEARD
        assert peers["alice"].sees() is None
    finally:
        for peer in peers.values():
            await peer.close()


async def _true(value: bool) -> bool:
    return value


def _sees(peer: CallPeer, luma: int) -> bool:
    seen = peer.sees()
    return seen is not None and abs(seen - luma) < 12
