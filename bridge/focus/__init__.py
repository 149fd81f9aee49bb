"""The MatrixRTC focus: an lk-jwt-service-compatible token service whose tokens the bridge's
LiveKit-compatible signalling accepts, with callers identified by Matrix OpenID and admitted
by their room's Matrix membership and power levels."""

from __future__ import annotations

from .service import Focus
from .tokens import FocusGrant, InvalidFocusToken

__all__ = ["Focus", "FocusGrant", "InvalidFocusToken"]
