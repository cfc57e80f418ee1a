"""Fleet primitives on every backend: idempotent demand batches, the change generation,
change notifications, and the leader lock."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from shadowdns.errors import StoreError
from shadowdns.store import fleet
from shadowdns.store.base import (
    ApiToken,
    DemandRow,
    Forecast,
    ForecastPoint,
    HealthState,
    NewAllocation,
    Store,
    ZoneRecord,
)

from .conftest import ORIGIN, Backend, make_policy

T0 = 1_714_564_800
DI = "app.example.com."
TEST_CHANNEL = "shadowdns_test"


def rows(*queries: int) -> list[DemandRow]:
    return [DemandRow(DI, "EU", T0 + 60 * i, "primary", q) for i, q in enumerate(queries)]


def minutes(store: Store) -> list[tuple[int, int]]:
    return store.demand_series("minute", 0, T0 + 86400).get((DI, "EU"), [])


def alloc(resource: str = "sb-eu-1") -> NewAllocation:
    return NewAllocation(DI, resource, "EU", 0.0, 1, 0.0)


@pytest.mark.parametrize(
    ("batch_ids", "returned", "expected"),
    [
        pytest.param(["n1-1", "n1-1"], [2, 0], [(T0, 1), (T0 + 60, 2)], id="retry-skipped"),
        pytest.param(["n1-1", "n1-2"], [2, 2], [(T0, 2), (T0 + 60, 4)], id="other-id-counts"),
        pytest.param(["n1-1", None], [2, 2], [(T0, 2), (T0 + 60, 4)], id="no-id-counts"),
        pytest.param([None, None], [2, 2], [(T0, 2), (T0 + 60, 4)], id="no-id-twice-counts"),
    ],
)
def test_a_demand_batch_with_an_id_is_counted_once(
    store: Store, batch_ids: list[str | None], returned: list[int], expected: list[tuple[int, int]]
) -> None:
    """A batch whose id was applied before writes nothing and returns 0."""
    assert [store.add_demand(rows(1, 2), batch_id=b) for b in batch_ids] == returned
    assert minutes(store) == expected


def test_a_batch_id_is_seen_by_every_node(backend: Backend) -> None:
    """A retry through another connection (another node) is skipped too."""
    first, second = backend.open(), backend.open()
    assert first.add_demand(rows(5), batch_id="flush-7") == 1
    assert second.add_demand(rows(5), batch_id="flush-7") == 0
    assert minutes(second) == [(T0, 5)]


def test_a_failed_batch_is_not_recorded_and_can_be_retried(store: Store, backend: Backend) -> None:
    """A batch that fails writes neither its rows nor its id: the retry counts it."""
    backend.fail_inserts("demand_pending_5m", "queries", 666)
    with pytest.raises(StoreError, match="boom"):
        store.add_demand(rows(666), batch_id="b")
    backend.stop_failing("demand_pending_5m")
    assert store.add_demand(rows(666), batch_id="b") == 1
    assert minutes(store) == [(T0, 666)]


def test_batch_ids_are_forgotten_with_their_minute_buckets(store: Store) -> None:
    """Retention drops the ids of batches whose minutes it dropped, and only those."""
    store.add_demand(rows(1), batch_id="old")
    store.add_demand([DemandRow(DI, "EU", T0 + 3 * 86400, "primary", 1)], batch_id="new")
    store.apply_retention(T0 + 3 * 86400)
    assert store.add_demand(rows(1), batch_id="old") == 1
    assert store.add_demand(rows(1), batch_id="new") == 0


@pytest.mark.parametrize("batch_id", ["", "x" * 201])
def test_a_batch_id_must_be_usable(store: Store, batch_id: str) -> None:
    """Empty and overlong batch ids are refused before anything is written."""
    with pytest.raises(ValueError, match="batch_id"):
        store.add_demand(rows(1), batch_id=batch_id)
    assert minutes(store) == []


WRITES: list[tuple[str, Callable[[Store], object], str | None]] = [
    ("add-allocation", lambda s: s.add_allocation(alloc()), fleet.ALLOCATIONS),
    (
        "set-allocation-state",
        lambda s: s.set_allocation_state(s.list_allocations()[0].id, "ready"),
        fleet.ALLOCATIONS,
    ),
    (
        "remove-allocation",
        lambda s: s.remove_allocation(s.list_allocations()[0].id),
        fleet.ALLOCATIONS,
    ),
    ("health-change", lambda s: s.set_health_state(HealthState("r2", "up", 1.0)), fleet.HEALTH),
    ("policy", lambda s: s.replace_policy(ORIGIN, make_policy()), fleet.POLICY),
    ("zone", lambda s: s.upsert_zone(ZoneRecord(ORIGIN, None, 2, 1.0)), fleet.ZONES),
    ("health-unchanged", lambda s: s.set_health_state(HealthState("r1", "up", 9.0)), None),
    ("demand", lambda s: s.add_demand(rows(1)), None),
    ("rollup", lambda s: s.rollup(T0 + 7200), None),
    ("generation", lambda s: s.bump_generation(), None),
    (
        "forecast",
        lambda s: s.write_forecasts(
            [Forecast(DI, "EU", "5m", 1.0, "naive", (ForecastPoint(T0, 1.0, 2.0),))]
        ),
        None,
    ),
    ("token", lambda s: s.add_token(ApiToken("t", "n", "admin", "h", 1.0)), None),
    ("reads", lambda s: (s.list_allocations(), s.health_states(), s.list_zones()), None),
]


@pytest.mark.parametrize(
    ("write", "channel"), [pytest.param(w, c, id=name) for name, w, c in WRITES]
)
def test_writes_that_change_answers_bump_the_generation_and_notify(
    backend: Backend, write: Callable[[Store], object], channel: str | None
) -> None:
    """Allocation, health, policy and zone writes bump change_generation once and announce
    the new value on their channel, to a listener on another connection; other writes
    and reads do neither."""
    store = backend.open()
    store.add_allocation(alloc("sb-0"))
    store.set_health_state(HealthState("r1", "up", 1.0))
    with backend.open().listen() as listener:
        before = store.change_generation()
        write(store)
        after = store.change_generation()
        changes = listener.poll(1.0 if channel else 0.2)
    if channel is None:
        assert (after, changes) == (before, [])
    else:
        assert after == before + 1
        assert changes == [(channel, str(after))]


def test_notify_change_reaches_listeners_of_that_channel_only(backend: Backend) -> None:
    """An explicit notification arrives (within a second) at every listener of its channel,
    on another connection, and not at listeners of other channels."""
    sender, receiver = backend.open(), backend.open()
    with receiver.listen([TEST_CHANNEL]) as wanted, receiver.listen([fleet.HEALTH]) as other:
        assert wanted.channels == (TEST_CHANNEL,)
        start = time.monotonic()
        sender.notify_change(TEST_CHANNEL, "reload zones")
        assert wanted.poll(1.0) == [(TEST_CHANNEL, "reload zones")]
        assert time.monotonic() - start < 1.0
        assert other.poll(0.0) == []
        assert wanted.poll(0.0) == []


def test_a_listener_gets_nothing_sent_before_it_opened_and_times_out(store: Store) -> None:
    """Only notifications sent after `listen` arrive; an idle poll returns [] after its
    timeout."""
    store.notify_change(TEST_CHANNEL, "early")
    with store.listen([TEST_CHANNEL]) as listener:
        start = time.monotonic()
        assert listener.poll(0.3) == []
        assert 0.25 <= time.monotonic() - start < 2.0
        store.notify_change(TEST_CHANNEL, "a")
        store.notify_change(TEST_CHANNEL, "b")
        got = listener.poll(1.0)
        if len(got) < 2:
            got += listener.poll(1.0)
        assert got == [(TEST_CHANNEL, "a"), (TEST_CHANNEL, "b")]


def test_a_failed_write_notifies_nobody(store: Store) -> None:
    """A write that rolls back neither bumps the generation nor notifies."""
    store.add_allocation(alloc())
    with store.listen() as listener:
        before = store.change_generation()
        with pytest.raises(StoreError):
            store.add_allocations([alloc("sb-2"), alloc()])
        assert listener.poll(0.3) == []
    assert store.change_generation() == before


@pytest.mark.parametrize(
    ("channel", "payload"),
    [("", "x"), ("c" * 64, "x"), (TEST_CHANNEL, "p" * 8000), (TEST_CHANNEL, "nul\x00")],
)
def test_unusable_channels_and_payloads_are_refused(
    store: Store, channel: str, payload: str
) -> None:
    """Channel names longer than an identifier and payloads over 8000 bytes are errors."""
    with pytest.raises(ValueError):
        store.notify_change(channel, payload)


def test_a_single_store_can_take_and_release_a_leader_lock(store: Store) -> None:
    """Taking a free lock succeeds, re-taking it confirms it, releasing is idempotent."""
    assert store.try_leader_lock("control")
    assert store.try_leader_lock("control")
    store.release_leader_lock("control")
    store.release_leader_lock("control")
    assert store.try_leader_lock("control")
