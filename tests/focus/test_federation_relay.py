"""Relaying a token request through the homeserver's fed_proxy, against a stand-in homeserver
on loopback: the remote server's token, its refusals and our homeserver's, as they came."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator

from aiohttp import web
from yarl import URL
import aiohttp
import pytest

from bridge.focus.federation_relay import REMOTE_PATH, FederationRelay, Relayed
from demo.loopback_http import serve


class FedProxy:
    def __init__(self) -> None:
        self.answers: list[web.Response] = []
        self.seen: list[tuple[str | None, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.headers.get("Authorization"), await request.json()))
        return self.answers.pop(0)


@pytest.fixture
async def relay() -> AsyncIterator[tuple[FedProxy, FederationRelay]]:
    fake = FedProxy()
    app = web.Application()
    app.router.add_post(
        "/_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy", fake.handle
    )
    async with serve(app) as url, aiohttp.ClientSession() as session:
        yield fake, FederationRelay(session, URL(url), "the-as-token")


async def test_the_remote_token_comes_back(relay: tuple[FedProxy, FederationRelay]) -> None:
    fake, client = relay
    fake.answers = [web.json_response({"status": 200, "content": {"jwt": "remote.jwt"}})]
    body = {"url": "wss://sfu.remote", "user_id": "@a:hs", "room_id": "!r:hs"}
    assert await client.get_token("remote.example", body) == "remote.jwt"
    authorization, request = fake.seen[0]
    assert authorization == "Bearer the-as-token"
    assert request == {
        "destination": "remote.example",
        "method": "POST",
        "path": REMOTE_PATH,
        "body": body,
    }


@pytest.mark.parametrize(
    ("answer", "status", "errcode"),
    [
        # The remote server refuses (the user is not in the room there, say).
        (
            web.json_response(
                {"status": 403, "content": {"errcode": "M_FORBIDDEN", "error": "not joined"}}
            ),
            403,
            "M_FORBIDDEN",
        ),
        # Our homeserver refuses to relay.
        (
            web.json_response(
                {"errcode": "M_FEDPROXY_PATH_NOT_ALLOWED", "error": "no"}, status=403
            ),
            403,
            "M_FEDPROXY_PATH_NOT_ALLOWED",
        ),
        (web.json_response({"status": 200, "content": {"no": "jwt"}}), 502, "M_UNKNOWN"),
        (web.json_response({"status": 500, "content": None}), 500, "M_UNKNOWN"),
        (web.json_response(["not", "an", "object"]), 502, "M_UNKNOWN"),
        (web.Response(text="<html>", status=502), 502, "M_UNKNOWN"),
    ],
)
async def test_refusals_come_back_as_they_came(
    relay: tuple[FedProxy, FederationRelay], answer: web.Response, status: int, errcode: str
) -> None:
    fake, client = relay
    fake.answers = [answer]
    with pytest.raises(Relayed) as refused:
        await client.get_token("remote.example", {})
    assert (refused.value.status, refused.value.errcode) == (status, errcode)
