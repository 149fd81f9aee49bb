"""A plain Matrix client (mautrix ClientAPI over the client-server API) for test users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from mautrix.api import HTTPAPI
from mautrix.client import ClientAPI
from mautrix.errors import MNotFound
from mautrix.types import (
    EventID,
    EventType,
    Membership,
    MessageEvent,
    PaginationDirection,
    RoomID,
    UserID,
)

from .synapse import MatrixUser
from .waiting import eventually


@asynccontextmanager
async def matrix_client(user: MatrixUser, base_url: str) -> AsyncIterator[ClientAPI]:
    api = HTTPAPI(base_url=base_url, token=user.access_token)
    try:
        yield ClientAPI(UserID(user.user_id), api=api)
    finally:
        await api.session.close()


async def membership_of(client: ClientAPI, room_id: RoomID, user_id: UserID) -> Membership | None:
    try:
        event = await client.get_state_event(room_id, EventType.ROOM_MEMBER, user_id)
    except MNotFound:
        return None
    return event.membership  # type: ignore[union-attr]


async def wait_for_membership(
    client: ClientAPI,
    room_id: RoomID,
    user_id: UserID,
    membership: Membership,
    timeout: float = 30.0,
) -> None:
    async def probe() -> bool:
        return await membership_of(client, room_id, user_id) == membership

    await eventually(probe, timeout=timeout)


async def messages_from(
    client: ClientAPI, room_id: RoomID, sender: UserID, limit: int = 100
) -> list[MessageEvent]:
    """The room's recent messages from ``sender``, oldest first."""
    response = await client.get_messages(room_id, PaginationDirection.BACKWARD, limit=limit)
    # mautrix declares PaginatedMessages as a keyword NamedTuple, which mypy cannot read.
    events = response.events  # type: ignore[attr-defined]
    return [
        event
        for event in reversed(events)
        if isinstance(event, MessageEvent) and event.sender == sender
    ]


def replies_to(event_id: EventID) -> Callable[[MessageEvent], bool]:
    """Matches a message that is a reply to ``event_id``."""

    def matches(event: MessageEvent) -> bool:
        relates = event.content.relates_to
        return bool(relates and relates.in_reply_to and relates.in_reply_to.event_id == event_id)

    return matches


async def wait_for_message(
    client: ClientAPI,
    room_id: RoomID,
    sender: UserID,
    matches: Callable[[MessageEvent], bool],
    timeout: float = 30.0,
) -> MessageEvent:
    async def probe() -> MessageEvent | None:
        found = [event for event in await messages_from(client, room_id, sender) if matches(event)]
        return found[-1] if found else None

    return await eventually(probe, timeout=timeout)
