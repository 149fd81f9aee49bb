"""One legacy 1:1 call to a dial-in ghost: its signalling state and its media leg.

The ghost only ever answers: it never sends an offer, so it is always the "polite" party of
MSC2746's renegotiation and can never be in glare itself; the caller's (re-)offers are applied
in order. Work for one call runs serially in its own task, so a slow answer (ICE gathering)
holds up neither other calls nor the bridge's event handling.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import asyncio
import logging

from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixError
from mautrix.types import EventType, RoomID, UserID

from . import signalling as sig
from .leg import STREAM_ID
from .media_link import LegLink

log = logging.getLogger("mau.voip.call")

Job = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class CallKey:
    chat_room_id: RoomID
    call_id: str


class DialInCall:
    def __init__(
        self,
        key: CallKey,
        caller: UserID,
        room_id: RoomID,
        ghost: IntentAPI,
        invite: sig.CallEventContent,
        on_ended: Callable[[DialInCall], None],
    ) -> None:
        self.key = key
        self.caller = caller
        self.room_id = room_id
        """The mapped room whose conference this call joins."""
        self.ghost = ghost
        self.invite = invite
        self.party_id = sig.new_party_id()
        self.leg: LegLink | None = None
        self.ended = False
        self._on_ended = on_ended
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._worker = asyncio.create_task(self._work())

    def __str__(self) -> str:
        return f"call {self.key.call_id} of {self.caller}"

    def submit(self, job: Job) -> None:
        """Run ``job`` after every job submitted before it."""
        if not self.ended:
            self._jobs.put_nowait(job)

    async def _work(self) -> None:
        while not self.ended:
            job = await self._jobs.get()
            try:
                await job()
            except Exception:
                log.exception("Handling %s failed", self)
                await self.hang_up(sig.HangupReason.UNKNOWN_ERROR)

    def on_closed(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run ``cleanup`` once the call has left the conference."""
        self._cleanups.append(cleanup)

    def from_caller(self, content: sig.CallEventContent) -> bool:
        """Whether an event comes from the party that placed the call (v1 has party ids)."""
        return content.party_id == self.invite.party_id

    # ------------------------------------------------------------------ caller's events

    async def answer(self, leg: LegLink) -> None:
        self.leg = leg
        sdp = await leg.accept_offer(self.invite.sdp or "")
        if self.invite.metadata is not None:
            await leg.apply_metadata(self.invite.metadata)
        content = sig.answer(self.key.call_id, self.party_id, sdp, self._meta())
        await self._send(sig.ANSWER, content)
        log.info("Answered %s into the conference of %s", self, self.room_id)

    async def on_candidates(self, content: sig.CallEventContent) -> None:
        if self.leg is None:
            return
        for candidate in content.candidates:
            try:
                await self.leg.add_candidate(candidate)
            except (ValueError, IndexError) as e:
                log.debug("Ignoring an unusable candidate of %s: %s", self, e)

    async def on_negotiate(self, content: sig.CallEventContent) -> None:
        if self.leg is None or content.sdp is None:
            return
        if content.sdp_type != "offer":
            log.warning("Ignoring a negotiate answer in %s: the ghost sent no offer", self)
            return
        sdp = await self.leg.accept_offer(content.sdp)
        if content.metadata is not None:
            await self.leg.apply_metadata(content.metadata)
        lifetime = content.lifetime or self.invite.lifetime or 0
        await self._send(
            sig.NEGOTIATE,
            sig.negotiate_answer(self.key.call_id, self.party_id, sdp, lifetime, self._meta()),
        )

    async def on_metadata(self, content: sig.CallEventContent) -> None:
        if self.leg is not None and content.metadata is not None:
            await self.leg.apply_metadata(content.metadata)

    async def on_select_answer(self, content: sig.CallEventContent) -> None:
        if content.selected_party_id != self.party_id:
            log.info("%s was answered elsewhere", self)
            await self.end("answered elsewhere")

    # ------------------------------------------------------------------ ending

    async def hang_up(self, reason: str) -> None:
        """End the call from our side, telling the caller why."""
        if self.ended:
            return
        try:
            await self._send(sig.HANGUP, sig.hangup(self.key.call_id, self.party_id, reason))
        except MatrixError as e:
            log.warning("Could not send the hangup of %s: %s", self, e)
        await self.end(reason)

    async def end(self, reason: str) -> None:
        """Forget the call and leave the conference (no Matrix event)."""
        if self.ended:
            return
        self.ended = True
        self._on_ended(self)
        if self.leg is not None:
            await self.leg.close(reason)
        for cleanup in self._cleanups:
            await cleanup()
        log.info("%s ended: %s", self, reason)
        if asyncio.current_task() is not self._worker:
            self._worker.cancel()

    # ------------------------------------------------------------------ helpers

    def _meta(self) -> dict[str, Any]:
        return sig.stream_metadata(STREAM_ID, self.leg is not None and self.leg.sends_video)

    async def _send(self, event_type: str, content: dict[str, Any]) -> None:
        await self.ghost.send_message_event(
            self.key.chat_room_id,
            EventType.find(event_type, EventType.Class.MESSAGE),
            content,  # type: ignore[arg-type]  # plain JSON is sent as is
        )
