"""Follows MatrixRTC call memberships (``org.matrix.msc3401.call.member`` state) so media
connections end with the membership: when a client empties its membership (hang-up, or the
delayed leave event of a crashed client) or lets it expire without renewing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
import asyncio
import logging
import time

from mautrix.types import RoomID, StateEvent, UserID
from mautrix.util import background_task

if TYPE_CHECKING:
    from .livekit import LiveKitSignalling

log = logging.getLogger("mau.call_membership")

CALL_MEMBER = "org.matrix.msc3401.call.member"


def device_of(state_key: str, sender: str) -> str | None:
    """The device of a membership's state key: ``_@user:server_DEVICE_m.call`` (current),
    ``@user:server_DEVICE_m.call`` or ``@user:server_DEVICE``; None for other users' keys
    and the legacy per-user form."""
    key = state_key.removeprefix("_")
    if not key.startswith(sender + "_"):
        return None
    device = key[len(sender) + 1 :].removesuffix("_m.call")
    return device or None


def expires_at(content: dict[str, Any], origin_server_ts: int) -> float | None:
    """When the membership lapses (seconds since the epoch), if it says."""
    expires = content.get("expires")
    if not isinstance(expires, int) or expires <= 0:
        return None
    created = content.get("created_ts")
    start = created if isinstance(created, int) else origin_server_ts
    return (start + expires) / 1000


class CallMemberships:
    def __init__(self, signalling: LiveKitSignalling) -> None:
        self.signalling = signalling
        self._expiries: dict[tuple[RoomID, str], asyncio.TimerHandle] = {}

    def stop(self) -> None:
        for timer in self._expiries.values():
            timer.cancel()
        self._expiries.clear()

    async def handle(self, evt: StateEvent) -> None:
        user_id = UserID(evt.sender)
        device = device_of(evt.state_key, user_id)
        if device is None:
            return
        key = (evt.room_id, evt.state_key)
        if (timer := self._expiries.pop(key, None)) is not None:
            timer.cancel()
        content = evt.content.serialize()
        if not content:
            await self.signalling.disconnect_user(evt.room_id, user_id, "left the call", device)
            return
        deadline = expires_at(content, evt.timestamp)
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            self._expiries[key] = asyncio.get_running_loop().call_later(
                delay, self._expire, evt.room_id, user_id, device, key
            )

    def _expire(
        self, room_id: RoomID, user_id: UserID, device: str, key: tuple[RoomID, str]
    ) -> None:
        self._expiries.pop(key, None)
        log.info("Call membership of %s in %s expired", user_id, room_id)
        background_task.create(
            self.signalling.disconnect_user(room_id, user_id, "membership expired", device)
        )
