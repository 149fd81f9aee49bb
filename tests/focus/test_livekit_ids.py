"""Identity and room alias derivations, against vectors computed as lk-jwt-service does."""

from __future__ import annotations

import base64
import hashlib

import pytest

from bridge.focus.livekit_ids import (
    LEGACY_SLOT_ID,
    go_json_strings,
    identity_for,
    legacy_identity_for,
    room_alias_for,
)


def unpadded_b64_sha256(go_json: bytes) -> str:
    """What Go computes from the bytes json.Marshal gave it."""
    return base64.b64encode(hashlib.sha256(go_json).digest()).decode().rstrip("=")


def test_published_msc4195_vectors() -> None:
    # The test vectors of MSC4195's appendix, also asserted by lk-jwt-service.
    assert room_alias_for("!roomid:example.com", "slot1234") == (
        "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc"
    )
    assert identity_for("@alice:example.com", "DEVICE123", "memberABC") == (
        "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU"
    )


# (input strings, the exact bytes Go's json.Marshal([]string{...}) produces), written by hand.
GO_ENCODINGS = [
    (["!abc:example.org", "m.call#ROOM"], b'["!abc:example.org","m.call#ROOM"]'),
    # Go escapes <, > and & (HTML safety), Python's json does not.
    (["!a<b>&c:x", "m.call#ROOM"], b'["!a\\u003cb\\u003e\\u0026c:x","m.call#ROOM"]'),
    # Non-ASCII stays raw UTF-8; U+2028/2029 are escaped (JavaScript line separators).
    (["!caf\u00e9:x", "\u2028\u2029"], b'["!caf\xc3\xa9:x","\\u2028\\u2029"]'),
    # Control characters: short escapes where JSON has them, else \u00XX in lower-case hex.
    (["a\nb\tc\rd\be\ff", "\x01\x1f"], b'["a\\nb\\tc\\rd\\be\\ff","\\u0001\\u001f"]'),
    # Quotes and backslashes escaped; '/' and DEL are not.
    (['q"\\/\x7f', ""], b'["q\\"\\\\/\x7f",""]'),
]


@pytest.mark.parametrize(("values", "go_bytes"), GO_ENCODINGS)
def test_json_is_encoded_as_go_encodes_it(values: list[str], go_bytes: bytes) -> None:
    assert go_json_strings(values) == go_bytes


@pytest.mark.parametrize(("values", "go_bytes"), [e for e in GO_ENCODINGS if len(e[0]) == 2])
def test_room_alias_hashes_the_go_encoding(values: list[str], go_bytes: bytes) -> None:
    assert room_alias_for(values[0], values[1]) == unpadded_b64_sha256(go_bytes)


def test_identity_hashes_the_go_encoding() -> None:
    expected = unpadded_b64_sha256(b'["@\\u003cal\\u0026ice\\u003e:x","D\xc3\xa9V","uuid-1"]')
    assert identity_for("@<al&ice>:x", "D\u00e9V", "uuid-1") == expected


def test_legacy_derivations() -> None:
    """/sfu/get: identity "{user}:{device}", room = the alias of the fixed slot m.call#ROOM."""
    assert legacy_identity_for("@alice:localhost", "ZMONLVYLDE") == "@alice:localhost:ZMONLVYLDE"
    assert room_alias_for("!r:localhost", LEGACY_SLOT_ID) == unpadded_b64_sha256(
        b'["!r:localhost","m.call#ROOM"]'
    )
