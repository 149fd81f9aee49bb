"""Keep raw Matrix events that mautrix cannot parse out of the log.

mautrix logs such an event at ERROR with the whole event and a traceback whose message quotes
the offending value. Any room member can send a malformed call event, and call events carry
SDP and ICE candidates, so that line would put IP addresses into the log at a kept level.
The filter replaces it with the event's type, id, sender and room, and the key that failed.
"""

from __future__ import annotations

from collections.abc import Mapping
import logging
import re

RAW_EVENT_MESSAGES = frozenset(
    {
        "Failed to deserialize event %s",
        "Failed to deserialize ephemeral event %s",
        "Failed to deserialize to-device event %s",
    }
)
"""mautrix's messages (``mautrix.appservice.as_handler``) whose argument is a raw event."""

_FAILED_KEY = re.compile(r"key (\w+) (?:of|in) (\w+)$")
"""The end of a SerializerError's message: which key of which content class failed."""


class RawEventFilter(logging.Filter):
    """Summarises mautrix's undeserializable-event records; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        # A LogRecord whose only argument is a mapping keeps the mapping itself as ``args``.
        if record.msg in RAW_EVENT_MESSAGES and isinstance(record.args, Mapping):
            raw = record.args
            what = record.msg.removesuffix(" %s")
            record.msg = f"{what}: %s %s from %s in %s (%s; content not logged)"
            record.args = (
                raw.get("type"),
                raw.get("event_id", ""),
                raw.get("sender"),
                raw.get("room_id", "-"),
                _failure(record),
            )
            record.exc_info = record.exc_text = None
        return True


def _failure(record: logging.LogRecord) -> str:
    error = record.exc_info[1] if record.exc_info else None
    match = _FAILED_KEY.search(str(error)) if error is not None else None
    return f"bad {match[1]} of {match[2]}" if match else "unparsable content"
