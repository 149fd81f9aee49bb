"""The token service of the running bridge, against a real Synapse: OpenID verification,
authorisation from room state kept current by transactions, and the lk-jwt-service HTTP
contract Element Call relies on."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
from dataclasses import dataclass
import asyncio
import base64
import hashlib
import json

from mautrix.client import ClientAPI
from mautrix.types import EventType, Membership, PowerLevelStateEventContent, RoomID, UserID
from mautrix.util.async_db import Database
import aiohttp
import pytest

from bridge.focus.tokens import FocusTokens
from demo.bridge_process import BridgeProcess
from demo.matrix_client import wait_for_membership
from demo.synapse import SERVER_NAME, MatrixUser, Synapse
from demo.waiting import eventually

BOT = UserID(f"@callbot:{SERVER_NAME}")
CALL_MEMBER = "org.matrix.msc3401.call.member"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": (
        "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token"
    ),
}


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Focus:
    """The bridge's focus listener, as a browser's fetch() sees it."""

    bridge: BridgeProcess
    database_url: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, raw: bytes = b"") -> Answer:
        data = json.dumps(body).encode() if body is not None else raw
        async with self.session.request(
            method,
            self.bridge.focus_url + path,
            data=data,
            headers={"Content-Type": "application/json", "Origin": "https://call.example"},
        ) as response:
            is_json = response.content_type == "application/json"
            content = await response.json() if is_json else {}
            return Answer(response.status, content, dict(response.headers))

    async def verify(self, jwt: str) -> Any:
        """Check a token with the key the bridge keeps in its database."""
        db = Database.create(self.database_url)
        await db.start()
        try:
            secret = await db.fetchval("SELECT value FROM secret WHERE name='focus_token_key'")
        finally:
            await db.stop()
        return FocusTokens(secret.encode(), 3600).verify(jwt)


@pytest.fixture(scope="module")
async def focus(bridge_with_database: tuple[BridgeProcess, str]) -> AsyncIterator[Focus]:
    bridge, url = bridge_with_database
    async with aiohttp.ClientSession() as session:
        yield Focus(bridge, url, session)


async def room_with_bot(client: ClientAPI) -> RoomID:
    room_id = await client.create_room(invitees=[BOT])
    await wait_for_membership(client, room_id, BOT, Membership.JOIN)
    return room_id


def sfu_get(room_id: str, openid: dict[str, Any], device_id: str) -> dict[str, Any]:
    """The body Element Call sends in its default (compatibility) mode."""
    return {"room": room_id, "openid_token": openid, "device_id": device_id}


def payload(jwt: str) -> dict[str, Any]:
    """The JWT payload read as Element Call reads it: with plain atob (standard base64)."""
    part = jwt.split(".")[1]
    return json.loads(base64.b64decode(part + "=" * (-len(part) % 4), validate=True))


def alias(*values: str) -> str:
    """lk-jwt-service's hash of ASCII IDs (where Go's and Python's JSON agree)."""
    digest = hashlib.sha256(json.dumps(list(values), separators=(",", ":")).encode()).digest()
    return base64.b64encode(digest).decode().rstrip("=")


async def test_member_gets_a_token_bound_to_room_and_device(
    focus: Focus, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    openid = synapse.openid_token(users["alice"])
    body = sfu_get(room_id, openid, "ZMONLVYLDE")
    # Element Call fetches twice at once.
    first, second = await asyncio.gather(
        focus.call("POST", "/sfu/get", body), focus.call("POST", "/sfu/get", body)
    )
    assert first.status == second.status == 200, first.body
    assert first.body["url"] == f"ws://127.0.0.1:{focus.bridge.focus_port}"
    assert CORS.items() <= first.headers.items()
    claims = payload(first.body["jwt"])
    assert claims["sub"] == f"{users['alice'].user_id}:ZMONLVYLDE"
    assert claims["video"]["room"] == alias(room_id, "m.call#ROOM")
    assert claims["video"]["canPublish"] is claims["video"]["canSubscribe"] is True

    grant = await focus.verify(first.body["jwt"])
    assert (grant.room_id, grant.user_id, grant.device_id) == (
        room_id,
        users["alice"].user_id,
        "ZMONLVYLDE",
    )
    log = focus.bridge.log_text()
    assert openid["access_token"] not in log
    assert first.body["jwt"] not in log


async def test_get_token_uses_the_hashed_member_identity(
    focus: Focus, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    user_id = users["alice"].user_id
    body: dict[str, Any] = {
        "room_id": room_id,
        "slot_id": "m.call#ROOM",
        "openid_token": synapse.openid_token(users["alice"]),
        "member": {"id": "uuid-1", "claimed_user_id": user_id, "claimed_device_id": "DEV"},
    }
    answer = await focus.call("POST", "/get_token", body)
    assert answer.status == 200, answer.body
    claims = payload(answer.body["jwt"])
    assert claims["sub"] == alias(user_id, "DEV", "uuid-1")
    assert claims["video"]["room"] == alias(room_id, "m.call#ROOM")

    body["member"]["claimed_user_id"] = users["bob"].user_id
    impostor = await focus.call("POST", "/get_token", body)
    assert (impostor.status, impostor.body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_membership_bans_and_power_levels_follow_the_room(
    focus: Focus, alice: ClientAPI, bob: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    body = sfu_get(room_id, synapse.openid_token(users["bob"]), "BOBDEV")

    outsider = await focus.call("POST", "/sfu/get", body)
    assert (outsider.status, outsider.body["errcode"]) == (403, "M_FORBIDDEN")
    assert "join the room" in outsider.body["error"]

    await alice.invite_user(room_id, bob.mxid)
    await bob.join_room_by_id(room_id)

    async def token_video() -> dict[str, Any] | None:
        answer = await focus.call("POST", "/sfu/get", body)
        return payload(answer.body["jwt"])["video"] if answer.status == 200 else None

    # Synapse's default power levels need 50 for state events such as call memberships.
    assert (await eventually(token_video))["canPublish"] is False

    levels = await alice.get_state_event(room_id, EventType.ROOM_POWER_LEVELS)
    assert isinstance(levels, PowerLevelStateEventContent)
    levels.set_event_level(EventType.find(CALL_MEMBER, EventType.Class.STATE), 0)
    await alice.send_state_event(room_id, EventType.ROOM_POWER_LEVELS, levels)

    async def may_publish() -> bool:
        return (await token_video() or {}).get("canPublish") is True

    await eventually(may_publish)

    await alice.ban_user(room_id, bob.mxid, reason="test")

    async def refused() -> Answer | None:
        answer = await focus.call("POST", "/sfu/get", body)
        return answer if answer.status == 403 else None

    assert "banned" in (await eventually(refused)).body["error"]


async def test_forged_and_expired_openid_tokens_are_unauthorized(
    focus: Focus, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await room_with_bot(alice)
    forged = {**synapse.openid_token(users["alice"]), "access_token": "forgedtokenforgedtoken12"}
    expired = synapse.openid_token(users["alice"])
    synapse.expire_openid_token(expired["access_token"])
    for openid in (forged, expired):
        answer = await focus.call("POST", "/sfu/get", sfu_get(room_id, openid, "DEV"))
        assert (answer.status, answer.body["errcode"]) == (401, "M_UNAUTHORIZED")


async def test_a_token_for_one_room_does_not_open_another(
    focus: Focus, alice: ClientAPI, bob: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_a = await room_with_bot(alice)
    room_b = await room_with_bot(bob)
    openid = synapse.openid_token(users["alice"])
    refused = await focus.call("POST", "/sfu/get", sfu_get(room_b, openid, "DEV"))
    assert refused.status == 403

    answer = await focus.call("POST", "/sfu/get", sfu_get(room_a, openid, "DEV"))
    grant = await focus.verify(answer.body["jwt"])
    assert grant.room_id == room_a
    assert grant.room_alias == alias(room_a, "m.call#ROOM") != alias(room_b, "m.call#ROOM")


async def test_rooms_without_the_bot_are_refused_and_explained(
    focus: Focus, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    room_id = await alice.create_room()
    answer = await focus.call(
        "POST", "/sfu/get", sfu_get(room_id, synapse.openid_token(users["alice"]), "DEV")
    )
    assert (answer.status, answer.body["errcode"]) == (403, "M_FORBIDDEN")
    assert f"Invite {BOT}" in answer.body["error"]


async def test_http_contract_of_lk_jwt_service(focus: Focus) -> None:
    for path in ("/sfu/get", "/get_token"):
        preflight = await focus.call("OPTIONS", path)
        assert preflight.status == 200
        assert CORS.items() <= preflight.headers.items()
    health = await focus.call("GET", "/healthz")
    assert health.status == 200
    # Element Call's delegation probe: anything but 404 would make it stop managing its
    # delayed leave event; the 404 must be readable cross-origin.
    probe = await focus.call("POST", "/delegate_delayed_leave")
    assert probe.status == 404
    assert probe.headers["Access-Control-Allow-Origin"] == "*"
    assert (await focus.call("GET", "/sfu/get")).status == 405


OPENID = {
    "access_token": "t",
    "token_type": "Bearer",
    "matrix_server_name": SERVER_NAME,
    "expires_in": 3600,
}


@pytest.mark.parametrize(
    ("path", "raw", "body", "errcode", "says"),
    [
        ("/sfu/get", b"", None, "M_NOT_JSON", "not JSON"),
        ("/sfu/get", b'{"room": ', None, "M_NOT_JSON", "not JSON"),
        ("/sfu/get", b"\xff\xfe", None, "M_NOT_JSON", "not JSON"),
        ("/sfu/get", b'{"room": NaN}', None, "M_NOT_JSON", "not JSON"),
        ("/sfu/get", b"[" * 60_000, None, "M_BAD_JSON", "nested too deeply"),
        ("/get_token", b'{"a":' * 12_000, None, "M_BAD_JSON", "nested too deeply"),
        ("/sfu/get", b"", [1, 2], "M_BAD_JSON", "must be a JSON object"),
        ("/sfu/get", b"", {"room": "!r:x", "openid_token": OPENID}, "M_BAD_JSON", "device_id"),
        (
            "/sfu/get",
            b"",
            {"room": "!r:x", "openid_token": OPENID, "device_id": "D", "name": "x"},
            "M_BAD_JSON",
            "Unknown field `name`",
        ),
        (
            "/sfu/get",
            b"",
            {"room": "!r:x", "openid_token": {**OPENID, "extra": 1}, "device_id": "D"},
            "M_BAD_JSON",
            "Unknown field `extra` in `openid_token`",
        ),
        (
            "/sfu/get",
            b"",
            {"room": 5, "openid_token": OPENID, "device_id": "D"},
            "M_BAD_JSON",
            "must be a string",
        ),
        (
            "/sfu/get",
            b"",
            {"room": "#alias:x", "openid_token": OPENID, "device_id": "D"},
            "M_BAD_JSON",
            "room ID",
        ),
        (
            "/sfu/get",
            b"",
            {
                "room": "!r:x",
                "openid_token": {**OPENID, "matrix_server_name": "evil/path"},
                "device_id": "D",
            },
            "M_BAD_JSON",
            "matrix_server_name",
        ),
        (
            "/sfu/get",
            b"",
            {"room": "!r:x", "openid_token": OPENID, "device_id": "D", "delay_id": "syd_x"},
            "M_BAD_JSON",
            "delayed leave",
        ),
        (
            "/get_token",
            b"",
            {"room_id": "!r:x", "slot_id": "m.call#ROOM", "openid_token": OPENID},
            "M_BAD_JSON",
            "`member` must be a JSON object",
        ),
    ],
)
async def test_bad_requests_get_matrix_errors(
    focus: Focus, path: str, raw: bytes, body: Any, errcode: str, says: str
) -> None:
    answer = await focus.call("POST", path, body, raw)
    assert (answer.status, answer.body["errcode"]) == (400, errcode)
    assert says in answer.body["error"]
    assert answer.headers["Access-Control-Allow-Origin"] == "*"


async def test_oversized_bodies_are_refused(focus: Focus) -> None:
    answer = await focus.call("POST", "/sfu/get", raw=b"{" + b" " * 70_000 + b"}")
    assert (answer.status, answer.body["errcode"]) == (413, "M_TOO_LARGE")


async def test_rooms_joined_before_state_loading_are_loaded_on_first_use(
    focus: Focus, alice: ClientAPI, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    """A room the bot joined under an older version has only the state that came after."""
    room_id = await room_with_bot(alice)
    assert focus.bridge.stop() == 0
    db = Database.create(focus.database_url)
    await db.start()
    try:
        await db.execute(
            "UPDATE mx_room_state SET has_full_member_list=false WHERE room_id=$1", room_id
        )
        await db.execute(
            "DELETE FROM mx_user_profile WHERE room_id=$1 AND user_id<>$2", room_id, BOT
        )
    finally:
        await db.stop()
    focus.bridge.start()

    openid = synapse.openid_token(users["alice"])
    answer = await focus.call("POST", "/sfu/get", sfu_get(room_id, openid, "DEV"))
    assert answer.status == 200, answer.body
