"""Dial-in from an independent, widely used client: matrix-js-sdk's ``MatrixCall`` (what
Element Web places 1:1 calls with) in headless Chromium calls a room's dial-in ghost, gets
connected, and receives the conference: the audio and camera of a LiveKit participant."""

from __future__ import annotations

from typing import Any

from mautrix.types import Membership, RoomID, UserID
from playwright.async_api import Browser, Page
from yarl import URL

from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.matrix_client import matrix_client, wait_for_membership
from demo.media import WIDTH
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

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


async def test_matrix_js_sdk_call_joins_the_conference(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
) -> None:
    alice, carol = users["alice"], users["carol"]
    async with matrix_client(alice, synapse.base_url) as caller:
        room = await caller.create_room(
            invitees=[BOT, UserID(carol.user_id)],
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(caller, room, BOT, Membership.JOIN)
        async with matrix_client(carol, synapse.base_url) as member:
            await member.join_room_by_id(room)
        # The bot's reply also means that the bridge has seen carol join, so she gets a token.
        chat: RoomID = await direct_chat(caller, await request_ghost(caller, room))

    livekit = LiveKitClient(
        running_bridge.focus_url, await focus_token(running_bridge, synapse, carol, room)
    )
    context = await browser.new_context()
    try:
        await livekit.connect()
        await livekit.publish(luma=60, amplitude=0.3)
        page = await context.new_page()
        params = {
            "hs": synapse.base_url,
            "token": alice.access_token,
            "user": alice.user_id,
            "device": alice.device_id,
            "room": chat,
            "video": "1",
        }
        await page.goto(str(URL(f"{pages_url}/dialin.html").with_query(params)))

        async def connected_with_media() -> dict[str, Any] | None:
            state = await dialin_state(page)
            assert state["phase"] not in ("failed", "error", "ended"), state
            return state if receives_media(state) else None

        first = await eventually(connected_with_media, timeout=60, interval=0.5)
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
