"""Placement of conferences on media workers and nodes, with simulated load."""

from __future__ import annotations

from bridge.media.select import Load, least_loaded


def place(loads: dict[str, Load], conferences: int, participants_each: int) -> dict[str, int]:
    """Place conferences one after another as the bridge does between load reports: each
    placement counts on its worker until the next report."""
    placed = dict.fromkeys(loads, 0)
    for _ in range(conferences):
        key = least_loaded(list(loads.values()))
        assert key is not None
        placed[key] += 1
        load = loads[key]
        loads[key] = Load(
            key,
            load.participants,
            load.conferences,
            load.placed_since_report + 1,
            load.accepting,
            load.capacity,
        )
    return placed


def test_the_least_loaded_gets_the_conference_and_ties_go_to_the_first() -> None:
    assert least_loaded([Load("0", 10, 2), Load("1", 3, 1)]) == "1"
    assert least_loaded([Load("0", 0, 0), Load("1", 0, 0)]) == "0"


def test_a_burst_between_reports_is_spread() -> None:
    loads = {key: Load(key, 0, 0) for key in ("0", "1", "2", "3")}
    assert place(loads, 8, 10) == {"0": 2, "1": 2, "2": 2, "3": 2}


def test_a_busy_worker_gets_new_conferences_only_once_the_others_catch_up() -> None:
    loads = {"0": Load("0", 30, 3), "1": Load("1", 0, 0)}
    placed = place(loads, 40, 0)
    assert placed["1"] == 40 - placed["0"]
    assert placed["1"] >= 33  # 30 participants + 3 conferences of head start


def test_draining_starting_or_dead_workers_get_nothing() -> None:
    assert least_loaded([Load("0", 0, 0, accepting=False), Load("1", 50, 5)]) == "1"
    assert least_loaded([Load("0", 0, 0, accepting=False)]) is None
    assert least_loaded([]) is None


def test_capacity_weighs_bigger_nodes() -> None:
    """A 16-core node with 40 participants is less loaded than a 2-core one with 10."""
    assert least_loaded([Load("small", 10, 1, capacity=2), Load("big", 40, 4, capacity=16)]) == (
        "big"
    )
