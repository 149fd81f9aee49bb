"""LiveKit signalling of the running bridge, with aiortc clients that get their tokens through
the real token flow (Matrix OpenID from the real Synapse): media, speakers, bad clients."""

from __future__ import annotations

import base64
import contextlib
import re
import time

from livekit.protocol import models, rtc
from mautrix.types import EventType, RoomID, UserID
import aiohttp
import pytest

from demo.bridge_process import BridgeProcess
from demo.livekit_client import focus_token, wait_until
from demo.matrix_client import (
    matrix_client,
    replies_to,
    wait_for_message,
)
from demo.synapse import MatrixUser, Synapse

from .support.calls import BOT, BOTH_PROTOCOLS, CALL_MEMBER, LUMAS, ClientFactory, decodes


@BOTH_PROTOCOLS
async def test_three_participants_receive_each_other(connect: ClientFactory) -> None:
    clients = {name: await connect(name) for name in LUMAS}
    for name, client in clients.items():
        await client.publish(luma=LUMAS[name], amplitude=0.3)
    for name, receiver in clients.items():
        for other, sender in clients.items():
            if other != name:
                await wait_until(lambda r=receiver, s=sender, o=other: decodes(r, s, LUMAS[o]))
        assert receiver.sid not in receiver.participants
    identities = {client.identity for client in clients.values()}
    assert {p.identity for p in clients["alice"].participants.values()} == identities - {
        clients["alice"].identity
    }
    assert clients["alice"].identity.startswith("@alice:localhost:")


@BOTH_PROTOCOLS
async def test_join_response_and_late_joiner(connect: ClientFactory) -> None:
    alice = await connect("alice")
    assert alice.join is not None
    assert alice.join.server_info.version
    assert alice.join.participant.permission.can_publish
    assert [c.mime for c in alice.join.enabled_publish_codecs] == ["video/VP8", "audio/opus"]
    assert not alice.join.ice_servers  # nothing configured: no third party
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    bob = await connect("bob")
    assert bob.join is not None
    assert [p.identity for p in bob.join.other_participants] == [alice.identity]
    assert len(bob.join.other_participants[0].tracks) == 2
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))


async def test_newcomers_are_announced_as_what_they_are(connect: ClientFactory) -> None:
    """The first update about a LiveKit newcomer already says it is one (not a dial-in leg),
    so clients that keep only newer versions never hold a wrong kind."""
    alice = await connect("alice")
    bob = await connect("bob")
    await wait_until(lambda: bob.sid in alice.participants)
    await bob.publish(luma=LUMAS["bob"])
    await wait_until(lambda: len(alice.participants[bob.sid].tracks) == 1)
    assert alice.participants[bob.sid].kind == models.ParticipantInfo.Kind.STANDARD


async def test_single_pc_client_is_asked_for_the_sections_it_lacks(connect: ClientFactory) -> None:
    """More to receive than sections offered, at join and later: the SFU asks the client to add
    some (media_sections_requirement) and offer again; answers name each section's track."""
    alice, carol = await connect("alice"), await connect("carol")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    bob = await connect("bob", protocol="v1", media_sections=(1, 0))
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    assert bob.requirements[0].num_videos == 1
    await carol.publish(luma=LUMAS["carol"], amplitude=0.2)
    await wait_until(lambda: decodes(bob, carol, LUMAS["carol"]))
    assert sum(r.num_audios for r in bob.requirements) >= 1
    assert sum(r.num_videos for r in bob.requirements) >= 2


async def test_single_pc_client_may_not_answer(connect: ClientFactory) -> None:
    """On one connection only the client offers: an answer is a protocol violation."""
    mallet = await connect("bob", protocol="v1")
    answer = rtc.SessionDescription(type="answer", sdp="v=0\r\n", id=1)
    await mallet.send(rtc.SignalRequest(answer=answer))
    await mallet.wait_closed()
    assert mallet.close_code == 1008
    assert "unexpected answer" in mallet.close_reason


@BOTH_PROTOCOLS
async def test_louder_participant_is_the_active_speaker(connect: ClientFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(amplitude=0.8)
    await bob.publish(amplitude=0.0)

    def alice_speaks() -> bool:
        return any(s.sid == alice.sid and s.active for update in bob.speakers for s in update)

    await wait_until(alice_speaks)
    assert not any(s.sid == bob.sid and s.active for update in bob.speakers for s in update)


@BOTH_PROTOCOLS
async def test_leaving_participant_disappears_for_others(connect: ClientFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"])
    await wait_until(lambda: alice.sid in bob.participants)
    await alice.close()
    await wait_until(lambda: alice.sid not in bob.participants)


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xfe garbage that is no protobuf", "malformed SignalRequest"),
        (b"", "unknown or empty SignalRequest"),
        ("{not json", "malformed SignalRequest"),
        (
            rtc.SignalRequest(
                offer=rtc.SessionDescription(type="offer", sdp="v=0\r\nnonsense\r\n", id=1)
            ).SerializeToString(),
            "bad SDP offer",
        ),
        (
            rtc.SignalRequest(
                trickle=rtc.TrickleRequest(
                    candidateInit="[1, 2", target=rtc.SignalTarget.PUBLISHER
                )
            ).SerializeToString(),
            "malformed ICE candidate",
        ),
        (
            rtc.SignalRequest(
                add_track=rtc.AddTrackRequest(cid="x", type=models.TrackType.DATA)
            ).SerializeToString(),
            "add_track: only audio and video tracks",
        ),
        (b"\x00" * (2 * 1024 * 1024), ""),
    ],
    ids=["garbage", "empty", "bad-json", "bad-sdp", "bad-candidate", "data-track", "oversized"],
)
async def test_bad_client_is_closed_and_others_continue(
    connect: ClientFactory, frame: bytes | str, reason: str
) -> None:
    alice, mallet = await connect("alice"), await connect("bob")
    carol = await connect("carol")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await wait_until(lambda: decodes(carol, alice, LUMAS["alice"]))

    with contextlib.suppress(ConnectionError):  # the bridge may close mid-frame (oversized)
        await mallet.send_raw(frame)
    await mallet.wait_closed()
    assert mallet.close_code in (1008, 1009)
    assert reason in mallet.close_reason
    await wait_until(lambda: mallet.sid not in carol.participants)

    frames_before = carol.video_from(alice).video_frames
    await wait_until(lambda: carol.video_from(alice).video_frames > frames_before + 30)


async def test_tokens_are_checked_before_the_websocket_opens(
    running_bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser], room_id: RoomID
) -> None:
    token = await focus_token(running_bridge, synapse, users["alice"], room_id)
    join = rtc.JoinRequest(client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.JS))
    wrapped = rtc.WrappedJoinRequest(join_request=join.SerializeToString())
    join_request = base64.urlsafe_b64encode(wrapped.SerializeToString()).decode()
    async with aiohttp.ClientSession() as session:
        for path, params, status in [
            ("/rtc", {"access_token": "not-a-jwt"}, 401),
            ("/rtc/validate", {"access_token": token[:-4] + "AAAA"}, 401),
            ("/rtc/validate", {}, 400),
            ("/rtc/validate", {"access_token": token}, 200),
            ("/rtc/v1", {"access_token": "not-a-jwt", "join_request": join_request}, 401),
            ("/rtc/v1/validate", {"access_token": token}, 400),  # no join_request
            ("/rtc/v1/validate", {"access_token": token, "join_request": "%%%"}, 400),
            ("/rtc/v1/validate", {"access_token": token, "join_request": join_request}, 200),
        ]:
            async with session.get(running_bridge.focus_url + path, params=params) as response:
                assert response.status == status, (path, await response.text())
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{running_bridge.focus_url}/rtc/validate", headers=headers) as r:
            assert r.status == 200


async def test_banned_user_is_disconnected_from_media(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await wait_until(lambda: bob.sid in alice.participants)
    async with matrix_client(users["alice"], synapse.base_url) as admin:
        await admin.ban_user(room_id, UserID(users["bob"].user_id), reason="test")
    await bob.wait_closed()
    assert bob.leave is not None
    await wait_until(lambda: bob.sid not in alice.participants)
    with pytest.raises(AssertionError):
        await connect("bob")


async def test_call_is_announced_recorded_and_shown_in_status(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await wait_until(lambda: bob.sid in alice.participants)
    async with matrix_client(users["alice"], synapse.base_url) as member:
        await wait_for_message(member, room_id, BOT, lambda e: "call started" in e.content.body)
        status_id = await member.send_text(room_id, "!call status")
        status = await wait_for_message(member, room_id, BOT, replies_to(status_id))
        assert "A call is running" in status.content.body
        for name in ("alice", "bob"):
            assert f"{users[name].user_id} (Element Call)" in status.content.body

        await alice.close()
        await bob.close()
        ended = await wait_for_message(
            member, room_id, BOT, lambda e: "call ended" in e.content.body
        )
        assert "2 participants at most" in ended.content.body
        assert re.search(r"after \d+ s;", ended.content.body)  # seconds, grace not counted
        status_id = await member.send_text(room_id, "!call status")
        status = await wait_for_message(member, room_id, BOT, replies_to(status_id))
        assert "No call is running" in status.content.body
        assert "(2 participants)" in status.content.body


async def test_media_ends_with_the_call_membership(
    connect: ClientFactory, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    """Emptied (hang-up, a crashed client's delayed leave) or expired memberships end media."""
    alice = users["alice"]
    state_key = f"_{alice.user_id}_{alice.device_id}_m.call"
    member_event = EventType.find(CALL_MEMBER, EventType.Class.STATE)
    membership = {
        "application": "m.call",
        "call_id": "",
        "scope": "m.room",
        "device_id": alice.device_id,
        "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
        "foci_preferred": [],
    }
    async with matrix_client(alice, synapse.base_url) as member:
        expiring = await connect("alice")
        now = int(time.time() * 1000)
        await member.send_state_event(
            room_id, member_event, {**membership, "created_ts": now, "expires": 1500}, state_key
        )
        await expiring.wait_closed()
        assert expiring.leave is not None

        leaving = await connect("alice")
        await member.send_state_event(
            room_id, member_event, {**membership, "expires": 14_400_000}, state_key
        )
        await member.send_state_event(room_id, member_event, {}, state_key)
        await leaving.wait_closed()
        assert leaving.leave is not None


async def test_connection_quality_is_announced_for_everyone(connect: ClientFactory) -> None:
    """Scored from the loss and jitter of what each publishes and receives: on loopback,
    everyone is excellent, and everyone hears it about everyone."""
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await bob.publish(luma=LUMAS["bob"], amplitude=0.2)
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    excellent = {
        alice.sid: models.ConnectionQuality.EXCELLENT,
        bob.sid: models.ConnectionQuality.EXCELLENT,
    }
    await wait_until(lambda: alice.qualities == excellent and bob.qualities == excellent)
