"""The rise/fall state machine: streaks, overrides, readiness and the bounded log."""

from __future__ import annotations

import pytest

from shadowdns.health.state import HealthTracker


@pytest.mark.parametrize(
    ("results", "states"),
    [
        ("++", ["unknown", "up"]),
        ("---", ["unknown", "unknown", "down"]),
        ("++-+--", ["unknown", "up", "up", "up", "up", "up"]),  # fall=3: two fails keep it up
        ("++---", ["unknown", "up", "up", "up", "down"]),
        ("---+-++", ["unknown", "unknown", "down", "down", "down", "down", "up"]),
    ],
)
def test_streaks_move_the_state(results: str, states: list[str]) -> None:
    """rise=2 passes make it up, fall=3 failures down; only a full opposite streak flips."""
    tracker = HealthTracker("r", rise=2, fall=3)
    seen = []
    for ts, mark in enumerate(results):
        tracker.record(mark == "+", float(ts))
        seen.append(tracker.state)
    assert seen == states


def test_transitions_carry_time_and_reason_and_the_log_is_bounded() -> None:
    """Each change is one event with its timestamp; the log keeps the newest N."""
    tracker = HealthTracker("r", rise=1, fall=1, log_size=3)
    changes = [tracker.record(i % 2 == 0, float(i), f"probe {i}") for i in range(6)]
    assert all(c is not None for c in changes)
    first = changes[0]
    assert first is not None and (first.old, first.new, first.ts) == ("unknown", "up", 0.0)
    assert "probe 0" in first.reason
    assert [e.ts for e in tracker.events] == [3.0, 4.0, 5.0]
    assert tracker.since == 5.0


def test_override_fixes_the_effective_state() -> None:
    """up/down overrides win over the probes; obey goes back to what they say."""
    tracker = HealthTracker("r", rise=1, fall=1)
    tracker.record(False, 1.0)
    change = tracker.set_override("up", 2.0)
    assert change is not None and change.new == "up" and "override" in change.reason
    assert tracker.record(False, 3.0) is None and tracker.state == "up"
    back = tracker.set_override("obey", 4.0)
    assert back is not None and back.new == "down"


def test_ready_since_needs_rise_passes_after_the_allocation() -> None:
    """A shadow allocated at t is ready only after `rise` passes that started at or
    after t; a failure resets the streak."""
    tracker = HealthTracker("r", rise=2, fall=2)
    tracker.record(True, 1.0)
    tracker.record(True, 2.0)
    assert tracker.state == "up" and not tracker.ready_since(1.5)
    tracker.record(True, 3.0)
    assert tracker.ready_since(1.5)
    tracker.record(False, 4.0)
    tracker.record(True, 5.0)
    assert not tracker.ready_since(1.5)
    tracker.record(True, 6.0)
    assert tracker.ready_since(1.5)
