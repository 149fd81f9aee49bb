"""Adversarial clients next to a good call, through the running bridge and the real token flow:
each is refused or closed alone, the good call keeps its media, and the bridge's sessions and
file descriptors return to where they were."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
import asyncio
import contextlib
import os

from livekit.protocol import rtc
from mautrix.types import EventType, RoomID, UserID
import aiohttp
import pytest

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, wait_until
from demo.matrix_client import matrix_client
from demo.media import MarkedVideo, ToneAudio
from demo.synapse import MatrixUser, Synapse

from .support.bad_offers import repeated_mid_offer
from .support.calls import CALL_MEMBER, LUMAS, ClientFactory, decodes


def open_descriptors(bridge: BridgeProcess) -> int:
    return len(os.listdir(f"/proc/{bridge.pid}/fd"))


class GoodCall:
    """Alice publishes, carol receives: the call an attacker must not disturb."""

    def __init__(self, alice: LiveKitClient, carol: LiveKitClient) -> None:
        self.alice, self.carol = alice, carol

    async def keeps_flowing(self) -> None:
        frames = self.carol.video_from(self.alice).video_frames
        await wait_until(lambda: self.carol.video_from(self.alice).video_frames > frames + 30)
        assert decodes(self.carol, self.alice, LUMAS["alice"])


@pytest.fixture
async def good_call(connect: ClientFactory) -> GoodCall:
    alice, carol = await connect("alice"), await connect("carol", protocol="v1")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.2)
    await wait_until(lambda: decodes(carol, alice, LUMAS["alice"]))
    return GoodCall(alice, carol)


async def require_level_to_publish(
    users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID, level: int
) -> None:
    async with matrix_client(users["alice"], synapse.base_url) as admin:
        levels = await admin.get_state_event(room_id, EventType.ROOM_POWER_LEVELS)
        levels.events[EventType.find(CALL_MEMBER, EventType.Class.STATE)] = level
        await admin.send_state_event(room_id, EventType.ROOM_POWER_LEVELS, levels)


async def send_unannounced(client: LiveKitClient, videos: int) -> None:
    """Send sections with media and no add_track: an offer only, as a modified client would."""
    client.pub_pc.addTransceiver(ToneAudio(0.5), direction="sendonly")
    for index in range(videos):
        client.pub_pc.addTransceiver(MarkedVideo(10 + index), direction="sendonly")
    await client.negotiate_publisher()


@pytest.mark.parametrize("protocol", ["v0", "v1"])
async def test_no_publishing_without_the_power_level(
    good_call: GoodCall,
    connect: ClientFactory,
    users: dict[str, MatrixUser],
    synapse: Synapse,
    room_id: RoomID,
) -> None:
    await require_level_to_publish(users, synapse, room_id, 50)
    bob = await connect("bob")
    assert bob.permission is not None and not bob.permission.can_publish

    await send_unannounced(bob, videos=1)
    with pytest.raises(TimeoutError):
        await bob.publish(luma=LUMAS["bob"])
    assert bob.refusals[-1].reason == rtc.RequestResponse.Reason.NOT_ALLOWED

    await good_call.keeps_flowing()
    carol = good_call.carol
    assert not carol.participants[bob.sid].tracks
    assert carol.video_from(bob).video_frames == carol.audio_from(bob).audio_frames == 0


async def test_demotion_unpublishes_at_once(
    good_call: GoodCall,
    connect: ClientFactory,
    users: dict[str, MatrixUser],
    synapse: Synapse,
    room_id: RoomID,
) -> None:
    bob, carol = await connect("bob"), good_call.carol
    await bob.publish(luma=LUMAS["bob"], amplitude=0.2)
    await wait_until(lambda: decodes(carol, bob, LUMAS["bob"]))

    await require_level_to_publish(users, synapse, room_id, 50)
    await wait_until(lambda: len(bob.unpublished) == 2)
    await wait_until(lambda: not carol.participants[bob.sid].tracks)
    assert bob.permission is not None and not bob.permission.can_publish
    frames = carol.video_from(bob).video_frames
    await good_call.keeps_flowing()
    assert carol.video_from(bob).video_frames <= frames + 5  # what was in flight

    await require_level_to_publish(users, synapse, room_id, 0)
    await wait_until(lambda: bob.permission is not None and bob.permission.can_publish)


async def test_bridge_permissions_keep_members_out(
    running_bridge: BridgeProcess,
    users: dict[str, MatrixUser],
    synapse: Synapse,
    room_id: RoomID,
) -> None:
    """mallory is a member of the room, but the admin gave her level none."""
    async with matrix_client(users["alice"], synapse.base_url) as admin:
        await admin.invite_user(room_id, UserID(users["mallory"].user_id))
    async with matrix_client(users["mallory"], synapse.base_url) as mallory:
        await mallory.join_room_by_id(room_id)
    request = {
        "room": room_id,
        "openid_token": synapse.openid_token(users["mallory"]),
        "device_id": users["mallory"].device_id,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{running_bridge.focus_url}/sfu/get", json=request) as response,
    ):
        assert response.status == 403
        assert "not available to you" in (await response.json())["error"]


async def test_unannounced_sections_reach_nobody(
    good_call: GoodCall, connect: ClientFactory
) -> None:
    bob, carol = await connect("bob"), good_call.carol
    sections = len(carol.pub_pc.getTransceivers())
    await send_unannounced(bob, videos=40)
    await good_call.keeps_flowing()
    assert not carol.participants[bob.sid].tracks
    assert len(carol.pub_pc.getTransceivers()) == sections
    assert not any(r.num_audios or r.num_videos for r in carol.requirements)


async def test_half_failed_negotiations_leave_nothing(
    good_call: GoodCall, connect: ClientFactory, running_bridge: BridgeProcess
) -> None:
    """An offer aiortc rejects part-way (a repeated mid) ends that session completely: the
    others see it leave, its socket is closed, and many of them exhaust nothing."""
    baseline = open_descriptors(running_bridge)
    for index in range(30):
        mallet = await connect("bob")
        sdp = await repeated_mid_offer(data_channel=index % 2 == 1)
        await mallet.send(rtc.SignalRequest(offer=rtc.SessionDescription(type="offer", sdp=sdp)))
        await mallet.wait_closed()
        assert "bad SDP offer" in mallet.close_reason
        await mallet.close()
    await wait_until(lambda: set(good_call.carol.participants) == {good_call.alice.sid})
    await wait_until(lambda: open_descriptors(running_bridge) <= baseline + 2)
    await good_call.keeps_flowing()


async def test_garbage_trickle_candidates_close_only_the_sender(
    good_call: GoodCall, connect: ClientFactory
) -> None:
    for candidate in ("candidate:1 1 udp x 127.0.0.1", "candidate:", "candidate:a b c d e f g h"):
        mallet = await connect("bob")
        init = f'{{"candidate": "{candidate}", "sdpMid": "0", "sdpMLineIndex": 0}}'
        trickle = rtc.TrickleRequest(candidateInit=init, target=rtc.SignalTarget.PUBLISHER)
        await mallet.send(rtc.SignalRequest(trickle=trickle))
        await mallet.wait_closed()
        assert "malformed ICE candidate" in mallet.close_reason
    await good_call.keeps_flowing()


DeviceToken = Callable[[int], Awaitable[str]]


@pytest.fixture
def bob_device(
    running_bridge: BridgeProcess, synapse: Synapse, users: dict[str, MatrixUser], room_id: RoomID
) -> DeviceToken:
    """A token for bob's device number n: each device is a participant of its own."""
    return partial(device_token, running_bridge, synapse, users["bob"], room_id)


async def test_sessions_that_never_connect_are_dropped(
    good_call: GoodCall, running_bridge: BridgeProcess, bob_device: DeviceToken
) -> None:
    """Connections that keep pinging but never answer the SFU's offer (so never do ICE) are
    dropped after media.limits.connect_timeout, not held until the socket closes."""
    baseline = open_descriptors(running_bridge)
    ping = rtc.SignalRequest(ping=1).SerializeToString()

    async def stay_silent(ws: aiohttp.ClientWebSocketResponse) -> None:
        reader = asyncio.ensure_future(ws.receive_bytes())
        while not ws.closed:
            with contextlib.suppress(ConnectionResetError):  # closing meanwhile
                await ws.send_bytes(ping)
            done, _ = await asyncio.wait({reader}, timeout=2)
            if done:
                with contextlib.suppress(TypeError):  # the close frame is no bytes
                    reader.result()
                reader = asyncio.ensure_future(ws.receive_bytes())
        reader.cancel()

    async with aiohttp.ClientSession() as session:
        silent = []
        for index in range(4):
            token = await bob_device(index)
            url = f"{running_bridge.focus_url}/rtc"
            silent.append(await session.ws_connect(url, params={"access_token": token}))
        await asyncio.wait_for(asyncio.gather(*map(stay_silent, silent)), 60)
    await wait_until(lambda: open_descriptors(running_bridge) <= baseline + 2)
    await good_call.keeps_flowing()


async def test_sessions_per_user_are_limited(
    good_call: GoodCall, running_bridge: BridgeProcess, bob_device: DeviceToken
) -> None:
    clients = []
    try:
        for index in range(5):
            token = await bob_device(index)
            client = LiveKitClient(running_bridge.focus_url, token)
            clients.append(client)
            await client.connect()
        token = await bob_device(5)
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{running_bridge.focus_url}/rtc/validate", params={"access_token": token}
            ) as response,
        ):
            assert response.status == 429
        await clients[0].close()
        await wait_until(lambda: len(good_call.carol.participants) == 5)
        extra = LiveKitClient(running_bridge.focus_url, token)
        clients.append(extra)
        await extra.connect()
        assert extra.join is not None and extra.join.participant.permission.can_subscribe
    finally:
        for client in clients:
            await client.close()
    await good_call.keeps_flowing()


async def device_token(
    bridge: BridgeProcess, synapse: Synapse, user: MatrixUser, room: str, device: int
) -> str:
    """A token for one more device of ``user`` (each device is its own participant)."""
    request = {
        "room": room,
        "openid_token": synapse.openid_token(user),
        "device_id": f"{user.device_id}{device}",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bridge.focus_url}/sfu/get", json=request) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
        return str(body["jwt"])
