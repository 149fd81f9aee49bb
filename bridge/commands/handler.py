"""The command registry: a decorator registers handlers, a processor dispatches messages.

The pattern follows mautrix's bridge commands without their coupling to puppeting bridges.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import logging

from mautrix.types import (
    EventID,
    Format,
    MessageType,
    RoomID,
    TextMessageEventContent,
    UserID,
)
from mautrix.util import markdown

from ..permissions import PermissionLevel

if TYPE_CHECKING:
    from ..bridge import Bridge

log = logging.getLogger("mau.commands")


class CommandError(Exception):
    """A problem with the command as typed; its message is shown to the user."""


@dataclass
class CommandEvent:
    """One invocation of a command in a room."""

    bridge: Bridge
    room_id: RoomID
    event_id: EventID
    sender: UserID
    sender_level: PermissionLevel
    command: str
    args: list[str]

    @property
    def prefix(self) -> str:
        return str(self.bridge.config["bridge.command_prefix"])

    async def may_moderate(self) -> bool:
        """Whether the sender may moderate this room's call (see ``RoomAccess``)."""
        return await self.bridge.focus.access.may_moderate(self.room_id, self.sender)

    async def reply(self, text: str) -> EventID:
        """Answer with an ``m.notice`` rendered from Markdown, as a reply to the command."""
        content = TextMessageEventContent(
            msgtype=MessageType.NOTICE,
            body=text,
            format=Format.HTML,
            formatted_body=markdown.render(text),
        )
        content.set_reply(self.event_id)
        return await self.bridge.az.intent.send_message(self.room_id, content)


CommandFunc = Callable[[CommandEvent], Awaitable[None]]


@dataclass(frozen=True)
class CommandHandler:
    name: str
    func: CommandFunc
    help_text: str
    help_args: str
    needs_level: PermissionLevel
    moderator: bool = False
    """Only for the room's moderators (see :meth:`CommandEvent.may_moderate`)."""

    async def allowed_for(self, evt: CommandEvent) -> bool:
        if not evt.sender_level.allows(self.needs_level):
            return False
        return not self.moderator or await evt.may_moderate()


command_handlers: dict[str, CommandHandler] = {}


def command_handler(
    *,
    help_text: str,
    help_args: str = "",
    needs_level: PermissionLevel = PermissionLevel.USER,
    moderator: bool = False,
    name: str | None = None,
) -> Callable[[CommandFunc], CommandFunc]:
    """Register ``func`` as the command named after it (or ``name``)."""

    def register(func: CommandFunc) -> CommandFunc:
        command = name or func.__name__.replace("_", "-")
        command_handlers[command] = CommandHandler(
            command, func, help_text, help_args, needs_level, moderator
        )
        return func

    return register
