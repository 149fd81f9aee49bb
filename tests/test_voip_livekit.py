"""Old and new Matrix clients in one conference: a legacy 1:1 call dialled into a room's ghost
and a LiveKit client (Element Call's protocol, token through the real flow) see and hear each
other, and the room's call lists the dial-in caller."""

from __future__ import annotations

from mautrix.types import Membership, RoomID, UserID

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, replies_to, wait_for_membership, wait_for_message
from demo.synapse import MatrixUser, Synapse

from .support.voip_caller import BOT, LegacyCaller, direct_chat, request_ghost
from .support.voip_media import CallPeer

CALL_MEMBER = "org.matrix.msc3401.call.member"
CALLER_LUMA, LIVEKIT_LUMA = 190, 60
LIVEKIT_TONE_HZ = 440
""":class:`~demo.media.ToneAudio`'s frequency."""
HEARD = 100.0


async def call_room(alice: MatrixUser, bob: MatrixUser, synapse: Synapse) -> RoomID:
    async with (
        matrix_client(alice, synapse.base_url) as creator,
        matrix_client(bob, synapse.base_url) as member,
    ):
        room = await creator.create_room(
            invitees=[BOT, UserID(bob.user_id)],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(creator, room, BOT, Membership.JOIN)
        await member.join_room_by_id(room)
    return room


def sees(peer: CallPeer, luma: int) -> bool:
    seen = peer.sees()
    return seen is not None and abs(seen - luma) < 12


async def test_dial_in_caller_and_livekit_client_meet(
    running_bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser]
) -> None:
    alice, bob = users["alice"], users["bob"]
    room = await call_room(alice, bob, synapse)
    caller_peer = CallPeer(1000, 0.3, luma=CALLER_LUMA)
    async with matrix_client(alice, synapse.base_url) as caller_client:
        # The bot's reply also means that the bridge has seen bob join, so he gets a token.
        ghost = await request_ghost(caller_client, room)
        token = await focus_token(running_bridge, synapse, bob, room)
        livekit = LiveKitClient(running_bridge.focus_url, token)
        try:
            await livekit.connect()
            await livekit.publish(luma=LIVEKIT_LUMA, amplitude=0.3)
            caller = LegacyCaller(
                caller_client, await direct_chat(caller_client, ghost), ghost, caller_peer
            )
            await caller.place()

            # The LiveKit client sees alice as a participant with both tracks and decodes them.
            def alice_in_call() -> str | None:
                for sid, remote in livekit.participants.items():
                    if remote.identity == alice.user_id and len(remote.tracks) == 2:
                        return sid
                return None

            await wait_until(lambda: alice_in_call() is not None)
            sid = alice_in_call()
            assert sid is not None
            await wait_until(
                lambda: (
                    len(livekit.video_from(sid).lumas) >= 5
                    and all(abs(v - CALLER_LUMA) < 12 for v in livekit.video_from(sid).lumas[-5:])
                    and livekit.audio_from(sid).audio_frames > 25
                )
            )

            # Alice hears bob's tone and sees his camera.
            await wait_until(lambda: caller_peer.hears(LIVEKIT_TONE_HZ) > HEARD)
            await wait_until(lambda: sees(caller_peer, LIVEKIT_LUMA))

            # The room's call lists her as a dial-in participant.
            status_id = await caller_client.send_text(room, "!call status")
            status = await wait_for_message(caller_client, room, BOT, replies_to(status_id))
            assert f"{alice.user_id} (dial-in)" in status.content.body

            await caller.hang_up()
            await wait_until(lambda: sid not in livekit.participants)
        finally:
            await livekit.close()
            await caller_peer.close()
