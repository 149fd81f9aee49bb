"""Focus tokens: LiveKit's claim shape, a payload Element Call's ``atob`` can read, and
verification that refuses anything the bridge did not issue or that is out of its time."""

from __future__ import annotations

from typing import Any
import base64
import json
import time

import jwt
import pytest

from bridge.focus.livekit_ids import room_alias_for
from bridge.focus.tokens import FocusGrant, FocusTokens, InvalidFocusToken, VideoGrants

SECRET = b"0123456789abcdef0123456789abcdef-test"
LIFETIME = 600


def grant(room_id: str = "!room:localhost", user_id: str = "@alice:localhost") -> FocusGrant:
    return FocusGrant(
        identity=f"{user_id}:DEVICE",
        user_id=user_id,
        device_id="DEVICE",
        room_id=room_id,
        slot_id="m.call#ROOM",
        video=VideoGrants(
            room=room_alias_for(room_id, "m.call#ROOM"), can_publish=True, can_subscribe=True
        ),
    )


def payload_text(token: str) -> str:
    """The payload as Element Call reads it: ``atob`` (standard base64) of the middle part."""
    part = token.split(".")[1]
    assert "-" not in part and "_" not in part, part
    raw = base64.b64decode(part + "=" * (-len(part) % 4), validate=True)
    return raw.decode("ascii")


def test_issued_token_has_livekit_claims_and_verifies() -> None:
    tokens = FocusTokens(SECRET, LIFETIME)
    token = tokens.issue(grant())
    claims: dict[str, Any] = json.loads(payload_text(token))
    assert claims["sub"] == "@alice:localhost:DEVICE"
    assert claims["exp"] - claims["nbf"] == LIFETIME
    assert claims["video"] == {
        "roomJoin": True,
        "room": room_alias_for("!room:localhost", "m.call#ROOM"),
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
        "canUpdateOwnMetadata": True,
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert tokens.verify(token) == grant()


@pytest.mark.parametrize("offset", range(3))
def test_payload_decodes_with_plain_atob_whatever_the_characters(offset: int) -> None:
    """``>``, ``?``, ``~`` and DEL at some byte positions, or any non-ASCII, would put ``-`` or
    ``_`` into base64url; a payload shifted by 0, 1 and 2 bytes covers every position."""
    tricky = "x" * offset + ">?~\x7f<&\u00e9\u2028\U0001f600"
    tokens = FocusTokens(SECRET, LIFETIME)
    original = grant(room_id=f"!{tricky}:localhost", user_id=f"@{tricky}:localhost")
    token = tokens.issue(original)
    claims = json.loads(payload_text(token))
    assert claims["matrix"]["room_id"] == f"!{tricky}:localhost"
    assert claims["sub"] == f"@{tricky}:localhost:DEVICE"
    assert tokens.verify(token) == original


def test_expired_and_future_tokens_are_refused() -> None:
    tokens = FocusTokens(SECRET, LIFETIME)
    now = int(time.time())
    with pytest.raises(InvalidFocusToken, match="expired"):
        tokens.verify(tokens.issue(grant(), now=now - 10 * LIFETIME))
    with pytest.raises(InvalidFocusToken, match="not valid yet"):
        tokens.verify(tokens.issue(grant(), now=now + 10 * LIFETIME))


def test_tokens_not_signed_with_our_secret_are_refused() -> None:
    tokens = FocusTokens(SECRET, LIFETIME)
    other = FocusTokens(b"another secret of the same length, more or less", LIFETIME)
    with pytest.raises(InvalidFocusToken, match="invalid"):
        tokens.verify(other.issue(grant()))

    claims = json.loads(payload_text(tokens.issue(grant())))
    unsigned = jwt.encode(claims, key="", algorithm="none")
    with pytest.raises(InvalidFocusToken):
        tokens.verify(unsigned)
    with pytest.raises(InvalidFocusToken):
        tokens.verify("not a token")


def test_a_token_for_one_room_cannot_be_turned_into_another() -> None:
    """Rewriting the room in the payload breaks the signature."""
    tokens = FocusTokens(SECRET, LIFETIME)
    header, payload, signature = tokens.issue(grant("!a:localhost")).split(".")
    claims = json.loads(payload_text(f"{header}.{payload}.{signature}"))
    claims["video"]["room"] = room_alias_for("!b:localhost", "m.call#ROOM")
    claims["matrix"]["room_id"] = "!b:localhost"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(InvalidFocusToken, match="invalid"):
        tokens.verify(f"{header}.{forged}.{signature}")


def test_tokens_without_our_claims_are_refused() -> None:
    tokens = FocusTokens(SECRET, LIFETIME)
    now = int(time.time())
    base = {"iss": "matrix-conference-bridge", "sub": "x", "nbf": now, "exp": now + 60}
    for claims, reason in [
        ({**base, "iss": "someone-else"}, "invalid"),
        ({**base, "video": {"room": "r"}}, "no room join"),
        ({**base, "video": {"roomJoin": True, "room": "r"}}, "malformed"),
        (
            {**base, "video": grant().video.to_claim(), "matrix": {"user_id": "@a:b"}},
            "names no Matrix room",
        ),
    ]:
        with pytest.raises(InvalidFocusToken, match=reason):
            tokens.verify(jwt.encode(claims, SECRET, "HS256"))


def test_the_secret_is_not_in_the_repr() -> None:
    assert SECRET.decode() not in repr(FocusTokens(SECRET, LIFETIME))
