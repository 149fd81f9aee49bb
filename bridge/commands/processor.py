"""Turns a room message into a command invocation and answers every failure helpfully."""

from __future__ import annotations

from typing import TYPE_CHECKING
import difflib
import logging
import shlex

from mautrix.types import EventID, RoomID, UserID

from ..permissions import PermissionLevel
from .handler import CommandError, CommandEvent, command_handlers

if TYPE_CHECKING:
    from ..bridge import Bridge

log = logging.getLogger("mau.commands")


def parse(body: str, prefix: str) -> list[str] | None:
    """The words after the prefix, or None if the message is not a command.

    Raises:
        CommandError: the quoting is broken.
    """
    text = body.strip()
    if not text.lower().startswith(prefix.lower()):
        return None
    rest = text[len(prefix) :]
    if rest and not rest[0].isspace():
        return None  # "!caller" is not "!call"
    try:
        return shlex.split(rest)
    except ValueError as e:
        raise CommandError(f"Could not read the command: {e}.") from e


class CommandProcessor:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    @property
    def prefix(self) -> str:
        return str(self.bridge.config["bridge.command_prefix"])

    async def handle(
        self,
        room_id: RoomID,
        event_id: EventID,
        sender: UserID,
        sender_level: PermissionLevel,
        body: str,
    ) -> bool:
        """Run the command in ``body``; False if the message was not a command."""
        try:
            words = parse(body, self.prefix)
        except CommandError as e:
            words = []
            error: CommandError | None = e
        else:
            error = None
            if words is None:
                return False
        command = words[0].lower() if words else "help"
        evt = CommandEvent(
            self.bridge, room_id, event_id, sender, sender_level, command, words[1:]
        )
        if error is not None:
            await evt.reply(f"{error} Try `{self.prefix} help`.")
            return True
        await self._run(evt)
        return True

    async def _run(self, evt: CommandEvent) -> None:
        handler = command_handlers.get(evt.command)
        if handler is None:
            await evt.reply(self._unknown_command_text(evt.command))
            return
        if not evt.sender_level.allows(handler.needs_level):
            await evt.reply(
                f"`{self.prefix} {handler.name}` needs the {handler.needs_level.value} level "
                "in this bridge's permissions."
            )
            return
        if handler.moderator and not await evt.may_moderate():
            await evt.reply(
                f"`{self.prefix} {handler.name}` is for this room's moderators: members with the "
                "power level to kick (or the level the bridge's admin set)."
            )
            return
        try:
            await handler.func(evt)
        except CommandError as e:
            usage = f"`{self.prefix} {handler.name} {handler.help_args}`".replace(" `", "`")
            await evt.reply(f"{e}\n\nUsage: {usage}")
        except Exception:
            log.exception("Command %s failed in %s", handler.name, evt.room_id)
            await evt.reply("Sorry, that command failed on the bridge's side.")

    def _unknown_command_text(self, command: str) -> str:
        text = f"Unknown command `{command}`."
        close = difflib.get_close_matches(command, command_handlers, n=1)
        if close:
            text += f" Did you mean `{self.prefix} {close[0]}`?"
        return f"{text} Try `{self.prefix} help` for the list."
