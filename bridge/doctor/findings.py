"""What a check found: one line for the admin, with the fix when something is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    """Works, but likely not as intended; does not fail the run."""
    FAIL = "FAIL"
    SKIP = "skip"
    """Not checked (not configured, or a check it depends on failed); says why."""


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.value:<4}  {self.check:<16} {self.message}"
        return f"{text} Fix: {self.fix}" if self.fix else text


def ok(check: str, message: str) -> Finding:
    return Finding(check, Status.OK, message)


def warn(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, Status.WARN, message, fix)


def fail(check: str, message: str, fix: str) -> Finding:
    return Finding(check, Status.FAIL, message, fix)


def skip(check: str, message: str) -> Finding:
    return Finding(check, Status.SKIP, message)
