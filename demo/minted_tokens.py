"""Focus tokens minted with a bridge's own key instead of through ``/sfu/get`` with Matrix
OpenID: for many callers at once, in rooms without any Matrix set-up. A bridge configured with
``focus.rooms_without_bot: bridge_permissions`` admits them by its permissions; its access
check still runs on every connect."""

from __future__ import annotations

import contextlib
import sqlite3

from bridge.focus.livekit_ids import room_alias_for
from bridge.focus.service import SECRET_NAME
from bridge.focus.tokens import FocusGrant, FocusTokens, VideoGrants

from .bridge_process import BridgeProcess

SLOT = "m.call#ROOM"
DEVICE_ID = "MINTED"
LIFETIME_S = 3600


def bridge_secret(bridge: BridgeProcess) -> bytes:
    """The key a bridge on SQLite signs its focus tokens with (made when it first starts)."""
    path = bridge.database_url.removeprefix("sqlite:")
    assert path != bridge.database_url, f"not an SQLite database: {bridge.database_url}"
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT value FROM secret WHERE name = ?", (SECRET_NAME,)).fetchone()
    assert row is not None, "the bridge has not made its key yet (start it once)"
    return str(row[0]).encode()


class MintedTokens:
    """Tokens to join a room's call as any user, publishing and subscribing."""

    def __init__(self, secret: bytes) -> None:
        self._tokens = FocusTokens(secret, LIFETIME_S)

    def issue(self, user_id: str, room_id: str) -> str:
        grant = FocusGrant(
            identity=f"{user_id}:{DEVICE_ID}",
            user_id=user_id,
            device_id=DEVICE_ID,
            room_id=room_id,
            slot_id=SLOT,
            video=VideoGrants(room_alias_for(room_id, SLOT), True, True),
        )
        return self._tokens.issue(grant)
