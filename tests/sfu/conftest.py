"""Fixtures for SFU tests: loopback-only networking and a started SFU."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
import itertools

from sfu_peers import Room
import aioice.ice
import pytest

from sfu import SFU, MediaSettings

_ids = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def loopback_only() -> Iterator[None]:
    """Client peers gather on 127.0.0.1 only (aioice skips loopback by default)."""
    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    yield
    aioice.ice.get_host_addresses = original


@pytest.fixture(scope="session")
async def sfu_server() -> AsyncIterator[SFU]:
    server = SFU(
        MediaSettings(
            bind_addresses=("127.0.0.1",),
            ice_consent_interval=1.0,
            ice_consent_failures=3,
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
