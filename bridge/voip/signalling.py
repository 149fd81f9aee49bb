"""Legacy Matrix VoIP (MSC2746, ``version: "1"``) event contents: validated in, built out.

Contents arrive from any room member, so everything is checked here and a malformed event
becomes :class:`MalformedCallEvent`, which the caller logs and ignores.
"""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass
import secrets

VERSION = "1"
INVITE = "m.call.invite"
CANDIDATES = "m.call.candidates"
ANSWER = "m.call.answer"
SELECT_ANSWER = "m.call.select_answer"
NEGOTIATE = "m.call.negotiate"
HANGUP = "m.call.hangup"
REJECT = "m.call.reject"
STREAM_METADATA_CHANGED = "m.call.sdp_stream_metadata_changed"
CALL_EVENT_TYPES = frozenset(
    {
        INVITE,
        CANDIDATES,
        ANSWER,
        SELECT_ANSWER,
        NEGOTIATE,
        HANGUP,
        REJECT,
        STREAM_METADATA_CHANGED,
    }
)
USERMEDIA = "m.usermedia"
MAX_SDP = 64 * 1024
MAX_CANDIDATES = 200


class MalformedCallEvent(ValueError):
    """A call event whose content cannot be used; the message says what is wrong."""


class HangupReason:
    """Reasons the ghost gives. The first four are MSC2746's; the others say precisely why
    a call was refused (clients show unknown reasons as a generic end of call, and the ghost
    also explains in the chat)."""

    ICE_FAILED = "ice_failed"
    USER_HANGUP = "user_hangup"
    USER_BUSY = "user_busy"
    UNKNOWN_ERROR = "unknown_error"
    NOT_A_MEMBER = "not_a_room_member"
    ENCRYPTED = "encrypted_conference"
    DISABLED = "dial_in_disabled"


@dataclass(frozen=True)
class StreamMetadata:
    """The caller's camera/microphone stream as it describes it (``sdp_stream_metadata``)."""

    audio_muted: bool
    video_muted: bool


@dataclass(frozen=True)
class Candidate:
    candidate: str
    """Empty: the end of the caller's candidates."""
    sdp_mid: str | None
    sdp_mline_index: int | None


@dataclass(frozen=True)
class CallEventContent:
    """The fields every call event of version 1 has, plus the parts of each type we use."""

    call_id: str
    party_id: str | None
    sdp: str | None = None
    sdp_type: str | None = None
    lifetime: int | None = None
    invitee: str | None = None
    candidates: tuple[Candidate, ...] = ()
    selected_party_id: str | None = None
    reason: str | None = None
    metadata: StreamMetadata | None = None


def new_party_id() -> str:
    return secrets.token_hex(8)


def _string(content: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = content.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise MalformedCallEvent(f"{key} must be a non-empty string")
    return value


def _description(value: Any, key: str) -> tuple[str, str]:
    if not isinstance(value, dict):
        raise MalformedCallEvent(f"{key} must be an object")
    sdp, sdp_type = value.get("sdp"), value.get("type")
    if not isinstance(sdp, str) or not sdp.startswith("v=") or len(sdp) > MAX_SDP:
        raise MalformedCallEvent(f"{key}.sdp must be an SDP string")
    if sdp_type not in ("offer", "answer"):
        raise MalformedCallEvent(f"{key}.type must be offer or answer")
    return sdp, sdp_type


def _candidates(value: Any) -> tuple[Candidate, ...]:
    if not isinstance(value, list) or len(value) > MAX_CANDIDATES:
        raise MalformedCallEvent("candidates must be a list")
    parsed = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("candidate"), str):
            raise MalformedCallEvent("each candidate needs a candidate string")
        mid, index = item.get("sdpMid"), item.get("sdpMLineIndex")
        if mid is not None and not isinstance(mid, str):
            raise MalformedCallEvent("sdpMid must be a string")
        if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
            raise MalformedCallEvent("sdpMLineIndex must be an integer")
        parsed.append(Candidate(item["candidate"], mid, index))
    return tuple(parsed)


def _metadata(value: Any) -> StreamMetadata | None:
    """The caller's usermedia stream; other purposes (screen sharing) are not forwarded."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MalformedCallEvent("sdp_stream_metadata must be an object")
    for stream in value.values():
        if isinstance(stream, dict) and stream.get("purpose") == USERMEDIA:
            return StreamMetadata(
                audio_muted=stream.get("audio_muted") is True,
                video_muted=stream.get("video_muted") is True,
            )
    return None


def parse(event_type: str, content: Any) -> CallEventContent:
    """Validate one call event's content.

    Raises:
        MalformedCallEvent: the content is unusable.
    """
    if not isinstance(content, dict):
        raise MalformedCallEvent("content must be an object")
    call_id = _string(content, "call_id")
    assert call_id is not None
    party_id = _string(content, "party_id", required=False)
    metadata = _metadata(content.get("sdp_stream_metadata"))
    fields: dict[str, Any] = {"call_id": call_id, "party_id": party_id, "metadata": metadata}
    if event_type == INVITE:
        fields["sdp"], fields["sdp_type"] = _description(content.get("offer"), "offer")
        lifetime = content.get("lifetime")
        if not isinstance(lifetime, int) or isinstance(lifetime, bool) or lifetime <= 0:
            raise MalformedCallEvent("lifetime must be a positive integer")
        fields["lifetime"] = lifetime
        fields["invitee"] = _string(content, "invitee", required=False)
    elif event_type == NEGOTIATE:
        sdp, sdp_type = _description(content.get("description"), "description")
        fields["sdp"], fields["sdp_type"] = sdp, sdp_type
    elif event_type == CANDIDATES:
        fields["candidates"] = _candidates(content.get("candidates"))
    elif event_type == SELECT_ANSWER:
        fields["selected_party_id"] = _string(content, "selected_party_id")
    elif event_type == HANGUP:
        reason = content.get("reason")
        fields["reason"] = reason if isinstance(reason, str) else None
    return CallEventContent(**fields)


def _base(call_id: str, party_id: str) -> dict[str, Any]:
    return {"call_id": call_id, "party_id": party_id, "version": VERSION}


def stream_metadata(stream_id: str, video: bool) -> dict[str, Any]:
    """Our one stream: the conference mix and the active speaker's video."""
    return {stream_id: {"purpose": USERMEDIA, "audio_muted": False, "video_muted": not video}}


def answer(call_id: str, party_id: str, sdp: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        **_base(call_id, party_id),
        "answer": {"type": "answer", "sdp": sdp},
        "sdp_stream_metadata": metadata,
        "capabilities": {"m.call.transferee": False, "m.call.dtmf": False},
    }


def negotiate_answer(
    call_id: str, party_id: str, sdp: str, lifetime: int, metadata: dict[str, Any]
) -> dict[str, Any]:
    return {
        **_base(call_id, party_id),
        "description": {"type": "answer", "sdp": sdp},
        "lifetime": lifetime,
        "sdp_stream_metadata": metadata,
    }


def hangup(call_id: str, party_id: str, reason: str) -> dict[str, Any]:
    return {**_base(call_id, party_id), "reason": reason}
