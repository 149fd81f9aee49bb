"""Call events that mautrix itself cannot parse leave no SDP (IP addresses) in the log."""

from __future__ import annotations

import logging

from mautrix.appservice import AppService
import pytest

from bridge.log_redaction import RawEventFilter

ADDRESS = "192.0.2.71"
CANDIDATE = f"candidate:1 1 udp 2122260223 {ADDRESS} 50000 typ host"


@pytest.fixture
def appservice() -> AppService:
    """mautrix's transaction handling, as the bridge sets it up, without a homeserver."""
    log = logging.getLogger("test.redaction.as")
    log.addFilter(RawEventFilter())
    return AppService(
        server="http://127.0.0.1:9",
        domain="example.org",
        as_token="as",
        hs_token="hs",
        bot_localpart="bot",
        id="test",
        log=log,
    )


@pytest.mark.parametrize(
    ("content", "failure"),
    [
        ({"call_id": "c", "version": "1", "candidates": CANDIDATE}, "bad candidates of"),
        (
            {"call_id": "c", "version": "1", "candidates": [{"sdpMid": ADDRESS}]},
            "bad candidate of",
        ),
    ],
    ids=["candidates-string", "candidate-missing"],
)
async def test_undeserializable_event_is_summarised(
    appservice: AppService,
    caplog: pytest.LogCaptureFixture,
    content: dict[str, object],
    failure: str,
) -> None:
    raw = {
        "type": "m.call.candidates",
        "event_id": "$bad",
        "room_id": "!chat:example.org",
        "sender": "@mallory:example.org",
        "origin_server_ts": 1,
        "content": content,
    }
    with caplog.at_level(logging.DEBUG, logger="test.redaction.as"):
        await appservice.handle_transaction("1", events=[raw], extra_data={})
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert ADDRESS not in caplog.text
    message = errors[0].getMessage()
    assert "m.call.candidates $bad from @mallory:example.org in !chat:example.org" in message
    assert failure in message and "content not logged" in message


def test_other_records_pass_untouched() -> None:
    record = logging.LogRecord(
        "mau.as", logging.ERROR, __file__, 1, "Failed to deserialize event %s", ("text",), None
    )
    assert RawEventFilter().filter(record)
    assert record.getMessage() == "Failed to deserialize event text"
