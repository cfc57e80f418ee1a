"""Fleet health: a resource is down only when a quorum of nodes with a fresh view sees it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowdns.health.service import OBSERVATION_STALE, observe_and_combine
from shadowdns.store import open_store


@pytest.mark.parametrize(
    ("views", "quorum", "expected"),
    [
        ([("a", "down")], 0, "down"),  # one node: it is the majority
        ([("a", "down"), ("b", "up")], 0, "up"),  # one bad network does not fail over
        ([("a", "down"), ("b", "down")], 0, "down"),
        ([("a", "down"), ("b", "up"), ("c", "down")], 0, "down"),
        ([("a", "down"), ("b", "up"), ("c", "up")], 0, "up"),
        ([("a", "down"), ("b", "up")], 1, "down"),  # configured: one node is enough
        ([("a", "down"), ("b", "down"), ("c", "up")], 3, "up"),
    ],
)
def test_combined_state_follows_the_quorum(tmp_path: Path, views: list[tuple[str, str]],
                                           quorum: int, expected: str) -> None:
    """The shared state is down when at least `quorum` (default: a majority) see it down."""
    store = open_store(tmp_path / "s.db")
    try:
        for i, (node, state) in enumerate(views):
            observe_and_combine(store, node, "web-1", state, "test", quorum, now=1000.0 + i)
        assert {h.resource: h.state for h in store.health_states()} == {"web-1": expected}
    finally:
        store.close()


def test_a_dead_nodes_stale_view_drops_out(tmp_path: Path) -> None:
    """A node that stopped refreshing its view no longer counts."""
    store = open_store(tmp_path / "s.db")
    try:
        observe_and_combine(store, "a", "web-1", "down", "probe", now=1000.0)
        observe_and_combine(store, "b", "web-1", "down", "probe", now=1001.0)
        assert store.health_states()[0].state == "down"
        later = 1001.0 + OBSERVATION_STALE + 1
        changed = observe_and_combine(store, "b", "web-1", "up", "probe", now=later)
        assert changed and store.health_states()[0].state == "up"
    finally:
        store.close()
