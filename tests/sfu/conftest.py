"""Fixtures for SFU tests: a started SFU on loopback (client peers: see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
import itertools

from sfu_peers import FAST_CONSENT, Room
import pytest

from sfu import SFU, MediaSettings

_ids = itertools.count()


@pytest.fixture(scope="session")
async def sfu_server() -> AsyncIterator[SFU]:
    server = SFU(
        MediaSettings(
            bind_addresses=("127.0.0.1",),
            **FAST_CONSENT,
        )
    )
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def room(sfu_server: SFU) -> AsyncIterator[Room]:
    conference_id = f"conf-{next(_ids)}"
    room = Room(lambda on_event: sfu_server.create_conference(conference_id, on_event))
    yield room
    await room.close()
    await sfu_server.close_conference(conference_id)
