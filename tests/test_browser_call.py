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


async def open_call(
    browser: Browser,
    pages_url: str,
    bridge: BridgeProcess,
    synapse: Synapse,
    user: MatrixUser,
    room_id: RoomID,
    e2ee_key: str | None,
    signal: str,
    signal_paths: list[str],
) -> Page:
    """The call page; the paths of the signalling WebSockets it opens go to ``signal_paths``
    (livekit-client falls back from v1 to v0 silently)."""
    params = {
        "hs": synapse.base_url,
        "token": user.access_token,
        "user": user.user_id,
        "device": user.device_id,
        "room": room_id,
        "focus": bridge.focus_url,
    }
    if e2ee_key:
        params["e2ee"] = e2ee_key
    if signal == "v0":
        params["signal"] = signal
    context = await browser.new_context()
    page = await context.new_page()
    page.on("websocket", lambda socket: signal_paths.append(URL(socket.url).path))
    await page.goto(str(URL(f"{pages_url}/call.html").with_query(params)))
    return page


async def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("window.callState()")
    return result


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

    async def probe() -> dict[str, dict[str, Any]] | None:
        states = await snapshot()
        return states if complete(states) else None

    first = await eventually(probe, timeout=60, interval=0.5)
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
