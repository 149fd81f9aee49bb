"""Guest links as pure logic (secrets, lifetimes, states, names, join limits with simulated
time), their rows on SQLite and PostgreSQL, and the ``bridge.guests`` config."""

from __future__ import annotations

from pathlib import Path

from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database
import pytest

from bridge.db import Guest, GuestLink, Room
from bridge.guests.element_call import PACKAGE_DIST
from bridge.guests.links import (
    JoinLimits,
    LinkState,
    guest_display_name,
    hash_secret,
    lifetime_ms,
    new_secret,
    parse_secret,
    state_of,
)

from .support.configs import example_config_with

ROOM = RoomID("!guests:example.org")
MOD = "@mod:example.org"
HOUR_MS = 3600 * 1000


def a_link(link_id: str = "0a1b2c3d", expires_at: int = 10 * HOUR_MS) -> GuestLink:
    return GuestLink(link_id, ROOM, hash_secret(link_id), MOD, 0, expires_at)


def test_secrets_are_only_what_links_carry() -> None:
    secret = new_secret()
    assert parse_secret(secret) == secret
    assert new_secret() != secret
    for bad in (
        "",
        "short",
        secret + "x",
        secret[:-1] + "/",
        "../" + secret[3:],
        secret[:-1] + "é",
    ):
        assert parse_secret(bad) is None, bad
    assert hash_secret(secret) != secret and len(hash_secret(secret)) == 64


def test_lifetime_defaults_accepts_hours_and_keeps_to_the_maximum() -> None:
    assert lifetime_ms(None, 24, 168) == 24 * HOUR_MS
    assert lifetime_ms("2", 24, 168) == 2 * HOUR_MS
    assert lifetime_ms("0,5", 24, 168) == HOUR_MS // 2
    assert lifetime_ms("168", 24, 168) == 168 * HOUR_MS
    with pytest.raises(ValueError, match="at most 168 h"):
        lifetime_ms("169", 24, 168)
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match="above 0"):
            lifetime_ms(bad, 24, 168)
    with pytest.raises(ValueError, match="not a number"):
        lifetime_ms("soon", 24, 168)
    with pytest.raises(ValueError, match="at most 12 h"):
        lifetime_ms(None, 24, 12)


def test_a_link_lives_until_it_expires_or_is_revoked() -> None:
    link = a_link(expires_at=1000)
    assert state_of(link, 999) is LinkState.LIVE
    assert state_of(link, 1000) is LinkState.EXPIRED
    link.revoked_at = 500
    assert state_of(link, 600) is LinkState.REVOKED
    assert state_of(link, 2000) is LinkState.REVOKED


def test_guest_names_are_printable_short_and_marked() -> None:
    assert guest_display_name("  Ada   Lovelace ") == "Ada Lovelace (guest)"
    assert guest_display_name("Ada\u202e\nLovelace\x00") == "Ada Lovelace (guest)"
    assert guest_display_name("x" * 100) == "x" * 64 + " (guest)"
    for empty in ("", "   ", "\u200b\t"):
        with pytest.raises(ValueError, match="Enter the name"):
            guest_display_name(empty)


def test_joins_are_limited_per_client_and_per_link() -> None:
    limits = JoinLimits(per_link=3, per_client=2)
    assert limits.check("link", "10.0.0.1", 0.0) == 0
    assert limits.check("link", "10.0.0.1", 0.0) == 0
    assert limits.check("link", "10.0.0.1", 0.0) == pytest.approx(30.0)  # this client
    assert limits.check("link", "10.0.0.2", 0.0) == 0
    assert limits.check("link", "10.0.0.3", 0.0) == pytest.approx(20.0)  # this link
    assert limits.check("other", "10.0.0.3", 0.0) == 0
    # A refused join still counts for its client (10.0.0.3 has used both of its joins).
    assert limits.check("link", "10.0.0.3", 20.0) > 0
    assert limits.check("link", "10.0.0.4", 20.0) == 0
    unlimited = JoinLimits(per_link=0, per_client=0)
    assert all(unlimited.check("link", "10.0.0.1", 0.0) == 0 for _ in range(100))


@pytest.fixture
async def db(bridge_db: Database) -> Database:
    await Room.get_or_create(ROOM)
    return bridge_db


async def test_links_are_found_by_hash_listed_revoked_counted_and_pruned(db: Database) -> None:
    await a_link("aaaa0001", expires_at=10 * HOUR_MS).insert()
    await a_link("aaaa0002", expires_at=20 * HOUR_MS).insert()
    found = await GuestLink.by_secret_hash(hash_secret("aaaa0001"))
    assert found is not None and found.link_id == "aaaa0001" and found.uses == 0
    assert await GuestLink.by_secret_hash(hash_secret("nothing")) is None
    await found.count_use()
    await found.count_use()
    assert [link.link_id for link in await GuestLink.live_in(ROOM, HOUR_MS)] == [
        "aaaa0001",
        "aaaa0002",
    ]
    assert (await GuestLink.live_in(ROOM, HOUR_MS))[0].uses == 2
    assert [link.link_id for link in await GuestLink.live_in(ROOM, 15 * HOUR_MS)] == ["aaaa0002"]

    assert await GuestLink.revoke(ROOM, "aaaa0002", 2 * HOUR_MS)
    assert not await GuestLink.revoke(ROOM, "aaaa0002", 3 * HOUR_MS)
    assert not await GuestLink.revoke(ROOM, "aaaa0001", 11 * HOUR_MS)  # expired already
    assert not await GuestLink.revoke(RoomID("!other:example.org"), "aaaa0001", HOUR_MS)
    assert [link.link_id for link in await GuestLink.live_in(ROOM, HOUR_MS)] == ["aaaa0001"]
    revoked = await GuestLink.by_secret_hash(hash_secret("aaaa0002"))
    assert revoked is not None and state_of(revoked, 2 * HOUR_MS) is LinkState.REVOKED

    await GuestLink.delete_expired(10 * HOUR_MS)
    assert await GuestLink.by_secret_hash(hash_secret("aaaa0001")) is None
    assert await GuestLink.by_secret_hash(hash_secret("aaaa0002")) is not None


async def test_guests_keep_their_device_until_forgotten(db: Database) -> None:
    ghost = UserID("@_conference_guest_abc:example.org")
    await Guest(ghost, ROOM, "aaaa0001", 1000).insert()
    guest = await Guest.get(ghost)
    assert guest is not None and guest.device_id is None
    await guest.set_device("GUESTDEVICE")
    assert (await Guest.get(ghost)) == Guest(ghost, ROOM, "aaaa0001", 1000, "GUESTDEVICE")
    assert await Guest.created_before(1000) == []
    assert [g.user_id for g in await Guest.created_before(1001)] == [ghost]
    await guest.delete()
    assert await Guest.get(ghost) is None


def test_guest_settings_default_and_are_checked(tmp_path: Path) -> None:
    config = example_config_with(tmp_path, {})
    settings = config.guest_settings()
    assert settings.enabled and settings.default_hours == 24 and settings.max_hours == 168
    assert settings.element_call_dir == PACKAGE_DIST
    assert settings.homeserver_url == config["homeserver.address"]
    config = example_config_with(
        tmp_path,
        {
            "bridge.guests.element_call_dir": "/srv/element-call",
            "bridge.guests.homeserver_url": "https://matrix.example.org",
        },
    )
    settings = config.guest_settings()
    assert settings.element_call_dir == Path("/srv/element-call")
    assert settings.homeserver_url == "https://matrix.example.org"
    for key, value in (
        ("bridge.guests.default_hours", 200),
        ("bridge.guests.max_hours", 0),
        ("bridge.guests.joins_per_minute_per_link", -1),
        ("bridge.guests.enabled", "yes"),
        ("bridge.guests.homeserver_url", "matrix.example.org"),
    ):
        problems = example_config_with(tmp_path, {key: value}).problems(need_tokens=False)
        assert key in {problem.key for problem in problems}, key
