"""Bridge commands in rooms: ``!call help``, ``!call status``, ..."""

from __future__ import annotations

from .handler import CommandError, CommandEvent, command_handler, command_handlers
from .processor import CommandProcessor

# Importing the command modules registers their handlers.
from . import call, dialin, guests, meta, moderation  # noqa: F401  # isort: skip

__all__ = [
    "CommandError",
    "CommandEvent",
    "CommandProcessor",
    "command_handler",
    "command_handlers",
]
