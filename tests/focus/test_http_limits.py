"""The focus listener of the running bridge under abuse: many slow connections, a body sent
too slowly, token request floods from one client and forged tokens for one homeserver.

Clients come from different loopback addresses (127.0.0.0/8): the reverse proxy is
127.0.0.5, slow clients come from 127.0.0.2, everyone else from 127.0.0.1.
"""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
import asyncio
import json

from mautrix.client import ClientAPI
import aiohttp
import pytest

from demo.bridge_process import BridgeProcess, edit_config
from demo.synapse import MatrixUser, Synapse

from ..support.postgres import empty_database
from .test_token_service import room_with_bot, sfu_get

PROXY = "127.0.0.5"
PER_CLIENT = 4
PER_SERVER = 3
SLOW_SOURCE = "127.0.0.2"
LIMITS: dict[str, object] = {
    "focus.trusted_proxies": [PROXY],
    "focus.limits.token_requests_per_minute_per_client": PER_CLIENT,
    "focus.limits.token_requests_per_minute_per_server": PER_SERVER,
    "focus.limits.header_timeout": 2,
    "focus.limits.body_timeout": 2,
    "focus.limits.max_connections_per_ip": 50,
}
OPEN_FILES = 256
"""The soft limit the bridge is started with: fewer than the slow clients."""
SLOW_CLIENTS = 300
DRIP_BYTES = 10
"""Each slow client sends at most this many bytes, one a second."""
ANSWER_TIMEOUT_S = 10.0
UNREACHABLE_SERVER = "127.0.0.9:8448"
"""A server name costing a lookup that never leaves the machine (a private address)."""


@pytest.fixture(scope="module")
async def limited_bridge(
    bridge_home: BridgeProcess, synapse: Synapse, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BridgeProcess]:
    original = bridge_home.config_path.read_text()
    edit_config(bridge_home.config_path, LIMITS)
    try:
        async with empty_database("sqlite", tmp_path_factory.mktemp("db")) as url:
            bridge_home.use_database(url)
            bridge_home.start(open_files=OPEN_FILES)
            try:
                yield bridge_home
            finally:
                assert bridge_home.stop() == 0
    finally:
        bridge_home.config_path.write_text(original)


def client(source: str = "127.0.0.1") -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(source, 0), force_close=True),
        timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S),
    )


async def post(
    bridge: BridgeProcess,
    body: Any,
    *,
    source: str = "127.0.0.1",
    forwarded_for: str | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        client(source) as session,
        session.post(f"{bridge.focus_url}/sfu/get", data=data, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def open_slow(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.open_connection("127.0.0.1", port, local_addr=(SLOW_SOURCE, 0))
    except OSError:
        return None


async def drip(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> bool:
    """Send a request's first bytes one a second; whether the bridge closed the connection
    before they were all sent (or refused it outright)."""
    if connection is None:
        return True
    reader, writer = connection
    try:
        for byte in b"GET /healthz HTTP/1.1\r\n"[:DRIP_BYTES]:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1), timeout=1.0) == b"":
                    return True
            except TimeoutError:
                continue
        return False
    except OSError:
        return True
    finally:
        writer.close()


async def test_slow_clients_do_not_starve_the_focus(
    limited_bridge: BridgeProcess, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    openid = synapse.openid_token(users["alice"])
    connections = await asyncio.gather(
        *(open_slow(limited_bridge.focus_port) for _ in range(SLOW_CLIENTS))
    )
    drips = asyncio.gather(*(drip(connection) for connection in connections))
    try:
        async with (
            client() as session,
            session.get(f"{limited_bridge.focus_url}/healthz") as health,
        ):
            assert health.status == 200
        status, body, _ = await post(limited_bridge, sfu_get(room_id, openid, "SLOWDEV"))
        assert status == 200, body
    finally:
        closed = await drips
    # Over the per-address cap at once, the others after header_timeout.
    assert all(closed)


async def test_a_body_sent_too_slowly_gets_408(limited_bridge: BridgeProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", limited_bridge.focus_port)
    try:
        writer.write(b"POST /sfu/get HTTP/1.1\r\nHost: focus\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT_S)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")


async def test_a_flood_from_one_client_is_limited_and_others_still_get_tokens(
    limited_bridge: BridgeProcess, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    flooder = "198.51.100.1"
    for _ in range(PER_CLIENT):
        status, _, _ = await post(limited_bridge, b"[]", source=PROXY, forwarded_for=flooder)
        assert status == 400
    status, body, headers = await post(limited_bridge, b"[]", source=PROXY, forwarded_for=flooder)
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert body["retry_after_ms"] > 0
    assert int(headers["Retry-After"]) >= 1
    # Another client behind the same proxy gets its token.
    openid = synapse.openid_token(users["alice"])
    status, body, _ = await post(
        limited_bridge, sfu_get(room_id, openid, "DEV"), source=PROXY, forwarded_for="198.51.100.2"
    )
    assert status == 200, body
    # A client that is no proxy cannot pose as another by writing the header.
    status, _, _ = await post(limited_bridge, b"[]", source="127.0.0.3", forwarded_for=flooder)
    assert status == 400


async def test_forged_tokens_for_one_server_are_limited(
    limited_bridge: BridgeProcess, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    """Each forged token is new, so each costs a lookup at the server it names: past the
    per-server limit the bridge answers 429 without one. Other servers, and the homeserver
    the admin configured, are unaffected."""
    room_id = await room_with_bot(alice)

    async def forged(number: int, server: str) -> tuple[int, dict[str, Any]]:
        openid = {
            "access_token": f"forged-{number}",
            "token_type": "Bearer",
            "matrix_server_name": server,
            "expires_in": 3600,
        }
        status, body, _ = await post(
            limited_bridge,
            sfu_get(room_id, openid, "DEV"),
            source=PROXY,
            forwarded_for=f"203.0.113.{number}",
        )
        return status, body

    for number in range(PER_SERVER):
        assert (await forged(number, UNREACHABLE_SERVER))[0] == 401
    status, body = await forged(50, UNREACHABLE_SERVER)
    assert (status, body["errcode"]) == (429, "M_LIMIT_EXCEEDED")
    assert (await forged(51, "127.0.0.10:8448"))[0] == 401
    openid = synapse.openid_token(users["alice"])
    status, body, _ = await post(
        limited_bridge, sfu_get(room_id, openid, "DEV"), source=PROXY, forwarded_for="203.0.113.99"
    )
    assert status == 200, body
