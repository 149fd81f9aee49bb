"""A legacy 1:1-call client for dial-in tests: MSC2746 version 1 signalling over plain
client-server calls, media from :class:`~tests.support.voip_media.CallPeer`."""

from __future__ import annotations

from typing import Any
import re
import secrets

from mautrix.client import ClientAPI
from mautrix.types import EventType, Membership, PaginationDirection, RoomID, UserID

from demo.matrix_client import replies_to, wait_for_membership, wait_for_message
from demo.synapse import SERVER_NAME
from demo.waiting import eventually

from .voip_media import CallPeer

LIFETIME_MS = 90_000
BOT = UserID(f"@callbot:{SERVER_NAME}")
GHOST = re.compile(rf"@_conference_dialin_[0-9a-f]+:{re.escape(SERVER_NAME)}")


async def request_ghost(client: ClientAPI, room: RoomID) -> UserID:
    """The room's dial-in ghost, asked of the bot with ``!call dialin`` as members do."""
    command = await client.send_text(room, "!call dialin")
    reply = await wait_for_message(client, room, BOT, replies_to(command))
    match = GHOST.search(reply.content.body)
    assert match, reply.content.body
    return UserID(match.group(0))


async def direct_chat(client: ClientAPI, ghost: UserID) -> RoomID:
    """A direct chat with the ghost, once it has joined (it then takes calls there)."""
    chat = await client.create_room(invitees=[ghost], is_direct=True)
    await wait_for_membership(client, chat, ghost, Membership.JOIN)
    return chat


def call_event_type(name: str) -> EventType:
    return EventType.find(f"m.call.{name}", EventType.Class.MESSAGE)


async def call_events(
    client: ClientAPI, room_id: RoomID, sender: UserID, name: str
) -> list[dict[str, Any]]:
    """Contents of the room's recent ``m.call.<name>`` events from ``sender``, oldest first."""
    response = await client.get_messages(room_id, PaginationDirection.BACKWARD, limit=100)
    return [
        event.content.serialize()
        for event in reversed(response.events)
        if event.sender == sender and str(event.type) == f"m.call.{name}"
    ]


class LegacyCaller:
    """One call from ``client`` to ``ghost`` in their direct chat."""

    def __init__(self, client: ClientAPI, chat: RoomID, ghost: UserID, peer: CallPeer) -> None:
        self.client = client
        self.chat = chat
        self.ghost = ghost
        self.peer = peer
        self.call_id = secrets.token_hex(8)
        self.party_id = secrets.token_hex(4)

    def _base(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "party_id": self.party_id, "version": "1"}

    async def send(self, name: str, content: dict[str, Any]) -> None:
        await self.client.send_message_event(
            self.chat,
            call_event_type(name),
            {**self._base(), **content},  # type: ignore[arg-type]
        )

    async def from_ghost(self, name: str) -> list[dict[str, Any]]:
        events = await call_events(self.client, self.chat, self.ghost, name)
        return [content for content in events if content.get("call_id") == self.call_id]

    async def invite(self) -> None:
        sdp = await self.peer.offer()
        await self.send(
            "invite",
            {
                "lifetime": LIFETIME_MS,
                "invitee": self.ghost,
                "offer": {"type": "offer", "sdp": sdp},
                "sdp_stream_metadata": {"cam": {"purpose": "m.usermedia"}},
            },
        )

    async def place(self) -> dict[str, Any]:
        """Invite, take the answer, select it and end our (in-SDP) candidates."""
        await self.invite()

        async def answered() -> dict[str, Any] | None:
            answers = await self.from_ghost("answer")
            return answers[0] if answers else None

        answer = await eventually(answered)
        await self.peer.accept_answer(answer["answer"]["sdp"])
        await self.send("select_answer", {"selected_party_id": answer["party_id"]})
        await self.send("candidates", {"candidates": [{"candidate": "", "sdpMid": "0"}]})
        return answer

    async def hangup_reason(self) -> str:
        async def hung_up() -> str | None:
            hangups = await self.from_ghost("hangup")
            return str(hangups[0].get("reason")) if hangups else None

        return await eventually(hung_up)

    async def hang_up(self) -> None:
        await self.send("hangup", {"reason": "user_hangup"})
