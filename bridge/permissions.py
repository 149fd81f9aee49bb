"""Who may use the bridge, from the config's ``bridge.permissions`` map.

This is the homeserver admin's coarse switch (which users and servers the bot serves at all).
Whether someone may join a particular room's call follows that room's Matrix membership.
"""

from __future__ import annotations

from enum import StrEnum


class PermissionLevel(StrEnum):
    NONE = "none"
    USER = "user"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: PermissionLevel) -> bool:
        return self.rank >= needed.rank


_RANKS = {PermissionLevel.NONE: 0, PermissionLevel.USER: 1, PermissionLevel.ADMIN: 2}


def level_for(user_id: str, permissions: dict[str, PermissionLevel]) -> PermissionLevel:
    """The level of a user: an exact user ID entry wins over its server's, which wins over "*"."""
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    for subject in (user_id, server, "*"):
        if subject in permissions:
            return permissions[subject]
    return PermissionLevel.NONE
