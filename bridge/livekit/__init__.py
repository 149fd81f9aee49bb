"""LiveKit-compatible signalling on top of the bridge's SFU, for livekit-client based apps
(Element Call, FluffyChat). Protocol messages are livekit-protocol's protobufs."""

from __future__ import annotations

from .service import LiveKitSignalling

__all__ = ["LiveKitSignalling"]
