"""Dynacast: per-track layer demand across subscribers, debounced, on simulated time."""

from __future__ import annotations

import pytest

from sfu.dynacast import Dynacast, QualityUpdate


def test_rises_are_announced_at_once_and_falls_after_the_delay() -> None:
    dyn = Dynacast(disable_delay=5.0)
    dyn.add_track("cam", 3, 0.0)
    dyn.set_layer("cam", "bob", 2, 0.0)
    dyn.set_layer("cam", "carol", 0, 0.0)
    assert dyn.poll(0.0) == []  # publishers start with every layer on

    dyn.set_layer("cam", "bob", 1, 10.0)  # bob's tile shrank
    assert dyn.poll(10.0) == []
    assert dyn.poll(14.9) == []
    assert dyn.poll(15.0) == [QualityUpdate("cam", 1, 3)]
    assert dyn.poll(16.0) == []

    dyn.set_layer("cam", "carol", 2, 20.0)
    assert dyn.poll(20.0) == [QualityUpdate("cam", 2, 3)]


def test_a_brief_fall_is_never_announced() -> None:
    dyn = Dynacast(disable_delay=5.0)
    dyn.add_track("cam", 3, 0.0)
    dyn.set_layer("cam", "bob", 2, 0.0)
    dyn.set_layer("cam", "bob", 0, 1.0)
    assert dyn.poll(3.0) == []
    dyn.set_layer("cam", "bob", 2, 4.0)
    assert dyn.poll(6.0) == []
    dyn.set_layer("cam", "bob", 1, 7.0)  # a new fall: a new wait
    assert dyn.poll(11.9) == []
    assert dyn.poll(12.0) == [QualityUpdate("cam", 1, 3)]


def test_a_fall_announces_the_demand_of_its_end() -> None:
    dyn = Dynacast(disable_delay=5.0)
    dyn.add_track("cam", 3, 0.0)
    dyn.set_layer("cam", "bob", 2, 0.0)
    dyn.set_layer("cam", "bob", 1, 1.0)
    dyn.set_layer("cam", "bob", 0, 3.0)
    assert dyn.poll(6.0) == [QualityUpdate("cam", 0, 3)]


def test_nobody_watching_disables_every_layer() -> None:
    dyn = Dynacast(disable_delay=5.0)
    dyn.add_track("cam", 3, 0.0)
    assert dyn.poll(4.9) == []
    update = dyn.poll(5.0)
    assert update == [QualityUpdate("cam", None, 3)]
    assert update[0].enabled == (False, False, False)

    dyn.set_layer("cam", "bob", 0, 8.0)
    (update,) = dyn.poll(8.0)
    assert update.enabled == (True, False, False)

    dyn.set_layer("cam", "bob", None, 9.0)  # paused for bandwidth, or unsubscribed
    dyn.set_layer("cam", "carol", 1, 10.0)
    (update,) = dyn.poll(10.0)
    assert update.enabled == (True, True, False)
    dyn.remove_subscriber("carol", 11.0)
    assert dyn.poll(15.9) == []
    assert dyn.poll(16.0) == [QualityUpdate("cam", None, 3)]


def test_tracks_are_independent_and_removed_ones_are_forgotten() -> None:
    dyn = Dynacast(disable_delay=5.0)
    dyn.add_track("cam-b", 3, 0.0)
    dyn.add_track("cam-c", 2, 0.0)
    dyn.set_layer("cam-b", "alice", 2, 0.0)
    dyn.set_layer("cam-c", "alice", 0, 0.0)
    assert dyn.poll(5.0) == [QualityUpdate("cam-c", 0, 2)]
    dyn.set_layer("cam-c", "alice", 5, 6.0)  # clamped to the layers the track has
    dyn.remove_track("cam-b")
    dyn.set_layer("cam-b", "alice", 0, 6.0)  # a late report about a removed track
    assert dyn.poll(6.0) == [QualityUpdate("cam-c", 1, 2)]
    assert dyn.poll(20.0) == []


def test_a_track_needs_a_layer() -> None:
    with pytest.raises(ValueError):
        Dynacast().add_track("cam", 0, 0.0)
