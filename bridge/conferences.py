"""The conferences of the bridge's SFU, shared by every signalling adapter.

A room's call is one SFU conference whichever way participants arrive (LiveKit signalling,
legacy Matrix VoIP), so adapters join participants here, with a profile saying who they are,
and each adapter listens to the events of the conferences it serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
import logging

from sfu import (
    SFU,
    Conference,
    Event,
    EventHandler,
    Participant,
    ParticipantState,
    ParticipantStateChanged,
)

log = logging.getLogger("mau.conferences")


class Via(StrEnum):
    """How a participant reached the conference (stored in call history)."""

    MATRIXRTC = "matrixrtc"
    LEGACY_VOIP = "legacy_voip"


@dataclass(frozen=True)
class Profile:
    """Who an SFU participant is, for the other adapters and for call history."""

    user_id: str
    device_id: str
    via: Via
    display_name: str = ""
    identity: str = ""
    """The LiveKit identity other clients bind E2EE keys to; empty for non-LiveKit legs."""
    may_publish: bool = True
    """What the credentials it joined with allow (a LiveKit token's grant); whether it may
    publish also depends on the room, see :class:`bridge.publishing.PublishRights`."""


class Conferences:
    def __init__(self, sfu: SFU) -> None:
        self.sfu = sfu
        self._listeners: dict[str, list[EventHandler]] = {}
        self._global_listeners: list[EventHandler] = []
        self._profiles: dict[tuple[str, str], Profile] = {}
        self.on_closed: Callable[[str], None] | None = None
        """Told each conference id closed (a worker tells the bridge, which placed it)."""

    def get_or_create(self, conference_id: str) -> Conference:
        conference = self.sfu.conference(conference_id)
        if conference is None:
            conference = self.sfu.create_conference(conference_id, self._dispatch)
            log.info("Conference %s opened", conference_id)
        return conference

    def join(
        self, conference_id: str, participant_id: str, profile: Profile, auto_subscribe: bool
    ) -> Participant:
        """Add a participant to the conference (opened if needed), remembering its profile."""
        conference = self.get_or_create(conference_id)
        self._profiles[conference_id, participant_id] = profile
        try:
            return conference.join(participant_id, auto_subscribe)
        except Exception:
            del self._profiles[conference_id, participant_id]
            raise

    def profile(self, conference_id: str, participant_id: str) -> Profile | None:
        return self._profiles.get((conference_id, participant_id))

    def listen(self, conference_id: str, handler: EventHandler) -> Callable[[], None]:
        """Receive one conference's events until the returned function is called."""
        listeners = self._listeners.setdefault(conference_id, [])
        listeners.append(handler)

        def stop_listening() -> None:
            if handler in listeners:
                listeners.remove(handler)

        return stop_listening

    def listen_all(self, handler: EventHandler) -> None:
        """Receive the events of every conference (call bookkeeping)."""
        self._global_listeners.append(handler)

    async def close_if_empty(self, conference_id: str) -> bool:
        """Close the conference if nobody is in it; True if it is gone."""
        conference = self.sfu.conference(conference_id)
        if conference is not None and conference.participants:
            return False
        self._listeners.pop(conference_id, None)
        if conference is not None:
            await self.sfu.close_conference(conference_id)
            log.info("Conference %s closed", conference_id)
        if self.on_closed is not None:
            self.on_closed(conference_id)
        return True

    def _dispatch(self, event: Event) -> None:
        """One listener failing on an event must not keep it from the others."""
        listeners = [*self._global_listeners, *self._listeners.get(event.conference_id, ())]
        for handler in listeners:
            try:
                handler(event)
            except Exception:
                log.exception("Handling %s failed", type(event).__name__)
        if (
            isinstance(event, ParticipantStateChanged)
            and event.state is ParticipantState.DISCONNECTED
        ):
            self._profiles.pop((event.conference_id, event.participant_id), None)
