"""The real Element Call web app (npm ``@element-hq/element-call-embedded``, standalone mode)
against the test Synapse and the bridge: two users in headless Chromium start a call in a
room with the bot, and each receives the other's video and audio through the SFU (WebRTC
statistics of what arrives and is decoded); once more in an encrypted room, where Element
Call encrypts media end to end with per-participant keys sent over Matrix; and a call whose
signalling connection drops, which Element Call's livekit-client resumes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
import re
import secrets

from playwright.async_api import Browser
import pytest

from demo.bridge_process import BridgeProcess
from demo.element_call import element_call
from demo.synapse import SERVER_NAME, Synapse
from demo.waiting import eventually

from .support.element_call import call_room, open_element_call, receiving

NAMES = ("alice", "bob")


@pytest.fixture
async def ec_url(running_bridge: BridgeProcess, synapse: Synapse) -> AsyncIterator[str]:
    async with element_call(synapse.base_url, SERVER_NAME, running_bridge.focus_url) as url:
        yield url


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_element_call_users_see_and_hear_each_other(
    browser: Browser,
    ec_url: str,
    synapse: Synapse,
    encrypted: bool,
) -> None:
    # New users, so new devices: a device's identity keys are uploaded once, and Element Call
    # in a fresh browser profile would make new ones for a device used before.
    users = {name: synapse.register_user(f"{name}-{secrets.token_hex(4)}") for name in NAMES}
    room = await call_room(users, synapse, encrypted)
    consoles: dict[str, list[str]] = {name: [] for name in NAMES}
    pages = [
        await open_element_call(browser, ec_url, users[name], room, consoles[name])
        for name in NAMES
    ]
    try:
        first = await eventually(partial(receiving, pages), timeout=90, interval=1)
        await eventually(partial(receiving, pages, since=first), timeout=30, interval=1)
    finally:
        for page in pages:
            await page.context.close()
    for name, other in zip(NAMES, reversed(NAMES), strict=True):
        # Element Call's own account of what it subscribed to, encrypted as the SFU said.
        identity = re.escape(f"{users[other].user_id}:{users[other].device_id}")
        for track in ("audio microphone", "video camera"):
            line = re.compile(
                f"Subscribed: {track} TR_\\w+ of {identity} encrypted={encrypted}", re.I
            )
            assert any(line.search(text) for text in consoles[name]), (name, line.pattern)


async def test_element_call_resumes_after_its_connection_drops(
    browser: Browser, ec_url: str, synapse: Synapse, running_bridge: BridgeProcess
) -> None:
    """Element Call's signalling WebSocket drops: livekit-client resumes the same session
    (ICE restart included), the other user sees no one leave, and media flows again."""
    users = {name: synapse.register_user(f"{name}-{secrets.token_hex(4)}") for name in NAMES}
    room = await call_room(users, synapse, encrypted=False)
    consoles: dict[str, list[str]] = {name: [] for name in NAMES}
    pages = [
        await open_element_call(browser, ec_url, users[name], room, consoles[name])
        for name in NAMES
    ]
    try:
        first = await eventually(partial(receiving, pages), timeout=90, interval=1)
        seen_by_bob = len(consoles["bob"])
        await pages[0].evaluate(
            """() => window.webSockets
                .filter((socket) => new URL(socket.url).pathname.startsWith("/rtc"))
                .forEach((socket) => socket.close())"""
        )

        async def resumed() -> bool:
            return "resumed on a new connection" in running_bridge.log_text()

        await eventually(resumed, timeout=30)
        await eventually(partial(receiving, pages, since=first), timeout=60, interval=1)
        meanwhile = consoles["bob"][seen_by_bob:]  # not what closing the pages logs
    finally:
        for page in pages:
            await page.context.close()
    alice = f"{users['alice'].user_id}:{users['alice'].device_id}"
    assert not [line for line in meanwhile if "Unsubscribed" in line and alice in line]
