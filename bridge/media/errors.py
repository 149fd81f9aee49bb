"""Why the media cannot start."""

from __future__ import annotations


class StartupError(Exception):
    """The bridge cannot start; the message tells the admin what to fix."""
