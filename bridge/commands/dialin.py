"""``!call dialin``: how to reach this room's conference from a 1:1-call client."""

from __future__ import annotations

from .handler import CommandError, CommandEvent, command_handler


@command_handler(
    name="dialin",
    help_text="Show how to join this room's call from a client that only has 1:1 calls",
)
async def dialin(evt: CommandEvent) -> None:
    if not evt.bridge.config["dialin.enabled"]:
        raise CommandError("Dial-in is switched off on this bridge.")
    ghost = await evt.bridge.dialin.ghost_for_room(evt.room_id)
    await evt.reply(
        f"To join this room's call from a client that only has 1:1 calls, start a direct chat "
        f"with `{ghost}` and call it (voice or video). You hear everyone in the call and see "
        "whoever is speaking. Only members of this room get through, and only while the room "
        "is not end-to-end encrypted."
    )
