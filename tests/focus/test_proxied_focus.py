"""The homeserver-proxied focus (MSC4512) through the real Synapse, which forwards the
``rtc/livekit`` routes to the bridge, and delegated delayed leave events (MSC4140) carried
out by the bridge: kept up while the participant is on the SFU, sent when it vanishes, never
twice, across a restart of the bridge.

The federation route is called directly here, with the headers Synapse adds after checking
the X-Matrix signature; tests/test_federation.py goes through two federating homeservers.
"""

from __future__ import annotations

from typing import Any
import asyncio
import base64
import json
import secrets
import urllib.parse

from mautrix.types import RoomID
from ruamel.yaml import YAML
import aiohttp

from bridge.focus.livekit_ids import identity_for
from demo.bridge_process import BridgeProcess, edit_config
from demo.livekit_client import LiveKitClient, focus_token, wait_until
from demo.synapse import SERVER_NAME, MatrixUser, Synapse

from ..support.calls import CALL_MEMBER

ROUTES = "/_matrix/client/unstable/io.element.msc4195/rtc/livekit"
FEDERATION_ROUTES = "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit"
DELAY = "org.matrix.msc4140.delay"


async def post(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(content_type=None)


async def through_synapse(
    synapse: Synapse, user: MatrixUser, route: str, body: Any
) -> tuple[int, dict[str, Any]]:
    """A client's request to the homeserver's rtc/livekit route, with its access token."""
    headers = {"Authorization": f"Bearer {user.access_token}"}
    return await post(f"{synapse.base_url}{ROUTES}/{route}", body, headers)


def hs_token(bridge: BridgeProcess) -> str:
    return str(YAML().load(bridge.registration_path.read_text())["hs_token"])


def member(user: MatrixUser, member_id: str) -> dict[str, str]:
    return {"id": member_id, "claimed_user_id": user.user_id, "claimed_device_id": user.device_id}


def jwt_claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def test_registration_claims_the_rtc_routes(bridge_home: BridgeProcess) -> None:
    registration = YAML().load(bridge_home.registration_path.read_text())
    # Synapse reads only the prefixed names.
    assert registration["io.element.msc4512.proxy_prefix"] == "rtc/livekit"
    assert registration["io.element.msc4512.proxy_url"] == bridge_home.url
    assert registration["io.element.msc4502.scopes"] == [
        "urn:matrix:client:io.element.msc4502:rooms:is_joined"
    ]


async def test_get_token_through_the_homeserver(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    alice = users["alice"]
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(alice, "m-a")}
    status, answer = await through_synapse(synapse, alice, "get_token", body)
    assert status == 200, answer
    assert answer["url"] == "ws" + running_bridge.focus_url.removeprefix("http")
    client = LiveKitClient(running_bridge.focus_url, answer["jwt"], "v0", (1, 1))
    try:
        join = await client.connect()
        assert join.participant.identity == identity_for(alice.user_id, alice.device_id, "m-a")
        assert join.participant.permission.can_publish
    finally:
        await client.close()

    # The transport the homeserver advertises names the same SFU.
    status, answer = await through_synapse(
        synapse, alice, "get_token", {**body, "url": running_bridge.focus_url}
    )
    assert status == 200, answer
    status, answer = await through_synapse(
        synapse, alice, "get_token", {**body, "url": "wss://elsewhere.example"}
    )
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")


async def test_a_token_for_another_homeservers_sfu_is_asked_for_over_federation(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    """Through Synapse's fed_proxy, signed as this server. The test Synapse federates with
    nobody, so its refusal must come back to the client as it is."""
    alice = users["alice"]
    body = {
        "room_id": room_id,
        "slot_id": "m.call#ROOM",
        "member": member(alice, "m-a"),
        "server_name": "remote.example",
        "url": "wss://sfu.remote.example",
    }
    status, answer = await through_synapse(synapse, alice, "get_token", body)
    assert (status, answer["errcode"]) == (
        403,
        "IO.ELEMENT.MSC4512.M_FEDPROXY_DESTINATION_DENIED",
    )
    assert "Asking remote.example for a token for @alice" in running_bridge.log_text()

    del body["url"]
    status, answer = await through_synapse(synapse, alice, "get_token", body)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    # Our own server name is no relay.
    body["server_name"] = SERVER_NAME
    status, answer = await through_synapse(synapse, alice, "get_token", body)
    assert status == 200, answer


async def test_the_homeserver_route_applies_the_room_checks(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    outsider = synapse.register_user(f"outsider{secrets.token_hex(4)}")
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(outsider, "m-o")}
    status, answer = await through_synapse(synapse, outsider, "get_token", body)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    assert "join the room" in answer["error"]

    # Not allowed to use the bridge at all (bridge.permissions).
    mallory = users["mallory"]
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(mallory, "m-m")}
    status, answer = await through_synapse(synapse, mallory, "get_token", body)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")

    # Claiming to be someone else.
    alice = users["alice"]
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(alice, "m-a")}
    status, answer = await through_synapse(synapse, users["bob"], "get_token", body)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")

    status, answer = await through_synapse(synapse, alice, "get_token", {"room_id": room_id})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


async def test_forwarded_identities_are_trusted_only_with_the_hs_token(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], room_id: RoomID
) -> None:
    alice = users["alice"]
    url = f"{running_bridge.url}{ROUTES}/get_token"
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(alice, "m-a")}
    claim = {"X-Matrix-User-Identifier": alice.user_id}

    status, answer = await post(url, body, claim)
    assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN")
    status, answer = await post(url, body, {**claim, "Authorization": "Bearer forged"})
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    # The appservice's other token is not the homeserver's.
    as_token = str(YAML().load(running_bridge.registration_path.read_text())["as_token"])
    status, answer = await post(url, body, {**claim, "Authorization": f"Bearer {as_token}"})
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")

    authorised = {"Authorization": f"Bearer {hs_token(running_bridge)}"}
    status, answer = await post(url, body, authorised)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")  # no caller named
    status, answer = await post(url, body, {**claim, **authorised})
    assert status == 200, answer
    padded = {**body, "member": {**body["member"], "id": "x" * 100_000}}
    status, answer = await post(url, padded, {**claim, **authorised})
    assert (status, answer["errcode"]) == (413, "M_TOO_LARGE")


async def test_federation_tokens_are_for_the_origins_users_and_subscribe_only(
    running_bridge: BridgeProcess, users: dict[str, MatrixUser], room_id: RoomID
) -> None:
    url = f"{running_bridge.url}{FEDERATION_ROUTES}/get_token"
    authorised = {"Authorization": f"Bearer {hs_token(running_bridge)}"}
    alice = users["alice"]
    body = {
        "user_id": alice.user_id,
        "room_id": room_id,
        "slot_id": "m.call#ROOM",
        "member": {"id": "m-f", "claimed_device_id": "REMOTEDEV"},
    }

    # A server vouching for a user of another server.
    headers = {**authorised, "X-Matrix-Origin": "other.example"}
    status, answer = await post(url, body, headers)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    # A user of the origin who is not in the room.
    stranger = {**body, "user_id": "@eve:other.example"}
    status, answer = await post(url, stranger, headers)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    # Without the homeserver's token the origin header means nothing.
    status, answer = await post(url, body, {"X-Matrix-Origin": SERVER_NAME})
    assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN")

    # A member, vouched for by their own server: a token that may watch, not publish.
    status, answer = await post(url, body, {**authorised, "X-Matrix-Origin": SERVER_NAME})
    assert status == 200, answer
    assert set(answer) == {"jwt"}
    video = jwt_claims(answer["jwt"])["video"]
    assert video["canPublish"] is False
    assert video["canSubscribe"] is True


# ---------------------------------------------------------------- delegated delayed leave


async def test_element_calls_probe_finds_delegation_at_the_homeserver(
    running_bridge: BridgeProcess, synapse: Synapse
) -> None:
    """Element Call probes without credentials and takes anything but 404 as support; the
    focus listener's own path stays 404 (no delegation there)."""
    status, _ = await post(f"{synapse.base_url}{ROUTES}/delegate_delayed_leave", {})
    assert status == 401
    status, _ = await post(f"{running_bridge.focus_url}/delegate_delayed_leave", {})
    assert status == 404


class Membership:
    """A user's call membership with its delayed leave, as Element Call keeps it."""

    def __init__(self, synapse: Synapse, user: MatrixUser, room_id: RoomID) -> None:
        self.synapse = synapse
        self.user = user
        self.room_id = room_id
        self.state_key = f"_{user.user_id}_{user.device_id}"
        self.path = (
            f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/state/{CALL_MEMBER}/"
            f"{urllib.parse.quote(self.state_key)}"
        )
        self.delay_id = ""

    def join(self, delay_ms: int) -> None:
        content = {
            "application": "m.call",
            "call_id": "",
            "scope": "m.room",
            "device_id": self.user.device_id,
            "focus_active": {"type": "livekit", "focus_selection": "oldest_membership"},
            "foci_preferred": [],
        }
        self.synapse.request("PUT", self.path, content, token=self.user.access_token)
        leave = self.synapse.request(
            "PUT", f"{self.path}?{DELAY}={delay_ms}", {}, token=self.user.access_token
        )
        self.delay_id = leave["delay_id"]

    def content(self) -> dict[str, Any]:
        return self.synapse.request("GET", self.path, token=self.user.access_token)

    def has_left(self) -> bool:
        return self.content() == {}

    def send_leave_itself(self) -> None:
        """What a client does when it hangs up: send its own delayed leave now."""
        self.synapse.request(
            "POST",
            f"/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{self.delay_id}/send",
            {},
            token=self.user.access_token,
        )

    def leave_events(self) -> int:
        """How many leave events (empty content) the room's timeline holds for this member."""
        query = urllib.parse.urlencode(
            {"dir": "b", "limit": 100, "filter": json.dumps({"types": [CALL_MEMBER]})}
        )
        messages = self.synapse.request(
            "GET",
            f"/_matrix/client/v3/rooms/{urllib.parse.quote(self.room_id)}/messages?{query}",
            token=self.user.access_token,
        )
        return sum(
            1
            for event in messages["chunk"]
            if event.get("state_key") == self.state_key and event["content"] == {}
        )

    async def delegate(self, member_id: str, delay_ms: int | None) -> tuple[int, dict]:
        body: dict[str, Any] = {
            "room_id": self.room_id,
            "slot_id": "m.call#ROOM",
            "member": member(self.user, member_id),
            "delay_id": self.delay_id,
        }
        if delay_ms is not None:
            body["delay_timeout"] = delay_ms
        return await through_synapse(self.synapse, self.user, "delegate_delayed_leave", body)


async def connect_legacy(
    bridge: BridgeProcess, synapse: Synapse, user: MatrixUser, room_id: RoomID
) -> LiveKitClient:
    """Connected with an /sfu/get token: the identity is mxid:device, not the hashed one the
    delegation names."""
    client = LiveKitClient(
        bridge.focus_url, await focus_token(bridge, synapse, user, room_id), "v0", (1, 1)
    )
    await client.connect()
    return client


async def connect_proxied(
    bridge: BridgeProcess, synapse: Synapse, user: MatrixUser, room_id: RoomID, member_id: str
) -> LiveKitClient:
    """Connected with a token through the homeserver: the hashed identity."""
    body = {"room_id": room_id, "slot_id": "m.call#ROOM", "member": member(user, member_id)}
    status, answer = await through_synapse(synapse, user, "get_token", body)
    assert status == 200, answer
    client = LiveKitClient(bridge.focus_url, answer["jwt"], "v0", (1, 1))
    await client.connect()
    return client


async def hang_up(membership: Membership, client: LiveKitClient) -> None:
    """As Element Call hangs up: its own leave first, then off the SFU."""
    membership.send_leave_itself()
    await client.close()


async def test_delegated_leave_is_kept_up_while_connected_and_sent_once_on_hang_up(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    alice = Membership(synapse, users["alice"], room_id)
    alice.join(delay_ms=3000)
    client = await connect_legacy(running_bridge, synapse, users["alice"], room_id)
    status, answer = await alice.delegate("m-alice", delay_ms=3000)
    assert (status, answer) == (200, {})

    # Three times the delay: without the bridge's restarts the homeserver would have sent it.
    for _ in range(18):
        assert not alice.has_left()
        await asyncio.sleep(0.5)
    assert not alice.has_left()

    await hang_up(alice, client)
    await wait_until(lambda: "delegated leave event of @alice" in running_bridge.log_text())
    assert alice.has_left()
    assert alice.leave_events() == 1


async def test_the_leave_of_a_participant_who_vanishes_is_sent_at_once(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    bob = Membership(synapse, users["bob"], room_id)
    bob.join(delay_ms=600_000)
    client = await connect_proxied(running_bridge, synapse, users["bob"], room_id, "m-bob")
    status, answer = await bob.delegate("m-bob", delay_ms=600_000)
    assert (status, answer) == (200, {})
    assert not bob.has_left()

    # The connection drops without a goodbye; the homeserver would wait ten minutes.
    await client.close(send_leave=False)
    await wait_until(bob.has_left, timeout=20)
    assert bob.leave_events() == 1


async def test_delegations_survive_a_restart_of_the_bridge(
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    bob = Membership(synapse, users["bob"], room_id)
    carol = Membership(synapse, users["carol"], room_id)
    clients = {}
    for name, membership in (("bob", bob), ("carol", carol)):
        membership.join(delay_ms=600_000)
        clients[name] = await connect_legacy(running_bridge, synapse, users[name], room_id)
        # No delay_timeout: the bridge restarts on its own safe period.
        status, answer = await membership.delegate(f"m-{name}", delay_ms=None)
        assert (status, answer) == (200, {})

    edit_config(running_bridge.config_path, {"focus.delegated_leave_grace": 10})
    assert running_bridge.stop() == 0
    for client in clients.values():
        await client.close(send_leave=False)
    assert not bob.has_left() and not carol.has_left()  # a shutdown is nobody's departure
    running_bridge.start()

    # Carol comes back (with a token from the homeserver this time); Bob does not.
    carol_again = await connect_proxied(
        running_bridge, synapse, users["carol"], room_id, "m-carol"
    )
    await wait_until(bob.has_left, timeout=30)
    assert bob.leave_events() == 1
    assert not carol.has_left()

    await hang_up(carol, carol_again)
    await wait_until(lambda: "delegated leave event of @carol" in running_bridge.log_text())
    assert carol.leave_events() == 1
