"""What only the PostgreSQL store does: migrations under an advisory lock, leader locks
shared by a fleet, LISTEN across nodes, and riding out lost sessions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shadowdns.errors import StoreError
from shadowdns.store import fleet
from shadowdns.store.base import DemandRow, HealthState
from shadowdns.store.postgres_schema import MIGRATIONS, Migration

from .conftest import Backend

pytest.importorskip("psycopg", reason="psycopg is not installed (extra: postgres)")

import psycopg

from shadowdns.store.postgres import PostgresStore

T0 = 1_714_564_800


@pytest.fixture
def opened(pg_url: str) -> Iterator[Callable[..., PostgresStore]]:
    """Open stores on a fresh, empty database; all are closed after the test."""
    stores: list[PostgresStore] = []

    def open_one(**options: Any) -> PostgresStore:
        store = PostgresStore(pg_url, **options)
        stores.append(store)
        return store

    yield open_one
    for store in stores:
        store.close()


def _sql(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode())
        return cur.fetchall() if cur.description else []


def _versions(url: str) -> list[int]:
    return [v for (v,) in _sql(url, "SELECT version FROM schema_version ORDER BY 1")]


def _tables(url: str) -> set[str]:
    return {t for (t,) in _sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_a_fresh_database_gets_the_whole_schema(pg_url: str, opened: Callable[..., Any]) -> None:
    """An empty database is migrated to the code's version with the same tables as SQLite."""
    opened()
    assert _versions(pg_url) == list(range(1, len(MIGRATIONS) + 1))
    assert {
        "series",
        "demand_minute",
        "demand_batches",
        "allocations",
        "allocations_version",
        "change_generation",
        "health_events",
        "audit_log",
    } <= _tables(pg_url)


def test_nodes_starting_together_migrate_once(pg_url: str, opened: Callable[..., Any]) -> None:
    """Four stores opening a fresh database at once all succeed; each migration ran once."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        try:
            barrier.wait()
            opened()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert _versions(pg_url) == list(range(1, len(MIGRATIONS) + 1))


def test_pending_migrations_run_once_in_order(pg_url: str, opened: Callable[..., Any]) -> None:
    """Upgrading runs only the missing migrations, oldest first."""
    ran: list[str] = []

    def second(conn: psycopg.Connection[Any]) -> None:
        ran.append("second")
        conn.execute("INSERT INTO t (step) VALUES ('second')")

    first: Migration = "CREATE TABLE t (step text); INSERT INTO t (step) VALUES ('first');"
    opened(migrations=[first]).close()
    opened(migrations=[first, second]).close()
    opened(migrations=[first, second]).close()
    assert ran == ["second"]
    assert _sql(pg_url, "SELECT step FROM t ORDER BY step") == [("first",), ("second",)]
    assert _versions(pg_url) == [1, 2]


def test_migration_5_admits_nodata_demand_and_keeps_rows(
        pg_url: str, opened: Callable[..., Any]) -> None:
    """A database from before NODATA demand keeps its rows and accepts the new kind."""
    old = opened(migrations=MIGRATIONS[:4])
    old.add_demand([DemandRow("app.", "EU", T0, "primary", 7)])
    with pytest.raises(StoreError, match="check"):
        old.add_demand([DemandRow("app.", "EU", T0, "nodata", 1)])
    old.close()
    store = opened()
    store.add_demand([DemandRow("app.", "EU", T0, "nodata", 2)])
    assert store.demand_series("minute", 0, T0 + 60) == {("app.", "EU"): [(T0, 9)]}


def test_a_newer_schema_is_refused(pg_url: str, opened: Callable[..., Any]) -> None:
    """A database migrated by newer code is not touched by older code."""
    opened(migrations=[*MIGRATIONS, "CREATE TABLE extra (x int);"]).close()
    with pytest.raises(StoreError, match="newer"):
        opened()


def test_a_failing_migration_applies_nothing(pg_url: str, opened: Callable[..., Any]) -> None:
    """DDL is transactional: a failed batch of migrations leaves no table and no version."""
    with pytest.raises(StoreError, match="migration failed"):
        opened(migrations=["CREATE TABLE kept (x int);", "INSERT INTO missing VALUES (1);"])
    assert _tables(pg_url) == set()


def test_the_leader_lock_is_exclusive_and_dies_with_its_holder(pg_backend: Backend) -> None:
    """One store of the fleet holds a name at a time; releasing or closing frees it."""
    a, b, c = pg_backend.open(), pg_backend.open(), pg_backend.open()
    assert a.try_leader_lock("control")
    assert not b.try_leader_lock("control")
    assert b.try_leader_lock("rollup")  # names are independent
    assert a.try_leader_lock("control")  # confirmed, still held
    a.release_leader_lock("control")
    assert b.try_leader_lock("control")
    assert not a.try_leader_lock("control")
    b.close()
    assert c.try_leader_lock("control")
    assert c.try_leader_lock("rollup")


def test_a_lost_leader_session_loses_the_lock(pg_backend: Backend) -> None:
    """When the holder's session dies, another node takes over and the old holder's next
    try reports that it no longer leads."""
    a, b = pg_backend.open(), pg_backend.open()
    assert a.try_leader_lock("control")
    pg_backend.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
    )
    assert b.try_leader_lock("control")
    assert not a.try_leader_lock("control")


def test_hand_written_sql_is_announced_like_store_writes(pg_backend: Backend) -> None:
    """The change triggers see every writer: an operator's UPDATE in psql bumps the
    generation once per transaction and notifies the table's channel."""
    store = pg_backend.open()
    store.set_health_state(HealthState("r1", "up", 1.0))
    with store.listen() as listener:
        pg_backend.execute(
            "BEGIN; UPDATE health_state SET state = 'down';"
            " UPDATE health_state SET reason = 'manual'; COMMIT;"
        )
        generation = store.change_generation()
        assert listener.poll(1.0) == [(fleet.HEALTH, str(generation))]
    assert generation == 2


def test_a_listener_reconnects_and_says_it_may_have_missed_changes(pg_backend: Backend) -> None:
    """After its session is killed, poll reconnects, returns ("channel", "") for each
    channel, and then receives notifications again."""
    store = pg_backend.open()
    with store.listen([fleet.HEALTH, fleet.POLICY]) as listener:
        pg_backend.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        )
        assert listener.poll(1.0) == [(fleet.HEALTH, ""), (fleet.POLICY, "")]
        store.set_health_state(HealthState("r1", "down", 1.0))
        assert listener.poll(1.0) == [(fleet.HEALTH, str(store.change_generation()))]


def test_the_store_reconnects_after_losing_its_session(pg_backend: Backend) -> None:
    """A killed session fails the call in flight; the next call uses a new connection."""
    store = pg_backend.open()
    store.bump_generation()
    pg_backend.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        store.bump_generation()
    except StoreError:
        pass
    assert store.bump_generation() in (2, 3)


def test_concurrent_flushes_and_rollups_count_every_query_once(pg_backend: Backend) -> None:
    """Nodes flushing demand while two others roll up: every query ends up exactly once
    in the hourly table."""
    stores = [pg_backend.open() for _ in range(4)]
    errors: list[BaseException] = []

    def flush(store: Any, node: int) -> None:
        for i in range(15):
            row = DemandRow("app.", "EU", T0 + 60 * (i % 5), "primary", 1)
            for _attempt in range(5):
                try:
                    store.add_demand([row], batch_id=f"{node}-{i}")
                    break
                except StoreError as exc:  # a deadlock victim retries its batch
                    errors.append(exc)

    def roll(store: Any) -> None:
        for i in range(15):
            store.rollup(T0 + 7200 + i)

    threads = [
        threading.Thread(target=flush, args=(stores[0], 0)),
        threading.Thread(target=flush, args=(stores[1], 1)),
        threading.Thread(target=roll, args=(stores[2],)),
        threading.Thread(target=roll, args=(stores[3],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    stores[0].rollup(T0 + 7200)
    assert stores[0].demand_series("hour", 0, T0 + 86400) == {("app.", "EU"): [(T0, 30)]}
    assert stores[0].demand_series("5m", 0, T0 + 86400) == {("app.", "EU"): [(T0, 30)]}
    assert len(errors) < 10
