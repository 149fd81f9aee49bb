"""The focus's LiveKit access tokens: issued by the token service, verified by the signalling.

Tokens are HS256 JWTs shaped like LiveKit's (``iss``, ``sub`` = participant identity, ``nbf``,
``exp``, ``video`` grants), plus a ``matrix`` claim naming the Matrix user, device, room and
slot the token was granted for, so the signalling can map the conference and re-check the
room without any state of its own.

Element Call decodes the payload with plain ``atob``, which rejects base64url's ``-`` and
``_``. For ASCII JSON those appear only where ``>``, ``?``, ``~`` or DEL fall on certain byte
positions, so the payload is pure ASCII with exactly those characters escaped as ``\\u00XX``
(Go's encoder, which lk-jwt-service uses, escapes ``<``, ``>`` and ``&``; we escape those too).
"""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass
import json
import time

import jwt

ISSUER = "matrix-conference-bridge"
ALGORITHM = "HS256"
CLOCK_SKEW_S = 30
"""Leeway for ``nbf``/``exp``: nodes sharing a database may disagree a little on the time."""

_ATOB_SAFE = str.maketrans({c: f"\\u{ord(c):04x}" for c in "<>&?~\x7f"})


class InvalidFocusToken(Exception):
    """The token is not one this bridge issued, or no longer valid; the message says why."""


class _AtobSafeEncoder(json.JSONEncoder):
    """ASCII JSON whose base64url form never contains ``-`` or ``_``.

    The escaped characters can only occur inside JSON strings, so escaping them in the whole
    text is exact.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs["ensure_ascii"] = True
        super().__init__(**kwargs)

    def encode(self, o: Any) -> str:
        return super().encode(o).translate(_ATOB_SAFE)


@dataclass(frozen=True)
class VideoGrants:
    """LiveKit's ``video`` claim, as far as the focus grants anything."""

    room: str
    can_publish: bool
    can_subscribe: bool

    def to_claim(self) -> dict[str, Any]:
        return {
            "roomJoin": True,
            "room": self.room,
            "canPublish": self.can_publish,
            "canSubscribe": self.can_subscribe,
            "canPublishData": self.can_publish,
            "canUpdateOwnMetadata": True,
        }

    @classmethod
    def from_claim(cls, claim: Any) -> VideoGrants:
        if not isinstance(claim, dict) or claim.get("roomJoin") is not True:
            raise InvalidFocusToken("the token grants no room join")
        room, publish, subscribe = (claim.get(k) for k in ("room", "canPublish", "canSubscribe"))
        if not (
            isinstance(room, str) and isinstance(publish, bool) and isinstance(subscribe, bool)
        ):
            raise InvalidFocusToken("the token's video grant is malformed")
        return cls(room=room, can_publish=publish, can_subscribe=subscribe)


@dataclass(frozen=True)
class FocusGrant:
    """Who may join which conference, and how: what a token says once verified."""

    identity: str
    user_id: str
    device_id: str
    room_id: str
    slot_id: str
    video: VideoGrants

    @property
    def room_alias(self) -> str:
        """The LiveKit room name, derived from (room_id, slot_id) when the token was issued."""
        return self.video.room


class FocusTokens:
    """Issues and verifies tokens with the bridge's own secret (never logged or shown)."""

    def __init__(self, secret: bytes, lifetime_s: int) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"FocusTokens(lifetime_s={self.lifetime_s})"

    def key_hex(self) -> str:
        """The secret, for this bridge's media workers (sent over their private socket)."""
        return self._secret.hex()

    def issue(self, grant: FocusGrant, *, now: int | None = None) -> str:
        issued_at = int(time.time()) if now is None else now
        payload = {
            "iss": ISSUER,
            "sub": grant.identity,
            "nbf": issued_at,
            "exp": issued_at + self.lifetime_s,
            "video": grant.video.to_claim(),
            "matrix": {
                "user_id": grant.user_id,
                "device_id": grant.device_id,
                "room_id": grant.room_id,
                "slot_id": grant.slot_id,
            },
        }
        return jwt.encode(payload, self._secret, ALGORITHM, json_encoder=_AtobSafeEncoder)

    def verify(self, token: str) -> FocusGrant:
        """The grant of a token this bridge issued, checked for signature, issuer and time.

        Raises:
            InvalidFocusToken: anything is wrong; the message is safe to show the client.
        """
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                leeway=CLOCK_SKEW_S,
                options={"require": ["iss", "sub", "nbf", "exp"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise InvalidFocusToken("the token has expired") from e
        except jwt.ImmatureSignatureError as e:
            raise InvalidFocusToken("the token is not valid yet") from e
        except jwt.InvalidTokenError as e:
            raise InvalidFocusToken(f"the token is invalid: {e}") from e
        video = VideoGrants.from_claim(claims.get("video"))
        matrix = claims.get("matrix")
        fields = ("user_id", "device_id", "room_id", "slot_id")
        if not isinstance(matrix, dict) or not all(isinstance(matrix.get(f), str) for f in fields):
            raise InvalidFocusToken("the token names no Matrix room and user")
        return FocusGrant(
            identity=str(claims["sub"]),
            user_id=matrix["user_id"],
            device_id=matrix["device_id"],
            room_id=matrix["room_id"],
            slot_id=matrix["slot_id"],
            video=video,
        )
