"""The real Element Call web app (npm ``@element-hq/element-call-embedded``, standalone mode)
against the test Synapse and the bridge: two users in headless Chromium start a call in a
room with the bot, and each receives the other's video and audio through the SFU (WebRTC
statistics of what arrives and is decoded); once more in an encrypted room, where Element
Call encrypts media end to end with per-participant keys sent over Matrix; and a call whose
signalling connection drops, which Element Call's livekit-client resumes."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
from functools import partial
import json
import re
import secrets

from mautrix.types import EventType, Membership, RoomID, UserID
from playwright.async_api import Browser, Page
import pytest

from demo.bridge_process import BridgeProcess
from demo.element_call import element_call
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import SERVER_NAME, MatrixUser, Synapse
from demo.waiting import eventually

from .support.calls import BOT, CALL_MEMBER

NAMES = ("alice", "bob")

COLLECT_CONNECTIONS = """
(() => {
  const keep = (Original, list) => {
    window[list] = [];
    const Kept = function (...args) {
      const instance = new Original(...args);
      window[list].push(instance);
      return instance;
    };
    Kept.prototype = Original.prototype;
    Object.setPrototypeOf(Kept, Original);
    return Kept;
  };
  window.RTCPeerConnection = keep(window.RTCPeerConnection, "peerConnections");
  window.WebSocket = keep(window.WebSocket, "webSockets");
})();
"""
"""Keeps the app's peer connections and WebSockets where the test can reach them."""

RECEIVED = """
async () => {
  const totals = { framesDecoded: 0, audioBytes: 0, audioEnergy: 0 };
  for (const pc of window.peerConnections ?? []) {
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((report) => {
      if (report.type !== "inbound-rtp") return;
      if (report.kind === "video") totals.framesDecoded += report.framesDecoded ?? 0;
      if (report.kind === "audio") {
        totals.audioBytes += report.bytesReceived ?? 0;
        totals.audioEnergy += report.totalAudioEnergy ?? 0;
      }
    });
  }
  return totals;
}
"""
"""What a page received from the SFU: decoded video frames, audio bytes, and the energy of
the decoded audio (silence, or concealment of undecryptable audio, has almost none)."""


@pytest.fixture
async def ec_url(running_bridge: BridgeProcess, synapse: Synapse) -> AsyncIterator[str]:
    async with element_call(synapse.base_url, SERVER_NAME, running_bridge.focus_url) as url:
        yield url


async def call_room(users: dict[str, MatrixUser], synapse: Synapse, encrypted: bool) -> RoomID:
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        initial_state = []
        if encrypted:
            initial_state.append(
                {
                    "type": str(EventType.ROOM_ENCRYPTION),
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        room = await alice.create_room(
            name="Element Call test",
            invitees=[BOT, UserID(users["bob"].user_id)],
            initial_state=initial_state,
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(alice, room, BOT, Membership.JOIN)
    async with matrix_client(users["bob"], synapse.base_url) as bob:
        await bob.join_room_by_id(room)
    return room


async def open_element_call(
    browser: Browser, ec_url: str, user: MatrixUser, room: RoomID, console: list[str]
) -> Page:
    """Element Call logged in as ``user`` (its login store, as after a login), at the room's
    lobby; then join the call. What the app logs goes to ``console``."""
    auth = {
        "user_id": user.user_id,
        "device_id": user.device_id,
        "access_token": user.access_token,
        "passwordlessUser": False,
    }
    context = await browser.new_context()
    await context.add_init_script(
        f"localStorage.setItem('matrix-auth-store', {json.dumps(json.dumps(auth))});"
    )
    await context.add_init_script(COLLECT_CONNECTIONS)
    page = await context.new_page()
    page.on("console", lambda message: console.append(message.text))
    await page.goto(f"{ec_url}/room/#/?roomId={room}")
    await page.get_by_role("button", name=re.compile("join", re.IGNORECASE)).first.click()
    return page


async def received(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(RECEIVED)
    return result


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


async def receiving(
    pages: list[Page], since: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]] | None:
    """Every page decodes video and audible audio (beyond ``since``, if given)."""
    states = [await received(page) for page in pages]
    before = since or [{"framesDecoded": 0, "audioBytes": 0, "audioEnergy": 0.0}] * len(pages)
    enough = all(
        now["framesDecoded"] > then["framesDecoded"] + 30
        and now["audioBytes"] > then["audioBytes"] + 5000
        and now["audioEnergy"] > then["audioEnergy"] + 0.01
        for now, then in zip(states, before, strict=True)
    )
    return states if enough else None


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
