"""The ``bridge.guests`` section of the config, checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .element_call import PACKAGE_DIST


@dataclass(frozen=True)
class GuestSettings:
    enabled: bool = True
    default_hours: float = 24
    max_hours: float = 168
    joins_per_minute_per_link: int = 10
    joins_per_minute_per_client: int = 5
    element_call_dir: Path = PACKAGE_DIST
    homeserver_url: str = ""
    """The homeserver's client-server API as guests' browsers reach it."""
