"""Pure logic of command parsing and permission levels."""

from __future__ import annotations

import pytest

from bridge.commands import CommandError, command_handlers
from bridge.commands.processor import parse
from bridge.permissions import PermissionLevel, level_for


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("!call help", ["help"]),
        ("  !CALL   status  ", ["status"]),
        ("!call", []),
        ('!call help "two words"', ["help", "two words"]),
        ("!caller help", None),
        ("hello !call help", None),
        ("call help", None),
    ],
)
def test_parse(body: str, words: list[str] | None) -> None:
    assert parse(body, "!call") == words


def test_parse_reports_broken_quoting() -> None:
    with pytest.raises(CommandError, match="Could not read"):
        parse('!call help "open', "!call")


def test_commands_are_registered() -> None:
    assert {"help", "status", "version"} <= set(command_handlers)
    moderators = {
        *("mute", "unmute", "remove", "end", "lock", "unlock", "moderated", "admit"),
        *("guestlink", "guestlinks", "revoke"),
    }
    assert {name for name, handler in command_handlers.items() if handler.moderator} == moderators


def test_permission_levels() -> None:
    permissions = {
        "*": PermissionLevel.NONE,
        "example.org": PermissionLevel.USER,
        "@boss:example.org": PermissionLevel.ADMIN,
        "@troll:example.org": PermissionLevel.NONE,
    }
    assert level_for("@boss:example.org", permissions) == PermissionLevel.ADMIN
    assert level_for("@anyone:example.org", permissions) == PermissionLevel.USER
    assert level_for("@troll:example.org", permissions) == PermissionLevel.NONE
    assert level_for("@someone:elsewhere.net", permissions) == PermissionLevel.NONE
    assert level_for("@x:elsewhere.net", {}) == PermissionLevel.NONE
    assert PermissionLevel.ADMIN.allows(PermissionLevel.USER)
    assert not PermissionLevel.USER.allows(PermissionLevel.ADMIN)
