"""Fixtures for SFU tests: a started SFU on loopback (client peers: see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sfu_peers import Room, room_on, started_sfu
import pytest

from sfu import SFU


@pytest.fixture(scope="session")
async def sfu_server() -> AsyncIterator[SFU]:
    async with started_sfu() as server:
        yield server


@pytest.fixture
async def room(sfu_server: SFU) -> AsyncIterator[Room]:
    async with room_on(sfu_server) as room:
        yield room
