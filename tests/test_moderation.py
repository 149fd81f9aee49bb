"""Moderation through the real Synapse, with aiortc LiveKit clients: a moderator (alice, who
created the room) mutes, removes, locks and ends; bob and carol are plain members; a knock
on a room is announced and admitted."""

from __future__ import annotations

from livekit.protocol import models
from mautrix.types import EventType, Membership, MessageEvent, RoomID, UserID
import pytest

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import (
    matrix_client,
    wait_for_membership,
    wait_for_message,
)
from demo.synapse import MatrixUser, Synapse

from .support.calls import BOT, BOTH_PROTOCOLS, LUMAS, ClientFactory, decodes
from .support.commands import command

AUDIO = models.TrackType.AUDIO


async def audio_stays_stopped(receiver: LiveKitClient, sender: LiveKitClient) -> None:
    """While 30 more of the sender's video frames arrive (a second), its audio (50 frames a
    second) does not come: at most what was already on its way."""
    audio = receiver.audio_from(sender).audio_frames
    video = receiver.video_from(sender).video_frames
    await wait_until(lambda: receiver.video_from(sender).video_frames > video + 30)
    assert receiver.audio_from(sender).audio_frames <= audio + 5


async def audio_flows(receiver: LiveKitClient, sender: LiveKitClient) -> None:
    audio = receiver.audio_from(sender).audio_frames
    await wait_until(lambda: receiver.audio_from(sender).audio_frames > audio + 25)


def told_muted(client: LiveKitClient, times: int) -> bool:
    sid = client.own_tracks[AUDIO]
    return len([m for m in client.mutes if m.sid == sid and m.muted]) >= times


def shown_muted(viewer: LiveKitClient, sender: LiveKitClient, muted: bool) -> bool:
    remote = viewer.participants.get(sender.sid)
    track = remote.tracks.get(sender.own_tracks[AUDIO]) if remote else None
    return track is not None and track.muted == muted


@BOTH_PROTOCOLS
async def test_moderator_mutes_and_moderated_mode_keeps_it(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    bob_id = users["bob"].user_id
    await connect("alice")
    bob, carol = await connect("bob"), await connect("carol")
    await bob.publish(luma=LUMAS["bob"], amplitude=0.3)
    await wait_until(lambda: decodes(carol, bob, LUMAS["bob"]))
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        reply = await command(alice, room_id, f"!call mute {bob_id}")
        assert f"Muted the microphone of {bob_id}" in reply
        assert "can unmute themselves" in reply
        await wait_until(lambda: told_muted(bob, 1))
        await wait_until(lambda: shown_muted(carol, bob, True))
        await audio_stays_stopped(carol, bob)

        # Not moderated: bob may unmute himself.
        await bob.set_muted(AUDIO, False)
        await wait_until(lambda: shown_muted(carol, bob, False))
        await audio_flows(carol, bob)

        assert "is moderated" in await command(alice, room_id, "!call moderated on")
        reply = await command(alice, room_id, f"!call mute {bob_id} all")
        assert f"Muted the microphone and camera of {bob_id}" in reply
        assert "cannot unmute themselves" in reply
        await wait_until(lambda: told_muted(bob, 2))
        await bob.set_muted(AUDIO, False)  # refused: he is told he stays muted
        await wait_until(lambda: told_muted(bob, 3))
        assert shown_muted(carol, bob, True)
        frames = carol.audio_from(bob).audio_frames
        for _ in range(3):
            await bob.set_muted(AUDIO, False)
        await wait_until(lambda: told_muted(bob, 6))
        assert carol.audio_from(bob).audio_frames <= frames + 5

        assert "may unmute themselves again" in await command(
            alice, room_id, f"!call unmute {bob_id}"
        )
        await bob.set_muted(AUDIO, False)
        await audio_flows(carol, bob)

        status = await command(alice, room_id, "!call status")
        assert f"{users['alice'].user_id}: mute {bob_id}" in status
        assert "The call is moderated" in status
        assert "no longer moderated" in await command(alice, room_id, "!call moderated off")


async def test_members_without_the_power_level_cannot_moderate(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    alice = await connect("alice")
    async with matrix_client(users["bob"], synapse.base_url) as bob:
        for attempt in (f"!call remove {users['alice'].user_id}", "!call end", "!call lock"):
            assert "is for this room's moderators" in await command(bob, room_id, attempt)
        help_text = await command(bob, room_id, "!call help")
        assert "!call status" in help_text and "!call mute" not in help_text
    async with matrix_client(users["alice"], synapse.base_url) as moderator:
        help_text = await command(moderator, room_id, "!call help")
        for name in ("mute", "unmute", "remove", "end", "lock", "unlock", "moderated", "admit"):
            assert f"!call {name}" in help_text
    assert alice.leave is None


async def test_removed_participant_leaves_and_is_refused_for_a_while(
    connect: ClientFactory,
    running_bridge: BridgeProcess,
    users: dict[str, MatrixUser],
    synapse: Synapse,
    room_id: RoomID,
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await wait_until(lambda: bob.sid in alice.participants)
    async with matrix_client(users["alice"], synapse.base_url) as moderator:
        reply = await command(
            moderator, room_id, f"!call remove {users['bob'].user_id} shouting at people"
        )
        assert f"Removed {users['bob'].user_id} (shouting at people)" in reply
    await bob.wait_closed()
    assert bob.leave is not None
    assert not bob.leave.can_reconnect
    assert bob.leave.reason == models.DisconnectReason.PARTICIPANT_REMOVED
    await wait_until(lambda: bob.sid not in alice.participants)
    with pytest.raises(AssertionError, match="removed you from this room's call"):
        await focus_token(running_bridge, synapse, users["bob"], room_id)
    await connect("carol")  # others still join


async def test_locked_call_takes_no_newcomers(
    connect: ClientFactory,
    running_bridge: BridgeProcess,
    users: dict[str, MatrixUser],
    synapse: Synapse,
    room_id: RoomID,
) -> None:
    bob = await connect("bob")
    await wait_until(lambda: bob.join is not None)
    async with matrix_client(users["alice"], synapse.base_url) as moderator:
        assert "The call is locked" in await command(moderator, room_id, "!call lock")
        with pytest.raises(AssertionError, match="locked"):
            await focus_token(running_bridge, synapse, users["carol"], room_id)
        await connect("alice")  # moderators still join
        await bob.close()
        await connect("bob")  # and so does someone who was in this call
        assert "unlocked" in await command(moderator, room_id, "!call unlock")
    await connect("carol")


async def test_moderator_ends_the_call_for_everyone(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    clients = [await connect(name) for name in LUMAS]
    await wait_until(lambda: all(len(c.participants) == 2 for c in clients))
    async with matrix_client(users["alice"], synapse.base_url) as moderator:
        reply = await command(moderator, room_id, "!call end")
        assert "ended the call; 3 participants disconnected" in reply
        for client in clients:
            await client.wait_closed()
            assert client.leave is not None and not client.leave.can_reconnect
        await wait_for_message(
            moderator, room_id, BOT, lambda e: "The call ended" in e.content.body
        )
        assert "No call is running" in await command(moderator, room_id, "!call end")


async def test_knock_is_announced_and_admitted(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    carol_id = UserID(users["carol"].user_id)
    async with (
        matrix_client(users["alice"], synapse.base_url) as alice,
        matrix_client(users["carol"], synapse.base_url) as carol,
    ):
        room_id = await alice.create_room(
            invitees=[BOT],
            initial_state=[
                {
                    "type": str(EventType.ROOM_JOIN_RULES),
                    "state_key": "",
                    "content": {"join_rule": "knock"},
                }
            ],
        )
        await wait_for_membership(alice, room_id, BOT, Membership.JOIN)
        await carol.knock_room(room_id, reason="for the weekly call")

        def announces(event: MessageEvent) -> bool:
            return "asks to join" in event.content.body

        notice = await wait_for_message(alice, room_id, BOT, announces)
        assert f"{carol_id} asks to join this room (for the weekly call)" in notice.content.body
        assert f"!call admit {carol_id}" in notice.content.body

        assert "has not asked" in await command(
            alice, room_id, f"!call admit {users['bob'].user_id}"
        )
        assert f"Invited {carol_id}" in await command(alice, room_id, f"!call admit {carol_id}")

        await wait_for_membership(alice, room_id, carol_id, Membership.INVITE)
        await carol.join_room_by_id(room_id)
