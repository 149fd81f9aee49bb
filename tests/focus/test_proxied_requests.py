"""The bodies of the routes the homeserver forwards, and which SFU a client's ``url`` names."""

from __future__ import annotations

from typing import Any
import json

import pytest

from bridge.focus.errors import BadJSON
from bridge.focus.proxied import same_sfu
from bridge.focus.requests import (
    MemberRequest,
    parse_delegate_delayed_leave,
    parse_federation_get_token,
    parse_proxied_get_token,
)

MEMBER = {"id": "m1", "claimed_user_id": "@a:hs", "claimed_device_id": "DEV"}
DELEGATION = {"room_id": "!r:hs", "slot_id": "m.call#ROOM", "member": MEMBER, "delay_id": "syd"}


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def test_a_forwarded_token_request() -> None:
    body = {"room_id": "!r:hs", "slot_id": "m.call#ROOM", "member": MEMBER, "url": "wss://x"}
    assert parse_proxied_get_token(raw(body)) == MemberRequest(
        room_id="!r:hs",
        slot_id="m.call#ROOM",
        device_id="DEV",
        member_id="m1",
        claimed_user_id="@a:hs",
        url="wss://x",
    )
    anonymous = {"id": "m1", "claimed_device_id": "DEV"}
    parsed = parse_proxied_get_token(raw({**body, "member": anonymous}))
    assert parsed.claimed_user_id is None


def test_a_federation_token_request_names_the_user() -> None:
    body = {
        "room_id": "!r:hs",
        "slot_id": "s",
        "user_id": "@b:other",
        "member": {"id": "m2", "claimed_device_id": "D2"},
    }
    parsed = parse_federation_get_token(raw(body))
    assert (parsed.user_id, parsed.device_id, parsed.member_id) == ("@b:other", "D2", "m2")
    with pytest.raises(BadJSON, match="user_id"):
        parse_federation_get_token(raw({k: v for k, v in body.items() if k != "user_id"}))


def test_a_delegation_with_and_without_its_delay() -> None:
    parsed = parse_delegate_delayed_leave(raw({**DELEGATION, "delay_timeout": 3_600_000}))
    assert (parsed.delay_id, parsed.delay_timeout_ms) == ("syd", 3_600_000)
    assert parse_delegate_delayed_leave(raw(DELEGATION)).delay_timeout_ms is None


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({k: v for k, v in DELEGATION.items() if k != "delay_id"}, "`delay_id` is missing"),
        ({**DELEGATION, "delay_id": "../../v3/logout"}, "not a delay ID"),
        ({**DELEGATION, "delay_id": ".."}, "not a delay ID"),
        ({**DELEGATION, "delay_timeout": 0}, "`delay_timeout`"),
        ({**DELEGATION, "delay_timeout": "3600000"}, "`delay_timeout`"),
        ({**DELEGATION, "delay_timeout": True}, "`delay_timeout`"),
        ({**DELEGATION, "delay_timeout": 10**15}, "`delay_timeout`"),
        ({**DELEGATION, "delay_cs_api_url": "https://x"}, "Unknown field `delay_cs_api_url`"),
        ({**DELEGATION, "openid_token": {}}, "Unknown field `openid_token`"),
        ({**DELEGATION, "member": {"id": "m1"}}, "`claimed_device_id` is missing"),
        ({**DELEGATION, "room_id": "#alias:hs"}, "Matrix room ID"),
        ([DELEGATION], "must be a JSON object"),
    ],
)
def test_bad_delegations_are_refused_with_the_reason(body: Any, says: str) -> None:
    with pytest.raises(BadJSON, match=says):
        parse_delegate_delayed_leave(raw(body))


def test_same_sfu_ignores_scheme_flavour_default_ports_and_trailing_slashes() -> None:
    ours = "wss://rtc.example.org/conf"
    assert same_sfu("wss://rtc.example.org/conf", ours)
    assert same_sfu("https://RTC.example.org:443/conf/", ours)
    assert not same_sfu("ws://rtc.example.org/conf", ours)
    assert not same_sfu("wss://rtc.example.org", ours)
    assert not same_sfu("wss://other.example.org/conf", ours)
    assert not same_sfu("ftp://rtc.example.org/conf", ours)
    assert not same_sfu("not a url", ours)
    assert same_sfu("http://127.0.0.1:8080", "ws://127.0.0.1:8080")
