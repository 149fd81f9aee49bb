"""Errors the focus answers in Matrix style (``{"errcode", "error"}``), as lk-jwt-service does.

Each failure a caller can cause is one of these; its message is written for the caller and
never contains a token.
"""

from __future__ import annotations


class FocusError(Exception):
    status = 500
    errcode = "M_UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotJSON(FocusError):
    """The body is not JSON at all."""

    status = 400
    errcode = "M_NOT_JSON"


class BadJSON(FocusError):
    """JSON of the wrong shape: unknown, missing or mistyped fields."""

    status = 400
    errcode = "M_BAD_JSON"


class Unauthorized(FocusError):
    """The caller's identity could not be established from its OpenID token."""

    status = 401
    errcode = "M_UNAUTHORIZED"


class Forbidden(FocusError):
    """The caller is known, but the room's Matrix state does not let them into its call."""

    status = 403
    errcode = "M_FORBIDDEN"


class InvalidParam(FocusError):
    """Well-formed, but asks for something this focus does not serve."""

    status = 400
    errcode = "M_INVALID_PARAM"


class MissingToken(FocusError):
    """A forwarded request without the homeserver's token."""

    status = 401
    errcode = "M_MISSING_TOKEN"


class UnknownToken(FocusError):
    """A forwarded request with a token that is not the homeserver's."""

    status = 401
    errcode = "M_UNKNOWN_TOKEN"


class NotReady(FocusError):
    """The focus is still starting."""

    status = 503
    errcode = "M_UNKNOWN"
