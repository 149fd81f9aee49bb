"""Legacy Matrix VoIP: 1:1-call clients dialling into a room's conference."""

from __future__ import annotations

from .dialin import DialIn

__all__ = ["DialIn"]
