"""The conferences of the bridge's SFU, shared by every signalling adapter.

A room's call is one SFU conference whichever way participants arrive (LiveKit signalling,
legacy Matrix VoIP), so adapters look conferences up here and each listens to its events.
"""

from __future__ import annotations

from collections.abc import Callable
import logging

from sfu import SFU, Conference, Event, EventHandler

log = logging.getLogger("mau.conferences")


class Conferences:
    def __init__(self, sfu: SFU) -> None:
        self.sfu = sfu
        self._listeners: dict[str, list[EventHandler]] = {}

    def get_or_create(self, conference_id: str) -> Conference:
        conference = self.sfu.conference(conference_id)
        if conference is None:
            conference = self.sfu.create_conference(conference_id, self._dispatch)
            log.info("Conference %s opened", conference_id)
        return conference

    def listen(self, conference_id: str, handler: EventHandler) -> Callable[[], None]:
        """Receive the conference's events until the returned function is called."""
        listeners = self._listeners.setdefault(conference_id, [])
        listeners.append(handler)

        def stop_listening() -> None:
            if handler in listeners:
                listeners.remove(handler)

        return stop_listening

    async def close_if_empty(self, conference_id: str) -> bool:
        """Close the conference if nobody is in it; True if it is gone."""
        conference = self.sfu.conference(conference_id)
        if conference is not None and conference.participants:
            return False
        self._listeners.pop(conference_id, None)
        if conference is not None:
            await self.sfu.close_conference(conference_id)
            log.info("Conference %s closed", conference_id)
        return True

    def _dispatch(self, event: Event) -> None:
        """One adapter failing on an event must not keep it from the others."""
        for handler in list(self._listeners.get(event.conference_id, ())):
            try:
                handler(event)
            except Exception:
                log.exception("Handling %s failed", type(event).__name__)
