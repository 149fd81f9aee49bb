"""Guest links through the real Synapse and the real Element Call in headless Chromium: a
moderator creates, lists and revokes links (a plain member may not); a guest opens a link,
enters a name and joins the call as a ghost of the bridge, seen and heard by a member and
seeing and hearing them (once more in an end-to-end encrypted room); the ghost leaves the
room, its token logged out, when the guest leaves (or is removed); a guest may publish only
if the room lets members take part in calls; in a room with the knock join rule the
guest waits until a moderator admits them; expired and revoked links are refused."""

from __future__ import annotations

from functools import partial
import json
import re
import secrets

from mautrix.client import ClientAPI
from mautrix.errors import MUnknownToken
from mautrix.types import (
    EventType,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    RoomID,
    UserID,
)
from mautrix.util.async_db import Database
from playwright.async_api import Browser, Page
import aiohttp
import pytest

from bridge.guests.element_call import AUTH_STORE_KEY
from demo.bridge_process import BridgeProcess
from demo.livekit_client import LiveKitClient, focus_token
from demo.matrix_client import matrix_client, wait_for_membership, wait_for_message
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .support.calls import BOT
from .support.commands import command
from .support.element_call import (
    call_room,
    join_call,
    open_element_call,
    receiving,
    watched_page,
)

LINK = re.compile(r"(http://\S+/guest/[A-Za-z0-9_-]{32})")
LINK_ID = re.compile(r"Guest link `([0-9a-f]+)`")
GHOST = re.compile(r"@_conference_guest_[0-9a-f]+:localhost")


async def new_link(client: ClientAPI, room_id: RoomID, hours: str = "") -> tuple[str, str]:
    """A moderator's ``!call guestlink``: the URL and the link's id."""
    reply = await command(client, room_id, f"!call guestlink {hours}".strip())
    url, link_id = LINK.search(reply), LINK_ID.search(reply)
    assert url and link_id, reply
    return url.group(1), link_id.group(1)


async def fetch(url: str, body: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        if body is None:
            async with session.get(url) as response:
                return response.status, await response.text()
        async with session.post(url, json=body) as response:
            return response.status, await response.text()


async def test_moderators_create_list_and_revoke_guest_links(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse, room_id: RoomID
) -> None:
    async with matrix_client(users["bob"], synapse.base_url) as bob:
        assert "is for this room's moderators" in await command(bob, room_id, "!call guestlink")
        help_text = await command(bob, room_id, "!call help")
        assert "!call guestlink" not in help_text and "!call revoke" not in help_text
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        help_text = await command(alice, room_id, "!call help")
        for name in ("guestlink [hours]", "guestlinks", "revoke <link id>"):
            assert f"!call {name}" in help_text
        assert "at most 168 h" in await command(alice, room_id, "!call guestlink 200")
        url, link_id = await new_link(alice, room_id, "2")
        assert url.startswith(f"{running_bridge.focus_url}/guest/")
        other_url, other_id = await new_link(alice, room_id)
        listed = await command(alice, room_id, "!call guestlinks")
        assert f"`{link_id}` by {users['alice'].user_id}" in listed
        assert f"`{other_id}`" in listed and "used 0 times" in listed

        status, page = await fetch(url)
        assert status == 200 and "Your name" in page

        assert f"Revoked guest link `{link_id}`" in await command(
            alice, room_id, f"!call revoke {link_id}"
        )
        assert "no live guest link" in await command(alice, room_id, f"!call revoke {link_id}")
        listed = await command(alice, room_id, "!call guestlinks")
        assert f"`{link_id}`" not in listed and f"`{other_id}`" in listed
        status, page = await fetch(url)
        assert status == 410 and "was revoked" in page
        status, answer = await fetch(f"{url}/join", {"name": "Mallory"})
        assert status == 410 and "was revoked" in answer

        # The other link's time runs out (its expiry moved to the past in the database).
        database = Database.create(running_bridge.database_url)
        await database.start()
        try:
            await database.execute("UPDATE guest_link SET expires_at=1 WHERE link_id=$1", other_id)
            recorded = await database.fetch(
                "SELECT action, target, detail FROM moderation_action WHERE room_id=$1 "
                "ORDER BY created_at",
                room_id,
            )
        finally:
            await database.stop()
        # In the call history, without the links' secrets.
        assert [(row["action"], row["target"]) for row in recorded] == [
            ("guestlink", link_id),
            ("guestlink", other_id),
            ("revoke", link_id),
        ]
        assert not any(url.rsplit("/", 1)[1] in row["detail"] for row in recorded)
        status, page = await fetch(other_url)
        assert status == 410 and "has expired" in page
        status, answer = await fetch(f"{other_url}/join", {"name": "Mallory"})
        assert status == 410 and "has expired" in answer
        assert "no guest links" in await command(alice, room_id, "!call guestlinks")

        status, page = await fetch(f"{running_bridge.focus_url}/guest/{'x' * 32}")
        assert status == 404 and "does not exist" in page


async def guest_by_http(url: str, name: str) -> MatrixUser:
    """What the link's page does for a guest, without a browser: join, then take the ghost's
    session."""
    status, answer = await fetch(f"{url}/join", {"name": name})
    assert status == 200, answer
    base = url.rsplit("/", 1)[0]
    status, answer = await fetch(f"{base}/session", {"session": json.loads(answer)["session"]})
    assert status == 200, answer
    session = json.loads(answer)
    assert session["state"] == "ready", session
    return MatrixUser(session["user_id"], session["access_token"], session["device_id"])


async def logged_out(user: MatrixUser, synapse: Synapse) -> None:
    """Wait until the homeserver no longer knows ``user``'s access token."""
    async with matrix_client(user, synapse.base_url) as client:

        async def unknown() -> bool:
            try:
                await client.whoami()
            except MUnknownToken:
                return True
            return False

        await eventually(unknown)


async def test_a_guest_gets_what_the_room_allows_and_goes_when_removed(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    """In a room where taking part in calls needs the moderator level (the default power
    levels), a guest may watch and listen but not publish; removed from the call, the
    ghost leaves the room and its token is logged out."""
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room_id = await alice.create_room(invitees=[BOT])
        await wait_for_membership(alice, room_id, BOT, Membership.JOIN)
        url, _ = await new_link(alice, room_id)
        ghost = await guest_by_http(url, "Gaston")
        client = LiveKitClient(
            running_bridge.focus_url, await focus_token(running_bridge, synapse, ghost, room_id)
        )
        try:
            join = await client.connect()
            assert join.participant.identity.startswith(ghost.user_id)
            assert not join.participant.permission.can_publish
            assert join.participant.permission.can_subscribe
            reply = await command(alice, room_id, f"!call remove {ghost.user_id} enough")
            assert f"Removed {ghost.user_id}" in reply
            await client.wait_closed()
        finally:
            await client.close()
        await wait_for_membership(alice, room_id, UserID(ghost.user_id), Membership.LEAVE)
    await logged_out(ghost, synapse)


async def enter_as_guest(browser: Browser, url: str, name: str, console: list[str]) -> Page:
    """Open a guest link in a browser of its own and join under ``name``."""
    page = await watched_page(browser, console)
    await page.goto(url)
    await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Join the call").click()
    return page


async def ghost_session(page: Page) -> MatrixUser:
    """The ghost's session the guest page handed to Element Call."""
    auth = json.loads(await page.evaluate(f"localStorage.getItem('{AUTH_STORE_KEY}')"))
    return MatrixUser(auth["user_id"], auth["access_token"], auth["device_id"])


def subscribed(console: list[str], sender: MatrixUser, encrypted: bool) -> bool:
    """Element Call says it subscribed to the sender's microphone and camera, encrypted as
    the room is."""
    identity = re.escape(f"{sender.user_id}:{sender.device_id}")
    return all(
        any(
            re.search(
                f"Subscribed: {track} TR_\\w+ of {identity} encrypted={encrypted}", line, re.I
            )
            for line in console
        )
        for track in ("audio microphone", "video camera")
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_guest_joins_the_call_through_a_link(
    browser: Browser, running_bridge: BridgeProcess, synapse: Synapse, encrypted: bool
) -> None:
    # A new user, so a new device (see test_element_call).
    alice = synapse.register_user(f"alice-{secrets.token_hex(4)}")
    room = await call_room({"alice": alice}, synapse, encrypted)
    async with matrix_client(alice, synapse.base_url) as client:
        url, _ = await new_link(client, room)
    consoles: dict[str, list[str]] = {"alice": [], "guest": []}
    guest = await enter_as_guest(browser, url, "Gustav", consoles["guest"])
    await guest.wait_for_url(re.compile(r"/guest/call/room/"))
    await join_call(guest)
    member = await open_element_call(
        browser, f"{running_bridge.focus_url}/guest/call", alice, room, consoles["alice"]
    )
    try:
        await eventually(partial(receiving, [member, guest]), timeout=90, interval=1)
        ghost = await ghost_session(guest)
        assert GHOST.fullmatch(ghost.user_id), ghost.user_id
        assert subscribed(consoles["alice"], ghost, encrypted)
        assert subscribed(consoles["guest"], alice, encrypted)
        async with matrix_client(alice, synapse.base_url) as client:
            state = await client.get_state_event(room, EventType.ROOM_MEMBER, ghost.user_id)
            assert isinstance(state, MemberStateEventContent)
            assert state.membership == Membership.JOIN
            assert state.displayname == "Gustav (guest)"

            await guest.context.close()
            await wait_for_membership(client, room, UserID(ghost.user_id), Membership.LEAVE)
        await logged_out(ghost, synapse)
    finally:
        await member.context.close()
        await guest.context.close()


async def test_guest_waits_in_the_lobby_of_a_knock_room(
    browser: Browser, running_bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room_id = await alice.create_room(
            invitees=[BOT],
            initial_state=[
                {
                    "type": str(EventType.ROOM_JOIN_RULES),
                    "state_key": "",
                    "content": {"join_rule": "knock"},
                }
            ],
        )
        await wait_for_membership(alice, room_id, BOT, Membership.JOIN)
        url, link_id = await new_link(alice, room_id)
        guest = await enter_as_guest(browser, url, "Greta", [])
        try:
            await guest.get_by_text("Waiting for a moderator to let you in").wait_for()

            def asks(event: MessageEvent) -> bool:
                return "asks to join" in event.content.body

            notice = await wait_for_message(alice, room_id, BOT, asks)
            assert f"Greta (guest), through guest link {link_id}" in notice.content.body
            found = GHOST.search(notice.content.body)
            assert found, notice.content.body
            ghost = UserID(found.group(0))
            assert f"Invited {ghost}" in await command(alice, room_id, f"!call admit {ghost}")
            await guest.wait_for_url(re.compile(r"/guest/call/room/"))
            await wait_for_membership(alice, room_id, ghost, Membership.JOIN)
        finally:
            await guest.context.close()
        # Never in the call: the guest is cleared away by the prune, not on leaving the page.
        listed = await command(alice, room_id, "!call guestlinks")
        assert "used 1 time" in listed
