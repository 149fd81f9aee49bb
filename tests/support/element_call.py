"""Driving the real Element Call in headless Chromium: rooms for calls, pages logged in (their
peer connections and WebSockets kept for the test), and what a page receives and decodes."""

from __future__ import annotations

from typing import Any
import json
import re

from mautrix.types import EventType, Membership, RoomID, UserID
from playwright.async_api import Browser, Page

from bridge.guests.element_call import AUTH_STORE_KEY
from demo.matrix_client import matrix_client, wait_for_membership
from demo.synapse import MatrixUser, Synapse

from .calls import BOT, CALL_MEMBER

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


async def call_room(users: dict[str, MatrixUser], synapse: Synapse, encrypted: bool) -> RoomID:
    """A room with the bot in which everyone may take part in calls: alice creates it (and
    may moderate), the other ``users`` join."""
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
            invitees=[
                BOT,
                *(UserID(user.user_id) for name, user in users.items() if name != "alice"),
            ],
            initial_state=initial_state,
            power_level_override={"events": {CALL_MEMBER: 0}},
        )
        await wait_for_membership(alice, room, BOT, Membership.JOIN)
    for name, user in users.items():
        if name != "alice":
            async with matrix_client(user, synapse.base_url) as member:
                await member.join_room_by_id(room)
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
    page = await watched_page(
        browser,
        console,
        f"localStorage.setItem('{AUTH_STORE_KEY}', {json.dumps(json.dumps(auth))});",
    )
    await page.goto(f"{ec_url}/room/#/?roomId={room}")
    await join_call(page)
    return page


async def watched_page(browser: Browser, console: list[str], *init_scripts: str) -> Page:
    """A page in a context of its own whose peer connections and WebSockets the test
    reaches (see COLLECT_CONNECTIONS) and whose console goes to ``console``."""
    context = await browser.new_context()
    for script in (*init_scripts, COLLECT_CONNECTIONS):
        await context.add_init_script(script)
    page = await context.new_page()
    page.on("console", lambda message: console.append(message.text))
    return page


async def join_call(page: Page) -> None:
    """Press Element Call's join button in its lobby."""
    await page.get_by_role("button", name=re.compile("join", re.IGNORECASE)).first.click()


async def received(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(RECEIVED)
    return result


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
