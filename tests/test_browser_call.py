"""Element Call's path, end to end: headless Chromium pages built on livekit-client join one
room's call through the real token flow (Matrix OpenID from the real Synapse, the focus's
``/sfu/get``, LiveKit signalling v1 as livekit-client defaults to), each plays the others'
video and receives their audio; once more with livekit-client's end-to-end encryption, which
only decodes if the SFU forwards payload bytes untouched; and once on signalling v0 (two peer
connections), which older clients speak and livekit-client falls back to."""

from __future__ import annotations

from typing import Any
import asyncio
import secrets

from mautrix.types import Membership, RoomID, UserID
from playwright.async_api import Browser, Page
from yarl import URL
import pytest

from demo.bridge_process import BridgeProcess
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import SERVER_NAME, MatrixUser, Synapse
from demo.waiting import eventually

from .support.call_page import open_call, show_remote_video, state, wait_for_video_size

BOT = UserID(f"@callbot:{SERVER_NAME}")
NAMES = ("alice", "bob", "carol")


@pytest.fixture
async def room_id(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> RoomID:
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room = await alice.create_room(
            invitees=[BOT, *(UserID(users[n].user_id) for n in NAMES[1:])],
            power_level_override={"events": {"org.matrix.msc3401.call.member": 0}},
        )
        await wait_for_membership(alice, room, BOT, Membership.JOIN)
    for name in NAMES[1:]:
        async with matrix_client(users[name], synapse.base_url) as member:
            await member.join_room_by_id(room)
    return room


async def wait_for_media_from_everyone(pages: dict[str, Page], e2ee: bool) -> None:
    """Every page has the two others' video playing and audio arriving, and both advance."""

    async def snapshot() -> dict[str, dict[str, Any]]:
        return {name: await state(page) for name, page in pages.items()}

    def complete(states: dict[str, dict[str, Any]]) -> bool:
        return all(
            s["connected"]
            and s["e2ee"] == e2ee
            and len(s["remotes"]) == len(pages) - 1
            and all(
                r["videoFrames"] > 10 and r["audioBytes"] > 1000 for r in s["remotes"].values()
            )
            for s in states.values()
        )

    seen: list[dict[str, dict[str, Any]]] = []

    async def probe() -> dict[str, dict[str, Any]] | None:
        states = await snapshot()
        seen[:] = [states]
        return states if complete(states) else None

    try:
        first = await eventually(probe, timeout=60, interval=0.5)
    except AssertionError as e:
        raise AssertionError(f"not everyone has media: {seen}") from e
    await asyncio.sleep(2)
    second = await snapshot()
    for name, page_state in second.items():
        for identity, remote in page_state["remotes"].items():
            before = first[name]["remotes"][identity]
            assert remote["videoFrames"] > before["videoFrames"], (name, identity, "video frozen")
            assert remote["audioBytes"] > before["audioBytes"], (name, identity, "audio stopped")
            assert remote["videoWidth"] > 0


@pytest.mark.parametrize(
    ("e2ee", "signal"), [(False, "v1"), (True, "v1"), (False, "v0")], ids=["plain", "e2ee", "v0"]
)
async def test_three_browsers_see_and_hear_each_other(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
    e2ee: bool,
    signal: str,
) -> None:
    key = secrets.token_urlsafe(16) if e2ee else None
    signal_paths: list[str] = []
    pages = {
        name: await open_call(
            browser,
            pages_url,
            running_bridge,
            synapse,
            users[name],
            room_id,
            key,
            signal,
            signal_paths,
        )
        for name in NAMES
    }
    try:
        await wait_for_media_from_everyone(pages, e2ee)
        assert set(signal_paths) == {"/rtc/v1" if signal == "v1" else "/rtc"}
        identities = {(await state(page))["identity"] for page in pages.values()}
        assert identities == {f"{users[n].user_id}:{users[n].device_id}" for n in NAMES}
    finally:
        for page in pages.values():
            await page.context.close()


@pytest.mark.parametrize("signal", ["v1", "v0"])
async def test_simulcast_layer_follows_tile_size(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
    signal: str,
) -> None:
    """Element Call's publishing (720p camera as 180p/360p/720p simulcast) reaches the SFU in
    all three layers, and a subscriber with adaptiveStream decodes the layer its tile needs:
    the top one for a large tile, the lowest for a small one, switching as the tile is
    resized."""
    paths: list[str] = []

    async def join(name: str, **options: str) -> Page:
        return await open_call(
            browser, pages_url, running_bridge, synapse, users[name], room_id, None, signal,
            paths, options="element-call", **options,
        )  # fmt: skip

    alice = await join("alice")
    bob = await join("bob", publish="none")
    await bob.set_viewport_size({"width": 1600, "height": 1000})
    publisher = f"{users['alice'].user_id}:{users['alice'].device_id}"
    try:
        for width, size in ((1280, (1280, 720)), (160, (320, 180)), (1280, (1280, 720))):
            await show_remote_video(bob, width)
            await wait_for_video_size(bob, publisher, size)
        assert (await state(bob))["remotes"][publisher]["layers"] == [320, 640, 1280]
        assert set(paths) == {"/rtc/v1" if signal == "v1" else "/rtc"}
    finally:
        for page in (alice, bob):
            await page.context.close()


async def test_browser_resumes_after_its_signalling_connection_drops(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    """livekit-client's own resume (reconnect with its sid, sync_state, an offer restarting
    ICE): the same participant continues, and media flows again both ways."""
    signal_paths: list[str] = []
    pages = {
        name: await open_call(
            browser, pages_url, running_bridge, synapse, users[name], room_id, None, "v1", []
        )
        for name in NAMES[:2]
    }
    pages["alice"].on("websocket", lambda socket: signal_paths.append(URL(socket.url).path))
    sids = "[...window.callRoom.remoteParticipants.values()].map(p => p.sid)"
    try:
        await wait_for_media_from_everyone(pages, e2ee=False)
        alice_sid = await pages["alice"].evaluate("window.callRoom.localParticipant.sid")
        assert await pages["bob"].evaluate(sids) == [alice_sid]

        await pages["alice"].evaluate(
            """() => new Promise((resolve) => {
                window.callRoom.once("reconnected", resolve);
                window.callRoom.simulateScenario("signal-reconnect");
            })"""
        )

        assert signal_paths == ["/rtc/v1"]  # one new connection: a resume, not a rejoin
        assert await pages["alice"].evaluate("window.callRoom.localParticipant.sid") == alice_sid
        assert await pages["bob"].evaluate(sids) == [alice_sid]
        assert "resumed on a new connection" in running_bridge.log_text()
        await wait_for_media_from_everyone(pages, e2ee=False)
    finally:
        for page in pages.values():
            await page.context.close()


async def test_dynacast_turns_off_the_layers_nobody_watches(
    browser: Browser,
    pages_url: str,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    """With its only viewer's tile small, the publisher is told to stop its 360p and 720p
    encodings (its ``outbound-rtp`` for them goes inactive); a large tile turns them on again."""
    paths: list[str] = []

    async def join(name: str, **options: str) -> Page:
        return await open_call(
            browser, pages_url, running_bridge, synapse, users[name], room_id, None, "v1",
            paths, options="element-call", **options,
        )  # fmt: skip

    alice = await join("alice")
    bob = await join("bob", publish="none")
    await bob.set_viewport_size({"width": 1600, "height": 1000})
    publisher = f"{users['alice'].user_id}:{users['alice'].device_id}"
    seen: list[object] = []

    async def sending(expected: dict[str, bool]) -> bool:
        page_state = await state(alice)
        seen[:] = [page_state["active"], page_state["sending"]]
        return page_state["active"] == expected

    try:
        await show_remote_video(bob, 1280)
        await wait_for_video_size(bob, publisher, (1280, 720))
        await show_remote_video(bob, 160)
        await wait_for_video_size(bob, publisher, (320, 180))
        try:
            await eventually(lambda: sending({"q": True, "h": False, "f": False}), timeout=60)
            await show_remote_video(bob, 1280)
            await eventually(lambda: sending({"q": True, "h": True, "f": True}), timeout=60)
        except AssertionError as e:
            raise AssertionError(f"publisher's encodings (active, widths): {seen}") from e
    finally:
        for page in (alice, bob):
            await page.context.close()
