"""Demand counters: blocks per DI, drained as (DI, region, kind, queries) and zeroed."""

from __future__ import annotations

from shadowdns.resolver.counters import DemandCounters

REGIONS = ("eu", "na", "as")


def test_a_block_counts_each_region_under_its_kind() -> None:
    counters = DemandCounters()
    first = counters.block("a.example.", REGIONS, ("primary", "shadow", "primary"))
    counters.counts[first + 1] += 3
    counters.counts[first + 2] += 1
    assert sorted(counters.drain()) == [("a.example.", "as", "primary", 1),
                                        ("a.example.", "na", "shadow", 3)]
    assert counters.drain() == []
    assert counters.total() == 0


def test_the_same_di_and_kinds_reuse_their_block_and_new_kinds_get_another() -> None:
    counters = DemandCounters()
    first = counters.block("a.example.", REGIONS, ("primary",) * 3)
    assert counters.block("a.example.", REGIONS, ("primary",) * 3) == first
    other = counters.block("a.example.", REGIONS, ("shadow", "primary", "primary"))
    assert other != first
    counters.counts[first] += 1
    counters.counts[other] += 2
    assert sorted(counters.drain()) == [("a.example.", "eu", "primary", 1),
                                        ("a.example.", "eu", "shadow", 2)]


def test_many_blocks_drain_to_their_own_keys() -> None:
    counters = DemandCounters()
    firsts = [counters.block(f"d{i}.example.", REGIONS, ("primary",) * 3) for i in range(5000)]
    single = counters.block("s.example.", ("eu",), ("static",))
    for i, first in enumerate(firsts):
        if i % 7 == 0:
            counters.counts[first + i % 3] += i + 1
    counters.counts[single] += 9
    assert counters.total() == sum(i + 1 for i in range(0, 5000, 7)) + 9
    drained = counters.drain()
    expected = {(f"d{i}.example.", REGIONS[i % 3], "primary", i + 1) for i in range(0, 5000, 7)}
    assert set(drained) == expected | {("s.example.", "eu", "static", 9)}
    assert len(drained) == len(expected) + 1
    counters.block("late.example.", REGIONS, ("primary",) * 3)  # still growable after drain
    assert counters.total() == 0


def test_taken_counts_turn_into_rows_later_while_counting_goes_on() -> None:
    counters = DemandCounters()
    first = counters.block("a.example.", REGIONS, ("primary",) * 3)
    counters.counts[first + 2] += 4
    taken = counters.take()
    counters.counts[first + 2] += 1  # after the take: the next batch
    late = counters.block("late.example.", REGIONS, ("shadow",) * 3)
    counters.counts[late] += 2
    assert counters.rows(taken) == [("a.example.", "as", "primary", 4)]
    assert sorted(counters.drain()) == [("a.example.", "as", "primary", 1),
                                        ("late.example.", "eu", "shadow", 2)]
