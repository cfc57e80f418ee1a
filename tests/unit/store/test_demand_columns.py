"""DemandColumns: the columnar form of demand points the allocator reads at start."""

from __future__ import annotations

import numpy as np

from shadowdns.store.demand_columns import DemandColumns


def columns(points: dict[tuple[str, str], list[tuple[int, int]]]) -> DemandColumns:
    keys = list(points)
    owner = [i for i, k in enumerate(keys) for _ in points[k]]
    flat = [p for k in keys for p in points[k]]
    return DemandColumns(keys, np.array(owner, dtype=np.int64),
                         np.array([s for s, _ in flat], dtype=np.int64),
                         np.array([q for _, q in flat], dtype=np.int64))


A, B, C = ("a.", "eu"), ("b.", "eu"), ("c.", "na")


def test_batches_of_rows_become_points_with_kinds_summed() -> None:
    """(id, start, queries) rows ordered by start then id, in batches of any size: one
    point per (id, start), ids numbered in sorted order."""
    rows = [(7, 0, 1), (7, 0, 2), (9, 0, 5), (3, 60, 1), (7, 60, 4), (7, 60, 1)]
    for cut in range(len(rows) + 1):
        got, ids = DemandColumns.from_batches([rows[:cut], rows[cut:]])
        assert ids.tolist() == [3, 7, 9]
        named = got.with_keys([C, A, B])
        assert named.series() == {C: [(60, 1)], A: [(0, 3), (60, 5)], B: [(0, 5)]}


def test_no_rows_are_no_points() -> None:
    got, ids = DemandColumns.from_batches([])
    assert len(got) == 0 and not len(ids) and got.series() == {}


def test_then_joins_the_keys_and_keeps_every_point() -> None:
    older = columns({A: [(0, 1), (300, 2)], B: [(0, 4)]})
    newer = columns({C: [(600, 8)], A: [(600, 16)]})
    both = older.then(newer)
    assert both.keys == [A, B, C]
    assert both.series() == {A: [(0, 1), (300, 2), (600, 16)], B: [(0, 4)], C: [(600, 8)]}
    assert DemandColumns.empty().then(newer) is newer and older.then(DemandColumns.empty()) is older


def test_only_keeps_the_points_of_the_keys_asked_for() -> None:
    every = columns({A: [(0, 1)], B: [(0, 2), (60, 3)], C: [(0, 4)]})
    kept = every.only([C, A, ("zz.", "eu")])
    assert kept.keys == [A, C]
    assert kept.series() == {A: [(0, 1)], C: [(0, 4)]}
    assert kept.totals().tolist() == [1, 4]
    assert every.only(every.keys) is every
