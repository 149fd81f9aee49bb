"""The real Element Call web app (npm ``@element-hq/element-call-embedded``, standalone mode)
against the test Synapse and the bridge: two users in headless Chromium start a call in a
room with the bot, and each receives the other's video and audio through the SFU (WebRTC
statistics of what arrives and is decoded); once more in an encrypted room, where Element
Call encrypts media end to end with per-participant keys sent over Matrix."""

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

COLLECT_PEER_CONNECTIONS = """
(() => {
  const Original = window.RTCPeerConnection;
  window.peerConnections = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Original(...args);
    window.peerConnections.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Original);
})();
"""
"""Keeps the app's peer connections where the test can ask them for statistics."""

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
    await context.add_init_script(COLLECT_PEER_CONNECTIONS)
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
