"""The bodies of ``POST /sfu/get`` and ``POST /get_token``, and of the MSC4195 routes the
homeserver forwards (MSC4512), read as strictly as lk-jwt-service reads them (unknown fields
are refused), with Matrix errors that say what is wrong."""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass
import json
import re

from mautrix.types import RoomID

from .errors import BadJSON, NotJSON
from .livekit_ids import LEGACY_SLOT_ID
from .openid import OpenIDToken
from .server_discovery import ServerName

MAX_ID_LENGTH = 255
MAX_TOKEN_LENGTH = 4096

_OPENID_FIELDS = frozenset({"access_token", "token_type", "matrix_server_name", "expires_in"})
_MEMBER_FIELDS = frozenset({"id", "claimed_user_id", "claimed_device_id"})
_DELAY_FIELDS = frozenset({"delay_id", "delay_timeout", "delay_cs_api_url"})
_LEGACY_FIELDS = frozenset({"room", "openid_token", "device_id"}) | _DELAY_FIELDS
_GET_TOKEN_FIELDS = frozenset({"room_id", "slot_id", "openid_token", "member"}) | _DELAY_FIELDS
_PROXIED_GET_TOKEN_FIELDS = frozenset({"room_id", "slot_id", "url", "server_name", "member"})
_FEDERATION_GET_TOKEN_FIELDS = frozenset({"room_id", "slot_id", "url", "user_id", "member"})
_DELEGATE_FIELDS = frozenset({"room_id", "slot_id", "url", "member", "delay_id", "delay_timeout"})
MAX_DELAY_TIMEOUT_MS = 7 * 24 * 3600 * 1000
_DELAY_ID = re.compile(r"[A-Za-z0-9._~-]+")
"""Homeservers issue opaque URL-safe IDs (Synapse: ``syd_`` and letters)."""


@dataclass(frozen=True)
class TokenRequest:
    """A request for a focus token, whichever endpoint it came through."""

    room_id: RoomID
    slot_id: str
    openid_token: OpenIDToken
    device_id: str
    member_id: str | None = None
    """The MatrixRTC member ID of ``/get_token``; None for ``/sfu/get``."""
    claimed_user_id: str | None = None


def parse_sfu_get(body: bytes) -> TokenRequest:
    """``{room, openid_token, device_id}``: state-event memberships, slot ``m.call#ROOM``."""
    fields = _object(_json(body), "the request body", _LEGACY_FIELDS)
    _refuse_delegation(fields)
    return TokenRequest(
        room_id=_room_id(fields, "room"),
        slot_id=LEGACY_SLOT_ID,
        openid_token=_openid_token(fields),
        device_id=_string(fields, "device_id", "the request body"),
    )


def parse_get_token(body: bytes) -> TokenRequest:
    """``{room_id, slot_id, openid_token, member: {id, claimed_user_id, claimed_device_id}}``."""
    fields = _object(_json(body), "the request body", _GET_TOKEN_FIELDS)
    _refuse_delegation(fields)
    member = _object(fields.get("member"), "`member`", _MEMBER_FIELDS)
    return TokenRequest(
        room_id=_room_id(fields, "room_id"),
        slot_id=_string(fields, "slot_id", "the request body"),
        openid_token=_openid_token(fields),
        device_id=_string(member, "claimed_device_id", "`member`"),
        member_id=_string(member, "id", "`member`"),
        claimed_user_id=_string(member, "claimed_user_id", "`member`"),
    )


@dataclass(frozen=True)
class MemberRequest:
    """A request the homeserver forwarded: it vouches for the caller, so no OpenID token."""

    room_id: RoomID
    slot_id: str
    device_id: str
    member_id: str
    claimed_user_id: str | None = None
    url: str | None = None
    """The SFU the client chose (its transport's ``url``)."""
    server_name: str | None = None
    """A homeserver whose SFU the client wants instead (the homeserver would relay)."""
    user_id: str | None = None
    """Over federation: the remote user asking."""
    delay_id: str | None = None
    delay_timeout_ms: int | None = None


def parse_proxied_get_token(body: bytes) -> MemberRequest:
    """``{room_id, slot_id, url?, server_name?, member}`` (client-server, MSC4195)."""
    fields = _object(_json(body), "the request body", _PROXIED_GET_TOKEN_FIELDS)
    return MemberRequest(
        **_member_fields(fields),
        url=_optional_string(fields, "url"),
        server_name=_optional_string(fields, "server_name"),
    )


def parse_federation_get_token(body: bytes) -> MemberRequest:
    """``{room_id, slot_id, url?, user_id, member}`` (server-server, MSC4195)."""
    fields = _object(_json(body), "the request body", _FEDERATION_GET_TOKEN_FIELDS)
    return MemberRequest(
        **_member_fields(fields),
        url=_optional_string(fields, "url"),
        user_id=_string(fields, "user_id", "the request body"),
    )


def parse_delegate_delayed_leave(body: bytes) -> MemberRequest:
    """``{room_id, slot_id, url?, member, delay_id, delay_timeout?}``; the timeout is in
    milliseconds (MSC4195's text leaves it out; lk-jwt-service takes it when given)."""
    fields = _object(_json(body), "the request body", _DELEGATE_FIELDS)
    timeout = fields.get("delay_timeout")
    if timeout is not None and (
        type(timeout) is not int or not 0 < timeout <= MAX_DELAY_TIMEOUT_MS
    ):
        raise BadJSON("`delay_timeout` must be a positive number of milliseconds (up to a week).")
    delay_id = _string(fields, "delay_id", "the request body")
    if not _DELAY_ID.fullmatch(delay_id) or set(delay_id) == {"."}:
        raise BadJSON("`delay_id` is not a delay ID.")
    return MemberRequest(
        **_member_fields(fields),
        url=_optional_string(fields, "url"),
        delay_id=delay_id,
        delay_timeout_ms=timeout,
    )


def _member_fields(fields: dict[str, Any]) -> dict[str, Any]:
    member = _object(fields.get("member"), "`member`", _MEMBER_FIELDS)
    return {
        "room_id": _room_id(fields, "room_id"),
        "slot_id": _string(fields, "slot_id", "the request body"),
        "device_id": _string(member, "claimed_device_id", "`member`"),
        "member_id": _string(member, "id", "`member`"),
        "claimed_user_id": _optional_string(member, "claimed_user_id", "`member`"),
    }


def _optional_string(
    fields: dict[str, Any], key: str, where: str = "the request body"
) -> str | None:
    return None if fields.get(key) in (None, "") else _string(fields, key, where)


def _json(body: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(body, parse_constant=no_constants)
    except ValueError as e:  # includes JSONDecodeError and UnicodeDecodeError
        raise NotJSON("The request body is not JSON.") from e
    except RecursionError as e:  # arrays or objects nested thousands deep
        raise BadJSON("The request body is nested too deeply.") from e


def _object(value: Any, where: str, known: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadJSON(f"{where[0].upper()}{where[1:]} must be a JSON object.")
    unknown = sorted(set(value) - known)
    if unknown:
        raise BadJSON(f"Unknown field `{unknown[0]}` in {where}.")
    return value


def _string(fields: dict[str, Any], key: str, where: str, max_length: int = MAX_ID_LENGTH) -> str:
    """A required, non-empty string; JSON null counts as missing, as Go's decoder has it."""
    value = fields.get(key)
    if value is None or value == "":
        raise BadJSON(f"`{key}` is missing from {where}.")
    if not isinstance(value, str):
        raise BadJSON(f"`{key}` in {where} must be a string.")
    if len(value) > max_length:
        raise BadJSON(f"`{key}` in {where} is longer than {max_length} characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate escape such as "\ud800"
        raise BadJSON(f"`{key}` in {where} is not valid Unicode.") from e
    return value


def _room_id(fields: dict[str, Any], key: str) -> RoomID:
    room_id = _string(fields, key, "the request body")
    if not room_id.startswith("!"):
        raise BadJSON(f"`{key}` must be a Matrix room ID (starting with '!').")
    return RoomID(room_id)


def _openid_token(fields: dict[str, Any]) -> OpenIDToken:
    token = _object(fields.get("openid_token"), "`openid_token`", _OPENID_FIELDS)
    where = "`openid_token`"
    access_token = _string(token, "access_token", where, MAX_TOKEN_LENGTH)
    server_name = _string(token, "matrix_server_name", where)
    try:
        ServerName.parse(server_name)
    except ValueError as e:
        raise BadJSON(f"`matrix_server_name` in {where}: {e}.") from e
    if not isinstance(token.get("token_type", ""), str | None):
        raise BadJSON(f"`token_type` in {where} must be a string.")
    expires_in = token.get("expires_in")
    if expires_in is not None and (type(expires_in) is not int or expires_in < 0):
        raise BadJSON(f"`expires_in` in {where} must be a whole number of seconds.")
    return OpenIDToken(access_token, server_name, expires_in)


def _refuse_delegation(fields: dict[str, Any]) -> None:
    """Delayed-leave delegation is not implemented: say so with M_BAD_JSON, on which Element
    Call retries without the delay fields and keeps managing its delayed leave itself."""
    if fields.get("delay_id") or fields.get("delay_timeout"):
        raise BadJSON("This focus does not take over delayed leave events (`delay_id`).")
