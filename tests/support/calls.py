"""What LiveKit call tests share: who is who, the media each sends, the client factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from mautrix.types import UserID
import pytest

from demo.livekit_client import LiveKitClient
from demo.synapse import SERVER_NAME

BOT = UserID(f"@callbot:{SERVER_NAME}")
CALL_MEMBER = "org.matrix.msc3401.call.member"
LUMAS = {"alice": 40, "bob": 130, "carol": 220}

ClientFactory = Callable[..., Awaitable[LiveKitClient]]
BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", ["v0", "v1"])
"""Media tests run with clients on two peer connections (v0) and on one (v1)."""


def decodes(receiver: LiveKitClient, sender: LiveKitClient, luma: int) -> bool:
    video = receiver.video_from(sender)
    recent = video.lumas[-5:]
    return (
        len(recent) == 5
        and all(abs(value - luma) < 12 for value in recent)
        and receiver.audio_from(sender).audio_frames > 25
    )
