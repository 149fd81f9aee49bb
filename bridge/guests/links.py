"""Guest links as pure logic: their secrets, lifetimes, states, guests' names and the rate
limits of joining through them. Times are passed in (milliseconds for links, seconds for the
limits), so all of it is tested without clocks."""

from __future__ import annotations

from enum import StrEnum
import hashlib
import math
import re
import secrets
import unicodedata

from ..db import GuestLink
from ..focus.rate_limit import RateLimiter

SECRET_BYTES = 24
_SECRET = re.compile(r"^[A-Za-z0-9_-]{32}$")
"""``secrets.token_urlsafe(SECRET_BYTES)``: 192 bits, 32 characters."""
MAX_NAME = 64
GUEST_SUFFIX = " (guest)"


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_link_id() -> str:
    """The short name moderators type to revoke a link; not a secret."""
    return secrets.token_hex(4)


def hash_secret(secret: str) -> str:
    """What is stored: the secret has 192 random bits, so a fast hash is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_secret(text: str) -> str | None:
    """The secret in a link's path, or None if it cannot be one (nothing to look up)."""
    return text if _SECRET.match(text) else None


def lifetime_ms(argument: str | None, default_hours: float, max_hours: float) -> int:
    """How long a new link lives, from the hours a moderator typed (or the default).

    Raises:
        ValueError: not a number of hours above 0 and at most ``max_hours``; says so.
    """
    if argument is None:
        hours = default_hours
    else:
        try:
            hours = float(argument.replace(",", "."))
        except ValueError:
            raise ValueError(f"`{argument}` is not a number of hours.") from None
        if not math.isfinite(hours) or hours <= 0:
            raise ValueError("A link must live for some time: give hours above 0.")
    if hours > max_hours:
        raise ValueError(f"Guest links live at most {max_hours:g} h here.")
    return max(1, round(hours * 3600 * 1000))


class LinkState(StrEnum):
    LIVE = "live"
    EXPIRED = "expired"
    REVOKED = "revoked"


def state_of(link: GuestLink, now: int) -> LinkState:
    if link.revoked_at is not None:
        return LinkState.REVOKED
    return LinkState.LIVE if now < link.expires_at else LinkState.EXPIRED


def guest_display_name(typed: str) -> str:
    """The ghost's display name from what the guest typed, marked as a guest's.

    Raises:
        ValueError: nothing printable was typed.
    """
    printable = "".join(
        " " if unicodedata.category(char).startswith(("C", "Z")) else char for char in typed
    )
    name = " ".join(printable.split())[:MAX_NAME].strip()
    if not name:
        raise ValueError("Enter the name the others will see.")
    return f"{name}{GUEST_SUFFIX}"


class JoinLimits:
    """Joins a minute through one link and from one client address: each join registers a
    user on the homeserver, so neither a leaked link nor one client may make unbounded ones."""

    def __init__(self, per_link: int, per_client: int) -> None:
        self.per_link = RateLimiter(per_link)
        self.per_client = RateLimiter(per_client)

    def check(self, link_id: str, client: str, now: float) -> float:
        """Count one join: 0 if allowed, else the seconds to wait."""
        return self.per_client.check(client, now) or self.per_link.check(link_id, now)
