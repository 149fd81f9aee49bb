"""Which events reach the bridge's handlers: fields of the wrong JSON type stop them at the
entry, since mautrix keeps whatever type arrived."""

from __future__ import annotations

from typing import Any

from mautrix.types import Event
import pytest

from bridge.matrix import is_well_formed

BASE = {
    "type": "m.room.message",
    "event_id": "$e",
    "room_id": "!r:example.org",
    "sender": "@a:example.org",
    "origin_server_ts": 1,
    "content": {"msgtype": "m.text", "body": "hi"},
}


@pytest.mark.parametrize(
    "fields",
    [
        {"type": 5},
        {"sender": 7},
        {"room_id": ["!r:example.org"]},
        {"event_id": None, "origin_server_ts": "1"},
        {"type": "org.matrix.msc3401.call.member", "state_key": 9, "content": {}},
    ],
)
def test_events_with_mistyped_fields_are_not_well_formed(fields: dict[str, Any]) -> None:
    assert not is_well_formed(Event.deserialize({**BASE, **fields}))


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"content": {"msgtype": 5, "body": 7}},  # content is checked by each handler
        {
            "type": "m.room.member",
            "state_key": "@a:example.org",
            "content": {"membership": "join"},
        },
        {"type": "m.typing", "content": {"user_ids": []}},
    ],
)
def test_events_with_typed_fields_are_well_formed(fields: dict[str, Any]) -> None:
    assert is_well_formed(Event.deserialize({**BASE, **fields}))
