"""Delegated delayed leave, carried out: jobs from ``delegate_delayed_leave``, driven by what
the SFU sees (in-process, no webhooks) and by :mod:`.leave_schedule`, kept in the database.

Participants are recognised by either identity a client may have: the hashed one of
``/get_token`` and the ``mxid:device`` of ``/sfu/get`` (Element Call in compatibility mode
delegates with the former while connected with the latter).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sfu import ParticipantState

from ..db import DelegatedLeave
from ..media import Presence, Roster
from .delayed_events import DelayedEvents
from .leave_schedule import RETRY_MAX_S, Action, LeaveJob, Phase

log = logging.getLogger("mau.focus.delegation")


def _to_row(job: LeaveJob) -> DelegatedLeave:
    return DelegatedLeave(
        conference_id=job.conference_id,
        identity=job.identity,
        legacy_identity=job.legacy_identity,
        user_id=job.user_id,
        delay_id=job.delay_id,
        delay_ms=None if job.delay_s is None else round(job.delay_s * 1000),
        phase=job.phase.value,
        due_ms=round(job.due * 1000),
        expires_ms=round(job.expires * 1000),
        give_up_ms=round(job.give_up * 1000),
    )


def _from_row(row: DelegatedLeave) -> LeaveJob:
    return LeaveJob(
        conference_id=row.conference_id,
        identity=row.identity,
        legacy_identity=row.legacy_identity,
        user_id=row.user_id,
        delay_id=row.delay_id,
        delay_s=None if row.delay_ms is None else row.delay_ms / 1000,
        phase=Phase(row.phase),
        due=row.due_ms / 1000,
        expires=row.expires_ms / 1000,
        give_up=row.give_up_ms / 1000,
    )


class DelegatedLeaves:
    def __init__(self, roster: Roster, grace_s: float) -> None:
        self.roster = roster
        self.grace_s = grace_s
        self.delayed_events: DelayedEvents | None = None
        self._jobs: dict[tuple[str, str], LeaveJob] = {}
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._stopped = False
        roster.listen(self._on_presence)

    async def start(self, delayed_events: DelayedEvents) -> None:
        """Take over the jobs of the previous run: nobody is connected any more, so those
        who were get :attr:`grace_s` to come back."""
        self.delayed_events = delayed_events
        now = time.time()
        for row in await DelegatedLeave.all():
            job = _from_row(row)
            job.bridge_restarted(now, self.grace_s)
            self._jobs[job.conference_id, job.identity] = job
            await _to_row(job).save()
        if self._jobs:
            log.info("Took over %d delegated leave events", len(self._jobs))
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop before the connections are closed at shutdown: those are no departures,
        and the jobs stay in the database as they are for the next run."""
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def delegate(
        self,
        *,
        conference_id: str,
        identity: str,
        legacy_identity: str,
        user_id: str,
        delay_id: str,
        delay_s: float | None,
    ) -> None:
        """Take over a delayed leave event; replaces an earlier one of the same member."""
        job = LeaveJob.new(
            conference_id=conference_id,
            identity=identity,
            legacy_identity=legacy_identity,
            user_id=user_id,
            delay_id=delay_id,
            delay_s=delay_s,
            connected=self._is_connected(conference_id, identity, legacy_identity),
            now=time.time(),
        )
        await _to_row(job).save()
        self._jobs[conference_id, identity] = job
        log.info("Took over the delayed leave event of %s (%s)", user_id, job.phase.value)
        self._wake.set()

    def _is_connected(
        self, conference_id: str, identity: str, legacy_identity: str, leaving: str = ""
    ) -> bool:
        """Whether the conference has a participant (other than ``leaving``) with either
        identity."""
        identities = (identity, legacy_identity)
        return any(
            participant_id != leaving and profile.identity in identities
            for _, participant_id, profile in self.roster.members(conference_id)
        )

    def _on_presence(self, event: Presence) -> None:
        profile = event.profile
        if self._stopped or not profile.identity:
            return
        now = time.time()
        for job in self._jobs.values():
            if job.conference_id != event.conference_id or not job.matches(profile.identity):
                continue
            if event.state is ParticipantState.DISCONNECTED:
                # A client replacing its own connection rejoins under the same identity.
                if self._is_connected(
                    job.conference_id, job.identity, job.legacy_identity, event.participant_id
                ):
                    continue
                job.disconnected(now)
            else:
                job.connected(now)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            now = time.time()
            for job in list(self._jobs.values()):
                try:
                    await self._step(job, now)
                except Exception:
                    log.exception("A delegated leave event of %s failed", job.user_id)
                    job.due = time.time() + RETRY_MAX_S  # not again at once (the database?)
                now = time.time()
            wait = min((job.due for job in self._jobs.values()), default=now + 3600) - now
            self._wake.clear()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _step(self, job: LeaveJob, now: float) -> None:
        phase = job.phase
        action = job.step(now)
        if action is None:
            if job.phase is not phase:
                await _to_row(job).save()
            return
        if action is Action.DROP:
            if job.phase is Phase.SENDING:
                log.warning("Gave up sending the leave event of %s", job.user_id)
            await self._forget(job)
            return
        assert self.delayed_events is not None
        answer = await self.delayed_events.act(job.delay_id, action.value)
        now = time.time()
        if self._jobs.get((job.conference_id, job.identity)) is not job:
            return  # replaced by a new delegation meanwhile
        keep = job.restarted(now, answer) if action is Action.RESTART else job.sent(now, answer)
        if keep:
            await _to_row(job).save()
            return
        if action is Action.SEND:
            log.info("Sent the delegated leave event of %s (%s)", job.user_id, answer.outcome)
        else:
            log.info("The delayed leave event of %s is gone (%s)", job.user_id, answer.outcome)
        await self._forget(job)

    async def _forget(self, job: LeaveJob) -> None:
        if self._jobs.get((job.conference_id, job.identity)) is job:
            del self._jobs[job.conference_id, job.identity]
        await _to_row(job).delete()
