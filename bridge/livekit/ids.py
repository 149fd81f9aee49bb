"""LiveKit-style identifiers: a type prefix and random letters, like the server's."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_sid(prefix: str) -> str:
    """E.g. ``PA_3fQz...`` for participants, ``TR_...`` for tracks, ``RM_...`` for rooms."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))
