"""Allocations: lifecycle, uniqueness, the change version a server polls, and generations."""

from __future__ import annotations

import pytest

from shadowdns.errors import StoreError
from shadowdns.store.base import NewAllocation, Store

from .conftest import Backend

APP = "app.example.com."


def new(resource: str = "sb-1", region: str = "EU", **kwargs: object) -> NewAllocation:
    values: dict[str, object] = {"valid_from": 100.0, "generation": 1, "created_at": 90.0}
    values.update(kwargs)
    return NewAllocation(APP, resource, region, **values)  # type: ignore[arg-type]


def test_allocation_lifecycle_and_every_write_changes_the_version(store: Store) -> None:
    """warming -> ready -> draining -> released; each write moves allocations_version,
    reads don't, and a released allocation leaves the active list but stays in history."""
    versions = [store.allocations_version()]
    added = store.add_allocation(new(demand=12.5, reason="forecast", pinned=True))
    versions.append(store.allocations_version())
    assert (added.state, added.demand, added.pinned, added.reason) == (
        "warming",
        12.5,
        True,
        "forecast",
    )
    assert store.list_allocations() == [added]
    for state in ("ready", "draining", "released"):
        changed = store.set_allocation_state(added.id, state, valid_until=500.0)
        assert changed.state == state
        assert changed.valid_until == 500.0
        versions.append(store.allocations_version())
        store.list_allocations()
        assert store.allocations_version() == versions[-1]
    assert store.list_allocations() == []
    assert [a.state for a in store.list_allocations(active_only=False)] == ["released"]
    assert store.remove_allocation(added.id) == 1
    versions.append(store.allocations_version())
    assert versions == sorted(set(versions))  # strictly increasing
    assert store.list_allocations(active_only=False) == []


def test_allocations_version_is_seen_by_another_connection(backend: Backend) -> None:
    """A server polling its own store sees writes made by another process's store."""
    writer, poller = backend.open(), backend.open()
    seen = poller.allocations_version()
    writer.add_allocation(new())
    assert poller.allocations_version() != seen


def test_list_allocations_filters_by_di_and_activity(store: Store) -> None:
    """list_allocations(di=...) keeps one DI; active_only drops released ones."""
    a = store.add_allocation(new("sb-1"))
    b = store.add_allocation(NewAllocation("other.", "sb-1", "EU", 0.0, 1, 0.0))
    c = store.add_allocation(new("sb-2", state="released"))
    assert store.list_allocations(di=APP) == [a]
    assert store.list_allocations(active_only=False, di=APP) == [a, c]
    assert store.list_allocations() == [a, b]


@pytest.mark.parametrize(
    ("target", "removed", "left"),
    [
        pytest.param("by-id", 1, ["sb-2", "sb-1/released"], id="by-id"),
        pytest.param((APP, "sb-1", "EU"), 1, ["sb-2", "sb-1/released"], id="by-key-active-only"),
        pytest.param((APP, "sb-9", "EU"), 0, ["sb-1", "sb-2", "sb-1/released"], id="no-match"),
        pytest.param(10_000, 0, ["sb-1", "sb-2", "sb-1/released"], id="unknown-id"),
    ],
)
def test_remove_allocation_by_id_or_key(
    store: Store, target: object, removed: int, left: list[str]
) -> None:
    """Removing by id deletes that row; by (di, resource, region) deletes the active one."""
    first = store.add_allocation(new("sb-1"))
    store.add_allocation(new("sb-2"))
    store.add_allocation(new("sb-1", state="released"))
    key = first.id if target == "by-id" else target
    assert store.remove_allocation(key) == removed  # type: ignore[arg-type]
    names = [
        a.resource + ("/released" if a.state == "released" else "")
        for a in store.list_allocations(active_only=False)
    ]
    assert sorted(names) == sorted(left)


def test_a_second_active_allocation_of_a_key_is_refused_and_writes_nothing(
    store: Store, backend: Backend
) -> None:
    """One active allocation per (di, resource, region): a batch breaking it is refused
    whole; once the first is released the key may be allocated again."""
    first = store.add_allocation(new())
    before = backend.dump()
    with pytest.raises(StoreError):
        store.add_allocations([new("sb-2"), new()])
    assert backend.dump() == before
    store.set_allocation_state(first.id, "released")
    again = store.add_allocation(new())
    assert again.id != first.id


@pytest.mark.parametrize(
    ("allocation_id", "state", "error"),
    [
        pytest.param(12345, "ready", StoreError, id="unknown-id"),
        pytest.param(None, "gone", ValueError, id="unknown-state"),
    ],
)
def test_set_allocation_state_refuses_bad_input(
    store: Store, allocation_id: int | None, state: str, error: type[Exception]
) -> None:
    """Unknown ids and states are errors, not silent no-ops."""
    existing = store.add_allocation(new())
    with pytest.raises(error):
        store.set_allocation_state(allocation_id or existing.id, state)  # type: ignore[arg-type]
    assert store.list_allocations() == [existing]


def test_new_allocations_are_checked_on_construction() -> None:
    """A negative demand or an unknown state cannot even be expressed."""
    with pytest.raises(ValueError, match="demand"):
        new(demand=-1.0)
    with pytest.raises(ValueError, match="state"):
        new(state="on-fire")


def test_generations_count_up_and_persist(backend: Backend) -> None:
    """The generation starts at 0, each bump returns the next number, and it survives
    re-opening."""
    store = backend.open()
    assert store.current_generation() == 0
    assert [store.bump_generation() for _ in range(3)] == [1, 2, 3]
    store.close()
    assert backend.open().current_generation() == 3
