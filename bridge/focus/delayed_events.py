"""Restarting and sending a user's delayed event (MSC4140) at the homeserver.

The requests carry no access token: the delay ID itself authorises them ("behaves as a scoped
access token", MSC4140 as merged), so the bridge needs no power over the user's account. The
delay ID is never logged.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote
import json
import logging

from yarl import URL
import aiohttp

from .leave_schedule import Answer, Outcome

log = logging.getLogger("mau.focus.delayed_events")

PATH = "_matrix/client/unstable/org.matrix.msc4140/delayed_events"
TIMEOUT_S = 10.0
MAX_BODY = 64 * 1024


def _retry_after(headers: Any, body: bytes) -> float | None:
    """Retry-After in seconds (RFC 9110 delay form), else the body's ``retry_after_ms``."""
    header = headers.get("Retry-After")
    if header is not None:
        try:
            return max(float(header), 0.0)
        except ValueError:
            pass
    try:
        retry_after_ms = json.loads(body).get("retry_after_ms")
    except (ValueError, AttributeError):
        return None
    if isinstance(retry_after_ms, int | float) and not isinstance(retry_after_ms, bool):
        return max(retry_after_ms / 1000, 0.0)
    return None


class DelayedEvents:
    def __init__(self, session: aiohttp.ClientSession, homeserver: URL) -> None:
        self.session = session
        self.homeserver = homeserver

    async def act(self, delay_id: str, action: str) -> Answer:
        """POST ``…/delayed_events/{delay_id}/{action}``; any failure is an answer too."""
        # Quoted whole: a delay ID comes from the client and must stay one path segment.
        url = URL(
            f"{str(self.homeserver).rstrip('/')}/{PATH}/{quote(delay_id, safe='')}/{action}",
            encoded=True,
        )
        try:
            async with self.session.post(
                url, json={}, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
            ) as response:
                body = await response.content.read(MAX_BODY)
                status = response.status
                headers = response.headers
        except (aiohttp.ClientError, TimeoutError) as e:
            log.debug("Delayed event %s failed: %s", action, type(e).__name__)
            return Answer(Outcome.RETRY)
        if status == 200:
            return Answer(Outcome.OK)
        if status == 404:
            return Answer(Outcome.NOT_FOUND)
        if status == 429:
            return Answer(Outcome.RETRY, _retry_after(headers, body))
        log.debug("Delayed event %s answered HTTP %d", action, status)
        return Answer(Outcome.RETRY)
