"""LiveKit room aliases and participant identities, derived exactly as lk-jwt-service does.

Element Call binds each participant's E2EE keys to the LiveKit identity it computes itself
from the call membership, and finds the LiveKit room from the alias in the JWT. Any
difference from lk-jwt-service's derivation makes media silently undecryptable.
"""

from __future__ import annotations

import base64
import hashlib
import json

LEGACY_SLOT_ID = "m.call#ROOM"
"""The slot ``/sfu/get`` uses: one call per room, as in MatrixRTC state-event memberships."""

# Go's encoding/json escapes these inside strings; Python's json leaves them as they are.
_GO_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def go_json_strings(values: list[str]) -> bytes:
    """``json.Marshal([]string{...})`` in Go: compact, raw UTF-8, HTML characters escaped.

    Python and Go (1.22+) agree on everything else: short escapes for ``\\b \\f \\n \\r \\t``,
    ``\\u00XX`` (lower-case hex) for other control characters, DEL and ``/`` unescaped.
    """
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return text.translate(_GO_ESCAPES).encode("utf-8")


def _hash(values: list[str]) -> str:
    digest = hashlib.sha256(go_json_strings(values)).digest()
    return base64.b64encode(digest).decode("ascii").rstrip("=")


def room_alias_for(room_id: str, slot_id: str) -> str:
    """The LiveKit room of a MatrixRTC slot: unpadded base64 of sha256(json([room, slot]))."""
    return _hash([room_id, slot_id])


def identity_for(user_id: str, device_id: str, member_id: str) -> str:
    """The participant identity of a ``/get_token`` (sticky-event) membership."""
    return _hash([user_id, device_id, member_id])


def legacy_identity_for(user_id: str, device_id: str) -> str:
    """The participant identity of an ``/sfu/get`` (state-event) membership."""
    return f"{user_id}:{device_id}"
