"""Talking to the bridge's bot in a room, as a member would."""

from __future__ import annotations

from mautrix.client import ClientAPI
from mautrix.types import RoomID

from demo.matrix_client import replies_to, wait_for_message

from .calls import BOT


async def command(client: ClientAPI, room_id: RoomID, text: str) -> str:
    """Send a command; the bot's reply to it."""
    event_id = await client.send_text(room_id, text)
    reply = await wait_for_message(client, room_id, BOT, replies_to(event_id))
    return str(reply.content.body)
