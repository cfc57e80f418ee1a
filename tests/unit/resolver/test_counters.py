"""Demand counters: blocks per DI, drained as (DI, region, kind, queries) and zeroed."""

from __future__ import annotations

from shadowdns.resolver.counters import DemandCounters, client_prefix

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


def test_the_prefix_cap_counts_each_prefix_up_to_the_cap_per_counter() -> None:
    """With a cap, a /24 (or /56) adds at most `cap` to one counter; other prefixes and
    other counters are counted on their own; what is held back is `capped`."""
    counters = DemandCounters(prefix_cap=3)
    first = counters.block("app.", ("eu", "us"), ("primary", "primary"))
    for host in range(10):
        counters.add(first, b"", (f"192.0.2.{host}", 53))  # one /24
    counters.add(first, b"", ("198.51.100.1", 53))
    counters.add(first + 1, b"", ("192.0.2.1", 53))
    for host in range(5):  # one /56, different /64s
        counters.add(first, b"", (f"2001:db8:0:{host}::1", 53))
    ecs = bytes([0, 1, 24, 0, 203, 0, 113])  # family 1, /24, scope 0, 203.0.113.0
    for _ in range(4):
        counters.add(first, ecs, ("192.0.2.1", 53))
    assert sorted(counters.drain()) == [("app.", "eu", "primary", 3 + 1 + 3 + 3),
                                        ("app.", "us", "primary", 1)]
    assert counters.capped == 7 + 2 + 1


def test_client_prefix_is_the_24_or_56() -> None:
    """IPv4 and v4-mapped sources by /24, IPv6 by /56, ECS by its family and subnet."""
    assert client_prefix(b"", ("192.0.2.77", 1)) == client_prefix(b"", ("192.0.2.1", 1))
    assert client_prefix(b"", ("192.0.2.77", 1)) != client_prefix(b"", ("192.0.3.77", 1))
    mapped = client_prefix(b"", ("::ffff:192.0.2.9", 1))
    assert mapped == client_prefix(b"", ("::ffff:192.0.2.10", 1))
    assert mapped != client_prefix(b"", ("::ffff:10.0.0.9", 1))
    assert client_prefix(b"", ("2001:db8:0:ff::1", 1)) == client_prefix(b"", ("2001:db8::1", 1))
    assert client_prefix(b"", ("2001:db8:0:100::1", 1)) != client_prefix(b"", ("2001:db8::1", 1))
    v6 = bytes([0, 2, 56, 0]) + bytes.fromhex("20010db8000001")
    assert client_prefix(v6, None) == bytes([0, 2]) + bytes.fromhex("20010db8000001")
