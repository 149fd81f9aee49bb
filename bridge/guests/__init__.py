"""Guest links: people without a Matrix account join a room's call as ghosts of the bridge."""

from __future__ import annotations

from .http import GuestRoutes
from .service import Guests

__all__ = ["GuestRoutes", "Guests"]
