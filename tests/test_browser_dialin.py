"""Dial-in from an independent, widely used client: matrix-js-sdk's ``MatrixCall`` (what
Element Web places 1:1 calls with) in headless Chromium calls a room's dial-in ghost, gets
connected, and receives the conference: the audio and camera of a LiveKit participant; of a
camera sent as Element Call sends it (180p/360p/720p simulcast), the 360p layer."""

from __future__ import annotations

from typing import Any
import asyncio

from mautrix.types import Membership, RoomID, UserID
from playwright.async_api import Browser, Page
from yarl import URL

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, wait_for_membership
from demo.media import WIDTH
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .support.call_page import open_call, state
from .support.voip_caller import BOT, direct_chat, request_ghost

CALL_MEMBER = "org.matrix.msc3401.call.member"


async def dialin_state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("window.dialinState()")
    return result


def receives_media(state: dict[str, Any]) -> bool:
    inbound = state["inbound"]
    return (
        state["callState"] == "connected"
        and state["remoteAudioTracks"] == 1
        and state["remoteVideoTracks"] == 1
        and state["playing"]
        and inbound.get("audio", {}).get("audioEnergy", 0) > 0
        and inbound.get("video", {}).get("framesDecoded", 0) > 10
    )


async def room_with_dialin_chat(
    synapse: Synapse, caller_user: MatrixUser, member_user: MatrixUser
) -> tuple[RoomID, RoomID]:
    """A room with the bot and both users, and the caller's direct chat with its ghost."""
    async with matrix_client(caller_user, synapse.base_url) as caller:
        room = await caller.create_room(
            invitees=[BOT, UserID(member_user.user_id)],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(caller, room, BOT, Membership.JOIN)
        async with matrix_client(member_user, synapse.base_url) as member:
            await member.join_room_by_id(room)
        # The bot's reply also means that the bridge has seen the member join (token granted).
        chat: RoomID = await direct_chat(caller, await request_ghost(caller, room))
    return room, chat


async def dial_in(
    page: Page, pages_url: str, synapse: Synapse, user: MatrixUser, chat: RoomID
) -> dict[str, Any]:
    """Call the ghost with video from ``page``; the state once audio and video arrive."""
    params = {
        "hs": synapse.base_url,
        "token": user.access_token,
        "user": user.user_id,
        "device": user.device_id,
        "room": chat,
        "video": "1",
    }
    await page.goto(str(URL(f"{pages_url}/dialin.html").with_query(params)))

    async def connected_with_media() -> dict[str, Any] | None:
        state = await dialin_state(page)
        assert state["phase"] not in ("failed", "error", "ended"), state
        return state if receives_media(state) else None

    return await eventually(connected_with_media, timeout=60, interval=0.5)


async def test_matrix_js_sdk_call_joins_the_conference(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
) -> None:
    alice, carol = users["alice"], users["carol"]
    room, chat = await room_with_dialin_chat(synapse, alice, carol)
    livekit = LiveKitClient(
        running_bridge.focus_url, await focus_token(running_bridge, synapse, carol, room)
    )
    context = await browser.new_context()
    try:
        await livekit.connect()
        await livekit.publish(luma=60, amplitude=0.3)
        page = await context.new_page()
        first = await dial_in(page, pages_url, synapse, alice, chat)
        # The video shown is the LiveKit participant's camera (the ghost never returns the
        # caller's own), and what arrives keeps flowing.
        assert first["videoWidth"] == WIDTH

        async def flowing() -> bool:
            now = (await dialin_state(page))["inbound"]
            return (
                now["audio"]["bytes"] > first["inbound"]["audio"]["bytes"]
                and now["video"]["framesDecoded"] > first["inbound"]["video"]["framesDecoded"]
            )

        await eventually(flowing)

        # The LiveKit participant sees the browser caller and decodes its camera and voice.
        def caller_sid() -> str | None:
            return next(
                (s for s, p in livekit.participants.items() if p.identity == alice.user_id), None
            )

        await wait_until(
            lambda: (
                (sid := caller_sid()) is not None
                and livekit.video_from(sid).video_frames > 10
                and livekit.audio_from(sid).audio_frames > 25
            )
        )
        sid = caller_sid()

        await page.evaluate("window.hangUp()")
        await wait_until(lambda: sid not in livekit.participants)
    finally:
        await context.close()
        await livekit.close()


async def test_dialin_gets_the_middle_simulcast_layer(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
) -> None:
    # bob calls: a second initial sync of alice's device within minutes would get Synapse's
    # cached answer from the test above, without the new chat.
    bob, carol = users["bob"], users["carol"]
    room, chat = await room_with_dialin_chat(synapse, bob, carol)
    carol_page = await open_call(
        browser, pages_url, running_bridge, synapse, carol, room, None, "v1", [],
        options="element-call",
    )  # fmt: skip
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await dial_in(page, pages_url, synapse, bob, chat)

        async def size() -> tuple[int, int]:
            state = await dialin_state(page)
            return state["videoWidth"], state["videoHeight"]

        async def middle_layer() -> bool:
            return await size() == (640, 360)

        async def top_layer_sent() -> bool:
            return (await state(carol_page))["sending"].get("f") == 1280

        # Once carol's browser sends its top layer too (its bandwidth estimate ramps up), the
        # dial-in still gets the middle one.
        await eventually(top_layer_sent, timeout=90)
        await eventually(middle_layer)
        await asyncio.sleep(3)
        assert await size() == (640, 360)
    finally:
        await context.close()
        await carol_page.context.close()
