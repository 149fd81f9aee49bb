"""What the control side needs from the media, wherever it runs.

One command surface (:meth:`MediaPlane.command`, carried out by :class:`MediaEngine`) serves
both implementations: :class:`~bridge.media.local.LocalPlane` calls the engine of this process,
:class:`~bridge.media.host.WorkerPlane` sends the command to the worker that owns the
conference. Presence comes back into :attr:`MediaPlane.roster`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, fields

from mautrix.types import RoomID, UserID

from sfu import MediaCounters, TrackKind

from ..conferences import Profile
from .roster import Roster

if TYPE_CHECKING:
    from aiohttp import web

    from ..focus.tokens import FocusTokens
    from ..livekit.host import Admission
    from ..voip.signalling import Candidate, StreamMetadata

PublishCheck = Callable[[RoomID, UserID], Awaitable[bool]]
"""Whether the room's state lets a user publish (:meth:`RoomAccess.may_publish`)."""


@dataclass
class MediaFigures:
    """What the media holds and has counted, for metrics and placement."""

    conferences: int = 0
    participants: int = 0
    published_audio: int = 0
    published_video: int = 0
    subscriptions: int = 0
    connecting: int = 0
    counters: MediaCounters = field(default_factory=MediaCounters)

    def published(self, kind: TrackKind) -> int:
        return self.published_audio if kind is TrackKind.AUDIO else self.published_video

    def add(self, other: MediaFigures) -> None:
        for name in ("conferences", "participants", "published_audio", "published_video"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.subscriptions += other.subscriptions
        self.connecting += other.connecting
        add_counters(self.counters, other.counters)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> MediaFigures:
        return cls(**{**data, "counters": MediaCounters(**data["counters"])})


def add_counters(total: MediaCounters, other: MediaCounters) -> None:
    for counter in fields(MediaCounters):
        setattr(total, counter.name, getattr(total, counter.name) + getattr(other, counter.name))


@dataclass(frozen=True)
class LegAnswer:
    sdp: str
    sends_video: bool


class MediaPlane(ABC):
    def __init__(self) -> None:
        self.roster = Roster()
        self.publish_check: PublishCheck | None = None
        """Set by the bridge once room access exists; the media asks it when a participant
        wants to publish."""

    @abstractmethod
    async def start(self) -> None:
        """Start the media; raises ``StartupError`` naming what to fix."""

    @abstractmethod
    async def end_sessions(self) -> None:
        """End every signalling session (clients are told the server shuts down), before the
        focus listener stops, which would otherwise wait for their WebSockets."""

    @abstractmethod
    async def close(self) -> None:
        """Stop the media."""

    @abstractmethod
    def use_tokens(self, tokens: FocusTokens) -> None:
        """The focus's token keys, for the media to check and refresh clients' tokens."""

    @abstractmethod
    def figures(self) -> MediaFigures:
        """Totals over the whole media (cached for workers: read at every scrape)."""

    @abstractmethod
    def accepts_newcomers(self, conference_id: str) -> bool:
        """False while the media that would carry the conference is busy connecting others."""

    @abstractmethod
    async def serve_signalling(
        self, request: web.Request, admission: Admission
    ) -> web.StreamResponse:
        """Run an admitted client's LiveKit signalling WebSocket where its conference is."""

    @abstractmethod
    async def command(self, conference_id: str, name: str, **args: Any) -> Any:
        """Carry out a :class:`~bridge.media.engine.MediaEngine` command on the conference's
        media; arguments and result are JSON values."""

    async def url_for(self, room_id: RoomID) -> str | None:
        """Where the room's clients connect, if not to the focus listener (a media node)."""
        return None

    async def may_publish(self, room_id: str, user_id: str) -> bool:
        if self.publish_check is None:
            return False
        return await self.publish_check(RoomID(room_id), UserID(user_id))

    # ------------------------------------------------------------------ commands

    async def remove(self, conference_id: str, participant_id: str, reason: str) -> None:
        await self.command(conference_id, "remove", participant_id=participant_id, reason=reason)

    async def end(self, conference_id: str, reason: str) -> int:
        """Disconnect everyone; how many there were."""
        count: int | None = await self.command(conference_id, "end", reason=reason)
        return count or 0

    async def mute(
        self, conference_id: str, participant_id: str, kinds: frozenset[TrackKind], hold: bool
    ) -> None:
        """Mute the participant's tracks of ``kinds`` and tell its client; ``hold`` keeps
        them muted (those published later too)."""
        await self.command(
            conference_id, "mute", participant_id=participant_id, kinds=sorted(kinds), hold=hold
        )

    async def hold(
        self, conference_id: str, participant_id: str, kinds: frozenset[TrackKind]
    ) -> None:
        """Keep ``kinds`` muted (an empty set releases)."""
        await self.command(
            conference_id, "hold", participant_id=participant_id, kinds=sorted(kinds)
        )

    async def set_can_publish(
        self, conference_id: str, participant_id: str, allowed: bool
    ) -> None:
        await self.command(
            conference_id, "set_can_publish", participant_id=participant_id, allowed=allowed
        )

    async def open_leg(self, conference_id: str, participant_id: str, profile: Profile) -> None:
        """Join a dial-in caller's media leg (:class:`bridge.voip.leg.MediaLeg`)."""
        await self.command(
            conference_id, "leg_open", participant_id=participant_id, profile=asdict(profile)
        )

    async def leg_offer(self, conference_id: str, participant_id: str, sdp: str) -> LegAnswer:
        answer = await self.command(
            conference_id, "leg_offer", participant_id=participant_id, sdp=sdp
        )
        if answer is None:
            raise ConnectionError("the media of this conference is gone")
        return LegAnswer(answer["sdp"], answer["sends_video"])

    async def leg_candidate(
        self, conference_id: str, participant_id: str, candidate: Candidate
    ) -> None:
        """Raises ValueError for a candidate the media cannot use."""
        unusable = await self.command(
            conference_id, "leg_candidate", participant_id=participant_id, **asdict(candidate)
        )
        if unusable is not None:
            raise ValueError(unusable)

    async def leg_metadata(
        self, conference_id: str, participant_id: str, metadata: StreamMetadata
    ) -> None:
        await self.command(
            conference_id, "leg_metadata", participant_id=participant_id, **asdict(metadata)
        )

    async def leg_close(self, conference_id: str, participant_id: str, reason: str) -> None:
        await self.command(
            conference_id, "leg_close", participant_id=participant_id, reason=reason
        )
