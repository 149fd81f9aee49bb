"""A complete picture of each room the bot is in: membership, bans, power levels.

The appservice's state store only learns state from events that arrive after the bot joins.
Authorisation needs the whole picture, so the room's full state is loaded from the
homeserver when the bot joins (and, for rooms joined earlier, on first use); transactions
keep it current from then on.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

from mautrix.appservice import AppService
from mautrix.client.state_store import StateStore
from mautrix.types import Member, MemberStateEventContent, RoomID, UserID
import asyncpg

log = logging.getLogger("mau.room_state")

LOAD_ATTEMPTS = 3


class RoomStates:
    def __init__(self, az: AppService) -> None:
        self.az = az
        self._loading: dict[RoomID, asyncio.Task[None]] = {}

    @property
    def store(self) -> StateStore:
        return self.az.state_store

    async def load(self, room_id: RoomID) -> None:
        """Replace what the store knows about the room with its full current state. Loads of
        one room at the same time share one load."""
        task = self._loading.get(room_id)
        if task is None:
            task = asyncio.create_task(self._load_retrying(room_id))
            self._loading[room_id] = task
            task.add_done_callback(lambda _: self._loading.pop(room_id, None))
        await asyncio.shield(task)

    async def ensure_loaded(self, room_id: RoomID) -> None:
        """Load the room's state unless it is complete."""
        if not await self.store.has_full_member_list(room_id):
            await self.load(room_id)

    async def _load_retrying(self, room_id: RoomID) -> None:
        """mautrix replaces a room's members with a delete and a bulk insert; a member event
        stored by a transaction in between makes the insert fail. Loading again then works."""
        for attempt in range(1, LOAD_ATTEMPTS + 1):
            try:
                await self._load(room_id)
                return
            except (asyncpg.UniqueViolationError, sqlite3.IntegrityError):
                if attempt == LOAD_ATTEMPTS:
                    raise
                log.debug("Loading the state of %s raced with an update; again", room_id)

    async def _load(self, room_id: RoomID) -> None:
        state = await self.az.intent.get_state(room_id)
        # get_state stores members and the other state concurrently; mautrix marks the member
        # list complete only if the room's row exists by then, which on a first load it may
        # not. Storing the members again once it does makes the mark reliable.
        members: dict[UserID, Member | MemberStateEventContent] = {
            UserID(evt.state_key): evt.content
            for evt in state
            if isinstance(evt.content, MemberStateEventContent)
        }
        await self.store.set_members(room_id, members)
        log.debug("Loaded the state of %s (%d events)", room_id, len(state))
