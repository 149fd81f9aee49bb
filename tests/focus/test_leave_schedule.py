"""The timing of delegated delayed leave events, with simulated time."""

from __future__ import annotations

import itertools

import pytest

from bridge.focus.leave_schedule import (
    DEPARTURE_GRACE_S,
    RETRY_MAX_S,
    UNKNOWN_DELAY_RESTART_S,
    Action,
    Answer,
    LeaveJob,
    Outcome,
    Phase,
    retry_delay,
)

T0 = 1_800_000_000.0
OK = Answer(Outcome.OK)
GONE = Answer(Outcome.NOT_FOUND)


def job(*, connected: bool = True, delay_s: float | None = 3600.0, now: float = T0) -> LeaveJob:
    return LeaveJob.new(
        conference_id="conf",
        identity="hashed",
        legacy_identity="@a:hs:DEV",
        user_id="@a:hs",
        delay_id="syd_x",
        delay_s=delay_s,
        connected=connected,
        now=now,
    )


def run_connected(leave: LeaveJob, until: float) -> list[float]:
    """Answer every restart with OK until ``until``, in quarter seconds; the restart times."""
    restarts = []
    now = T0
    while now <= until:
        if leave.step(now) is Action.RESTART:
            restarts.append(now)
            assert leave.restarted(now, OK)
        now += 0.25
    return restarts


@pytest.mark.parametrize("delay_s", [10.0, 60.0, 3600.0])
def test_restarts_at_once_then_before_80_percent_of_the_delay(delay_s: float) -> None:
    leave = job(delay_s=delay_s)
    restarts = run_connected(leave, T0 + 5 * delay_s)
    assert restarts[0] == T0
    gaps = [b - a for a, b in itertools.pairwise(restarts)]
    assert len(gaps) >= 5
    assert all(gap < 0.8 * delay_s for gap in gaps)


def test_unknown_delay_restarts_every_five_minutes() -> None:
    leave = job(delay_s=None)
    restarts = run_connected(leave, T0 + 3 * UNKNOWN_DELAY_RESTART_S)
    assert restarts == [T0 + i * UNKNOWN_DELAY_RESTART_S for i in range(4)]


def test_nothing_is_restarted_before_the_participant_is_seen() -> None:
    leave = job(connected=False, delay_s=600.0)
    assert leave.step(T0 + 599) is None
    # Never seen on the SFU: the homeserver's own timer sends the leave.
    assert leave.step(T0 + 600) is Action.DROP
    leave = job(connected=False, delay_s=600.0)
    leave.connected(T0 + 10)
    assert leave.step(T0 + 10) is Action.RESTART


def test_a_participant_who_goes_gets_the_leave_sent_unless_back_at_once() -> None:
    leave = job(delay_s=600.0)
    assert leave.step(T0) is Action.RESTART
    assert leave.restarted(T0, OK)
    leave.disconnected(T0 + 42)
    assert leave.step(T0 + 42) is None
    assert leave.step(T0 + 42 + DEPARTURE_GRACE_S) is Action.SEND
    assert leave.phase is Phase.SENDING
    assert not leave.sent(T0 + 42 + DEPARTURE_GRACE_S, OK)

    # A client replacing its connection leaves and joins again in a moment.
    leave = job(delay_s=600.0)
    assert leave.restarted(T0, OK)
    leave.disconnected(T0 + 42)
    leave.connected(T0 + 42.5)
    assert leave.step(T0 + 42.5) is Action.RESTART
    assert leave.phase is Phase.CONNECTED


def gone(leave: LeaveJob, now: float = T0) -> float:
    """The participant leaves at ``now``; when the leave is due to be sent."""
    leave.disconnected(now)
    assert leave.step(now + DEPARTURE_GRACE_S) is Action.SEND
    return now + DEPARTURE_GRACE_S


def test_404_on_send_counts_as_sent() -> None:
    leave = job()
    assert not leave.sent(gone(leave), GONE)


def test_404_on_restart_ends_the_job() -> None:
    leave = job()
    assert leave.step(T0) is Action.RESTART
    assert not leave.restarted(T0, GONE)


def test_429_waits_as_long_as_the_homeserver_asks() -> None:
    leave = job()
    now = gone(leave)
    assert leave.sent(now, Answer(Outcome.RETRY, retry_after_s=7.0))
    assert leave.step(now + 6.9) is None
    assert leave.step(now + 7) is Action.SEND
    assert not leave.sent(now + 7, OK)

    leave = job()
    assert leave.step(T0) is Action.RESTART
    assert leave.restarted(T0, Answer(Outcome.RETRY, retry_after_s=3.0))
    assert leave.step(T0 + 2.9) is None
    assert leave.step(T0 + 3) is Action.RESTART


def test_failures_back_off_exponentially_up_to_a_limit() -> None:
    assert [retry_delay(n, None) for n in range(1, 5)] == [1.0, 2.0, 4.0, 8.0]
    assert retry_delay(30, None) == RETRY_MAX_S
    assert retry_delay(30, 120.0) == 120.0


def test_sending_stops_once_the_homeserver_would_have_sent_it_anyway() -> None:
    leave = job(delay_s=20.0)
    assert leave.step(T0) is Action.RESTART
    assert leave.restarted(T0, OK)
    leave.disconnected(T0 + 5)  # the event is due at the homeserver at T0 + 20
    now = T0 + 5 + DEPARTURE_GRACE_S
    tries = 0
    while (action := leave.step(now)) is not Action.DROP and tries < 100:
        if action is Action.SEND:
            tries += 1
            if not leave.sent(now, Answer(Outcome.RETRY)):
                break
        now += 0.5
    assert 1 < tries < 10
    assert now <= T0 + 20 + RETRY_MAX_S


def test_after_a_bridge_restart_a_participant_has_the_grace_to_come_back() -> None:
    back = job()
    back.bridge_restarted(T0 + 100, grace_s=30)
    assert back.phase is Phase.RECONNECTING
    assert back.step(T0 + 110) is None
    back.connected(T0 + 110)
    assert back.step(T0 + 110) is Action.RESTART

    gone = job()
    gone.bridge_restarted(T0 + 100, grace_s=30)
    assert gone.step(T0 + 129) is None
    assert gone.step(T0 + 130) is Action.SEND
    assert gone.phase is Phase.SENDING


def test_a_job_still_waiting_for_the_participant_is_unchanged_by_a_bridge_restart() -> None:
    leave = job(connected=False, delay_s=600.0)
    leave.bridge_restarted(T0 + 100, grace_s=30)
    assert leave.phase is Phase.WAITING
    assert leave.step(T0 + 130) is None


def test_both_identities_of_a_member_match() -> None:
    leave = job()
    assert leave.matches("hashed")
    assert leave.matches("@a:hs:DEV")
    assert not leave.matches("@a:hs:OTHER")
