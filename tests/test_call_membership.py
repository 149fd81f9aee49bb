"""Reading MatrixRTC call memberships: whose device a state key names, and when it lapses."""

from __future__ import annotations

import pytest

from bridge.call_membership import device_of, expires_at


@pytest.mark.parametrize(
    ("state_key", "device"),
    [
        ("_@alice:example.org_DEVICE_m.call", "DEVICE"),
        ("@alice:example.org_DEVICE_m.call", "DEVICE"),
        ("@alice:example.org_DEVICE", "DEVICE"),
        ("_@alice:example.org_DEV_ICE_m.call", "DEV_ICE"),
        ("@alice:example.org", None),  # legacy per-user membership
        ("_@mallory:example.org_DEVICE_m.call", None),  # not the sender's
        ("@alice:example.org.evil_DEVICE", None),
    ],
)
def test_device_of(state_key: str, device: str | None) -> None:
    assert device_of(state_key, "@alice:example.org") == device


def test_expiry_counts_from_creation_else_from_the_event() -> None:
    assert expires_at({"expires": 14_400_000, "created_ts": 1_000}, 5_000) == 14_401.0
    assert expires_at({"expires": 60_000}, 5_000) == 65.0
    assert expires_at({}, 5_000) is None
    assert expires_at({"expires": "soon"}, 5_000) is None
