"""Schema migrations: fresh databases, re-opening, upgrading, and refusing newer schemas."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from shadowdns.errors import StoreError
from shadowdns.store.base import DemandRow
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.store.sqlite_schema import MIGRATIONS, Migration

from .conftest import dump


def _versions(path: Path) -> list[tuple[int, float]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, applied_at FROM schema_version ORDER BY 1").fetchall()
    finally:
        conn.close()


def _tables(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {name for (name,) in rows}


def test_fresh_database_gets_every_table_wal_and_the_code_version(tmp_path: Path) -> None:
    """A new file is created in WAL mode with every table, at version len(MIGRATIONS)."""
    path = tmp_path / "sub" / "state.db"
    SQLiteStore(path).close()
    assert [v for v, _ in _versions(path)] == list(range(1, len(MIGRATIONS) + 1))
    assert {
        "schema_version",
        "zones",
        "series",
        "demand_minute",
        "demand_5m",
        "demand_hour",
        "locations",
        "location_distances",
        "resources",
        "dis",
        "di_resources",
        "allocations",
        "generation",
        "allocations_version",
        "forecasts",
        "model_choices",
        "health_state",
        "health_events",
        "api_tokens",
        "audit_log",
    } <= _tables(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reopening_an_up_to_date_database_changes_nothing(tmp_path: Path) -> None:
    """Opening a database already at the code's version writes nothing at all."""
    path = tmp_path / "state.db"
    with SQLiteStore(path) as store:
        store.bump_generation()
    before = dump(path)
    with SQLiteStore(path) as store:
        assert store.current_generation() == 1
    assert dump(path) == before


def test_pending_migrations_run_once_in_order(tmp_path: Path) -> None:
    """Upgrading runs only the migrations the database lacks, oldest first."""
    ran: list[str] = []

    def second(db: sqlite_utils.Database) -> None:
        ran.append("second")
        db.execute("INSERT INTO t (step) VALUES ('second')")

    first: Migration = "CREATE TABLE t (step TEXT); INSERT INTO t (step) VALUES ('first');"
    path = tmp_path / "state.db"
    SQLiteStore(path, migrations=[first]).close()
    SQLiteStore(path, migrations=[first, second]).close()
    SQLiteStore(path, migrations=[first, second]).close()
    assert ran == ["second"]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT step FROM t ORDER BY rowid").fetchall() == [
        ("first",),
        ("second",),
    ]
    conn.close()
    assert [v for v, _ in _versions(path)] == [1, 2]


@pytest.mark.parametrize(
    ("written_with", "opened_with"),
    [
        pytest.param(2, 1, id="two-migrations-opened-by-code-knowing-one"),
        pytest.param(len(MIGRATIONS) + 1, len(MIGRATIONS), id="real-schema-plus-one"),
    ],
)
def test_database_newer_than_the_code_is_refused(
    tmp_path: Path, written_with: int, opened_with: int
) -> None:
    """A schema version above the code's raises StoreError and leaves the file untouched."""
    migrations: list[Migration] = [*MIGRATIONS]
    while len(migrations) < written_with:
        migrations.append(f"CREATE TABLE extra_{len(migrations)} (x);")
    path = tmp_path / "state.db"
    SQLiteStore(path, migrations=migrations).close()
    before = dump(path)
    with pytest.raises(StoreError, match="newer"):
        SQLiteStore(path, migrations=migrations[:opened_with])
    assert dump(path) == before


def test_a_failing_migration_applies_nothing(tmp_path: Path) -> None:
    """When one pending migration fails, none of the batch (nor its version) is kept."""
    path = tmp_path / "state.db"
    good: Migration = "CREATE TABLE kept (x);"
    bad: Migration = "CREATE TABLE lost (x); INSERT INTO missing_table VALUES (1);"
    with pytest.raises(StoreError, match="migration failed"):
        SQLiteStore(path, migrations=[good, bad])
    assert "kept" not in _tables(path)
    assert "lost" not in _tables(path)
    assert "schema_version" not in _tables(path)


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    """Garbage on disk is reported as StoreError, not a raw sqlite3 exception."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(path)


def test_a_version_1_database_is_upgraded_keeping_its_data(tmp_path: Path) -> None:
    """Opening a database written before fleet mode adds the batch, change-generation and
    change-log tables and keeps every row."""
    path = tmp_path / "state.db"
    with SQLiteStore(path, migrations=MIGRATIONS[:1]) as old:
        old.bump_generation()
    with SQLiteStore(path) as store:
        assert store.current_generation() == 1
        assert store.change_generation() == 0
    assert {"demand_batches", "change_generation", "changes"} <= _tables(path)
    assert [v for v, _ in _versions(path)] == list(range(1, len(MIGRATIONS) + 1))


def test_a_version_5_database_gets_nodata_demand_and_keeps_its_rows(tmp_path: Path) -> None:
    """Migration 6 rebuilds the demand tables so they accept NODATA demand: the rows already
    stored (every resolution) stay, and so do the indexes reads rely on."""
    path = tmp_path / "state.db"
    t0 = 1_714_564_800
    with SQLiteStore(path, migrations=MIGRATIONS[:5]) as old:
        old.add_demand([DemandRow("app.", "EU", t0, "primary", 7)])
        old.rollup(t0 + 3600)
        with pytest.raises(StoreError, match="CHECK"):
            old.add_demand([DemandRow("app.", "EU", t0, "nodata", 1)])
    with SQLiteStore(path) as store:
        store.add_demand([DemandRow("app.", "EU", t0, "nodata", 2)])
        assert store.demand_series("minute", 0, t0 + 60) == {("app.", "EU"): [(t0, 9)]}
        for resolution in ("5m", "hour"):
            assert store.demand_series(resolution, 0, t0 + 3600) == {("app.", "EU"): [(t0, 7)]}
    conn = sqlite3.connect(path)
    try:
        indexes = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'demand_%'")}
    finally:
        conn.close()
    assert {"demand_minute_series", "demand_5m_series", "demand_hour_series"} <= indexes
