"""The bridge against a real Synapse: registration, invites, commands, restarts."""

from __future__ import annotations

from typing import Any
import json
import re

from mautrix.client import ClientAPI
from mautrix.types import (
    Format,
    Membership,
    MessageEvent,
    MessageType,
    RoomID,
    UserID,
)
from ruamel.yaml import YAML
import aiohttp
import pytest

from demo.bridge_process import BridgeProcess
from demo.matrix_client import (
    matrix_client,
    membership_of,
    messages_from,
    replies_to,
    wait_for_membership,
    wait_for_message,
)
from demo.synapse import SERVER_NAME, MatrixUser, Synapse

BOT = UserID(f"@callbot:{SERVER_NAME}")


@pytest.fixture(scope="module")
def bridge(bridge_with_database: tuple[BridgeProcess, str]) -> BridgeProcess:
    """The bridge process, once on SQLite and once on PostgreSQL."""
    return bridge_with_database[0]


async def room_with_bot(client: ClientAPI) -> RoomID:
    room_id = await client.create_room(invitees=[BOT])
    await wait_for_membership(client, room_id, BOT, Membership.JOIN)
    return room_id


async def command(client: ClientAPI, room_id: RoomID, text: str) -> MessageEvent:
    """Send a command and return the bot's reply to it."""
    event_id = await client.send_text(room_id, text)
    return await wait_for_message(client, room_id, BOT, replies_to(event_id))


def test_registration_is_accepted_by_synapse(bridge_home: BridgeProcess, synapse: Synapse) -> None:
    registration = YAML().load(bridge_home.registration_path.read_text())
    assert registration["org.matrix.msc3202"] is True
    assert registration["receive_ephemeral"] is True
    assert all(ns["exclusive"] for ns in registration["namespaces"]["users"])
    whoami = synapse.request(
        "GET", "/_matrix/client/v3/account/whoami", token=registration["as_token"]
    )
    assert whoami["user_id"] == BOT


async def test_homeserver_reaches_the_bridge(bridge: BridgeProcess, synapse: Synapse) -> None:
    registration = YAML().load(bridge.registration_path.read_text())
    response = synapse.request(
        "POST",
        f"/_matrix/client/v1/appservice/{registration['id']}/ping",
        {},
        token=registration["as_token"],
    )
    assert "duration_ms" in response


async def test_invited_bot_joins_and_answers_help(bridge: BridgeProcess, alice: ClientAPI) -> None:
    room_id = await room_with_bot(alice)
    welcome = await wait_for_message(alice, room_id, BOT, lambda e: "help" in e.content.body)
    assert welcome.content.msgtype == MessageType.NOTICE

    reply = await command(alice, room_id, "!call help")
    assert reply.content.msgtype == MessageType.NOTICE
    assert reply.content.format == Format.HTML
    for name in ("help", "status", "version"):
        assert f"<code>!call {name}" in reply.content.formatted_body


async def test_unknown_commands_and_bad_arguments_get_helpful_replies(
    bridge: BridgeProcess, alice: ClientAPI
) -> None:
    room_id = await room_with_bot(alice)
    typo = await command(alice, room_id, "!call stauts")
    assert "Unknown command" in typo.content.body
    assert "!call status" in typo.content.body
    quoting = await command(alice, room_id, '!call help "unclosed')
    assert "Could not read the command" in quoting.content.body
    no_such = await command(alice, room_id, "!call help nonsense")
    assert "no command `nonsense`" in no_such.content.body
    version = await command(alice, room_id, "!call version")
    assert "matrix-conference-bridge" in version.content.body


async def test_user_without_permission_is_declined(
    bridge: BridgeProcess, users: dict[str, MatrixUser], synapse: Synapse
) -> None:
    async with matrix_client(users["mallory"], synapse.base_url) as mallory:
        room_id = await mallory.create_room(invitees=[BOT])
        await wait_for_membership(mallory, room_id, BOT, Membership.LEAVE)
        state = await mallory.get_state_event(room_id, "m.room.member", BOT)  # type: ignore[arg-type]
        assert "not available to you" in state.reason  # type: ignore[union-attr]


async def test_room_mapping_survives_restart_and_commands_run_once(
    bridge: BridgeProcess, alice: ClientAPI
) -> None:
    room_id = await room_with_bot(alice)
    first = await command(alice, room_id, "!call status")
    conference = re.search(r"Conference `([0-9a-f]+)`", first.content.body)
    assert conference, first.content.body
    assert "No call is running" in first.content.body

    assert bridge.stop() == 0
    bridge.start()

    second = await command(alice, room_id, "!call status")
    assert f"Conference `{conference.group(1)}`" in second.content.body
    replies = await messages_from(alice, room_id, BOT)
    first_command = first.content.relates_to.in_reply_to.event_id
    assert len([e for e in replies if replies_to(first_command)(e)]) == 1


async def test_redelivered_transaction_changes_nothing(
    bridge: BridgeProcess, alice: ClientAPI, synapse: Synapse
) -> None:
    """After a restart the in-memory transaction set is gone; events must still run once."""
    room_id = await room_with_bot(alice)
    reply = await command(alice, room_id, "!call version")
    command_id = reply.content.relates_to.in_reply_to.event_id
    raw_event = synapse.request(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/event/{command_id}", token=alice.api.token
    )
    hs_token = YAML().load(bridge.config_path.read_text())["appservice"]["hs_token"]
    async with aiohttp.ClientSession() as session:
        for txn_id in ("redelivery-1", "redelivery-1", "redelivery-2"):
            async with session.put(
                f"{bridge.url}/_matrix/app/v1/transactions/{txn_id}",
                json={"events": [raw_event]},
                headers={"Authorization": f"Bearer {hs_token}"},
            ) as response:
                assert response.status == 200
        async with session.put(
            f"{bridge.url}/_matrix/app/v1/transactions/forged",
            json={"events": [raw_event]},
            headers={"Authorization": "Bearer wrong"},
        ) as response:
            assert response.status == 401
    # Handlers run before the transaction is acknowledged, so any second reply exists by now.
    replies = [e for e in await messages_from(alice, room_id, BOT) if replies_to(command_id)(e)]
    assert len(replies) == 1
    assert await membership_of(alice, room_id, BOT) == Membership.JOIN


async def put_transaction(bridge: BridgeProcess, txn_id: str, body: bytes) -> tuple[int, Any]:
    hs_token = YAML().load(bridge.config_path.read_text())["appservice"]["hs_token"]
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            f"{bridge.url}/_matrix/app/v1/transactions/{txn_id}",
            data=body,
            headers={"Authorization": f"Bearer {hs_token}", "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, await response.json(content_type=None)


def new_log_lines(bridge: BridgeProcess, before: int) -> str:
    return bridge.log_path.read_text(errors="replace")[before:]


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"[]", "M_BAD_JSON"),
        (b'[{"events": []}]', "M_BAD_JSON"),
        (b"not json", "M_NOT_JSON"),
        (b"[" * 100_000, "M_BAD_JSON"),
        (b'{"events": 5}', "M_BAD_JSON"),
        (b'{"events": [5]}', "M_BAD_JSON"),
        (b'{"events": [], "ephemeral": {}}', "M_BAD_JSON"),
    ],
)
async def test_transactions_of_the_wrong_shape_get_400(
    bridge: BridgeProcess, alice: ClientAPI, body: bytes, errcode: str
) -> None:
    before = len(bridge.log_path.read_text(errors="replace"))
    status, answer = await put_transaction(bridge, f"bad-{hash(body)}", body)
    assert (status, answer["errcode"]) == (400, errcode)
    room_id = await room_with_bot(alice)
    assert "help" in (await command(alice, room_id, "!call help")).content.body
    assert "Traceback" not in new_log_lines(bridge, before)


INVITE = {
    "call_id": "c",
    "party_id": "p",
    "version": "1",
    "lifetime": 60000,
    "offer": {"type": "offer", "sdp": "v=0\r\n"},
}


async def test_events_with_fields_of_the_wrong_type_are_ignored(
    bridge: BridgeProcess, alice: ClientAPI
) -> None:
    """Any room member's homeserver can send these; none may raise out of a handler, and the
    events after them are handled."""
    room_id = await room_with_bot(alice)
    sender = await alice.whoami()

    def event(number: int, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": f"$wrong-types-{number}",
            "room_id": room_id,
            "sender": sender.user_id,
            "origin_server_ts": 1,
            "content": {},
            **fields,
        }

    events = [
        event(1, type=5),
        event(2, type="m.call.invite", sender=7),
        event(3, type="m.call.hangup", content={"call_id": 5, "party_id": [], "version": 1}),
        event(4, type="m.call.candidates", content={"call_id": "c", "candidates": "x"}),
        event(5, type="org.matrix.msc3401.call.member", state_key=9),
        event(6, type="m.room.message", content={"msgtype": 5, "body": 7}),
        event(7, type="m.room.member", state_key=sender.user_id, content={"membership": 3}),
        event(8, type="m.room.message", room_id=8, content={"msgtype": "m.text", "body": "!call"}),
        event(9, type="m.call.invite", origin_server_ts="1", content=INVITE),
    ]
    before = len(bridge.log_path.read_text(errors="replace"))
    status, _ = await put_transaction(
        bridge, "wrong-types", json.dumps({"events": events}).encode()
    )
    assert status == 200
    reply = await command(alice, room_id, "!call version")
    assert "matrix-conference-bridge" in reply.content.body
    logged = new_log_lines(bridge, before)
    for sign in ("Traceback", "Logging error", "Failed to handle", "Exception in"):
        assert sign not in logged
