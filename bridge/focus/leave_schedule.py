"""When to restart a delegated delayed leave event, and when to send it: the timing of one
delegation job, without I/O (``now`` is seconds since the epoch, the unit jobs are stored in,
so they keep their meaning across a restart of the bridge).

A client that delegates its delayed leave (MSC4140 event, MSC4195 delegation) stops
restarting it itself. While the SFU sees the participant, the bridge restarts the event well
before its delay runs out; when the participant goes, the bridge sends it at once, so the
others see the leave without waiting out the delay (an hour, with Element Call's relaxed
timings).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

RESTART_FRACTION = 0.75
"""Restart after this share of the delay: before 80 %, with room for a slow request."""
UNKNOWN_DELAY_RESTART_S = 300.0
"""The restart period when the client did not say its delay: Element Call's own period with
delegation, safe for any delay over six minutes (MSC4195 asks clients for an hour at least)."""
UNKNOWN_DELAY_S = 3600.0
"""How long an event of unknown delay is assumed to wait, to bound waiting and sending."""
MIN_RESTART_S = 1.0
DEPARTURE_GRACE_S = 2.0
"""A participant gone from the SFU is given this long to reappear before the leave is sent: a
client reconnecting replaces its old connection (leaving, then joining again) and is not
leaving the call."""
WAIT_FOR_CONNECT_MAX_S = 3600.0
RETRY_BASE_S = 1.0
RETRY_MAX_S = 60.0
SEND_WINDOW_MIN_S = 1.0
SEND_WINDOW_MAX_S = 3600.0


class Phase(StrEnum):
    WAITING = "waiting"
    """Delegated before the SFU has seen the participant."""
    CONNECTED = "connected"
    """On the SFU: the event is restarted periodically."""
    RECONNECTING = "reconnecting"
    """Just gone, or the bridge restarted (and its connections with it): the participant may
    come back."""
    SENDING = "sending"
    """Gone from the SFU: the leave is sent until it lands."""


class Action(StrEnum):
    RESTART = "restart"
    SEND = "send"
    DROP = "drop"
    """Nothing more to do: the homeserver's own timer takes care of the event."""


class Outcome(StrEnum):
    """How the homeserver answered a restart or send."""

    OK = "ok"
    NOT_FOUND = "not_found"
    """No such delayed event (any more): sent, cancelled or expired."""
    RETRY = "retry"
    """Rate limited, failed or unreachable: try again later."""


@dataclass(frozen=True)
class Answer:
    outcome: Outcome
    retry_after_s: float | None = None
    """What the homeserver asked for (HTTP 429 Retry-After, or ``retry_after_ms``)."""


def retry_delay(attempts: int, retry_after_s: float | None) -> float:
    """How long to wait before the next try: what the homeserver asked, else exponential."""
    if retry_after_s is not None:
        return max(retry_after_s, 0.0)
    return min(RETRY_BASE_S * 2 ** max(attempts - 1, 0), RETRY_MAX_S)


@dataclass
class LeaveJob:
    """One delegated delayed leave: one per participant identity in a conference (a new
    delegation replaces the old one, as MSC4195 asks)."""

    conference_id: str
    identity: str
    """The ``/get_token`` (hashed) identity of the member."""
    legacy_identity: str
    """The ``/sfu/get`` identity (``mxid:device``) the same client has with legacy tokens."""
    user_id: str
    delay_id: str
    delay_s: float | None
    phase: Phase
    due: float
    """When :meth:`step` next has something to do."""
    expires: float
    """When the homeserver sends the event by itself unless restarted (an estimate)."""
    give_up: float = 0.0
    """While sending: retry until then."""
    attempts: int = 0

    @classmethod
    def new(
        cls,
        *,
        conference_id: str,
        identity: str,
        legacy_identity: str,
        user_id: str,
        delay_id: str,
        delay_s: float | None,
        connected: bool,
        now: float,
    ) -> LeaveJob:
        expires = now + (delay_s if delay_s is not None else UNKNOWN_DELAY_S)
        job = cls(
            conference_id=conference_id,
            identity=identity,
            legacy_identity=legacy_identity,
            user_id=user_id,
            delay_id=delay_id,
            delay_s=delay_s,
            phase=Phase.WAITING,
            due=now + min(expires - now, WAIT_FOR_CONNECT_MAX_S),
            expires=expires,
        )
        if connected:
            job.connected(now)
        return job

    def matches(self, identity: str) -> bool:
        return identity in (self.identity, self.legacy_identity)

    @property
    def restart_period_s(self) -> float:
        if self.delay_s is None:
            return UNKNOWN_DELAY_RESTART_S
        return max(self.delay_s * RESTART_FRACTION, MIN_RESTART_S)

    def connected(self, now: float) -> None:
        """The SFU sees the participant: restart at once, then periodically."""
        if self.phase in (Phase.WAITING, Phase.RECONNECTING):
            self.phase = Phase.CONNECTED
            self.due = now
            self.attempts = 0

    def disconnected(self, now: float) -> None:
        """The participant left the SFU (hung up or vanished): unless it is back within
        :data:`DEPARTURE_GRACE_S`, send the leave, retrying while the event is still pending
        at the homeserver (at least a second, at most an hour)."""
        if self.phase is Phase.CONNECTED:
            self._await_return(now, DEPARTURE_GRACE_S)

    def bridge_restarted(self, now: float, grace_s: float) -> None:
        """Loaded after a restart, which cut every connection: a participant who was there
        has ``grace_s`` to come back before the leave is sent."""
        if self.phase is Phase.CONNECTED:
            self._await_return(now, grace_s)

    def step(self, now: float) -> Action | None:
        """What to do now, or None until :attr:`due`."""
        if now < self.due:
            return None
        if self.phase is Phase.WAITING:
            return Action.DROP
        if self.phase is Phase.CONNECTED:
            return Action.RESTART
        if self.phase is Phase.RECONNECTING:
            self._start_sending(now)
        return Action.SEND if now <= self.give_up else Action.DROP

    def restarted(self, now: float, answer: Answer) -> bool:
        """Record the answer to a restart; False if the job is over."""
        if answer.outcome is Outcome.NOT_FOUND:
            return False  # the client sent or cancelled it, or it expired: nothing to keep up
        if answer.outcome is Outcome.OK:
            self.attempts = 0
            self.expires = now + (self.delay_s if self.delay_s is not None else UNKNOWN_DELAY_S)
            self.due = now + self.restart_period_s
            return True
        self.attempts += 1
        self.due = now + retry_delay(self.attempts, answer.retry_after_s)
        return True

    def sent(self, now: float, answer: Answer) -> bool:
        """Record the answer to a send; False if the job is over (404 counts as sent)."""
        if answer.outcome is not Outcome.RETRY:
            return False
        self.attempts += 1
        self.due = now + retry_delay(self.attempts, answer.retry_after_s)
        return self.due <= self.give_up

    def _await_return(self, now: float, grace_s: float) -> None:
        self.phase = Phase.RECONNECTING
        self.due = now + grace_s
        self.attempts = 0

    def _start_sending(self, now: float) -> None:
        self.phase = Phase.SENDING
        self.due = now
        self.attempts = 0
        self.give_up = now + min(max(self.expires - now, SEND_WINDOW_MIN_S), SEND_WINDOW_MAX_S)
