"""Demand time series: accumulation, rollups, retention, and reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from shadowdns.errors import StoreError
from shadowdns.kinds import ANSWER_KINDS
from shadowdns.store import sqlstore
from shadowdns.store.base import (
    DEMAND_KINDS,
    RESOLUTIONS,
    DemandKind,
    DemandRow,
    Retention,
    Store,
)
from shadowdns.store.sqlite import SQLiteStore

from .conftest import Backend

T0 = 1_714_564_800  # 2024-05-01T12:00:00Z, a whole hour
DI = "app.example.com."


def row(
    ts: int, queries: int, kind: DemandKind = "primary", di: str = DI, region: str = "EU"
) -> DemandRow:
    return DemandRow(di, region, ts, kind, queries)


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        pytest.param([[row(T0, 5)], [row(T0, 3)]], [(T0, 8)], id="two-batches-add"),
        pytest.param([[row(T0, 5), row(T0, 3)]], [(T0, 8)], id="same-key-in-one-batch-adds"),
        pytest.param([[row(T0 + 59, 2), row(T0 + 1, 1)]], [(T0, 3)], id="floored-to-minute"),
        pytest.param(
            [[row(T0, 2, "primary"), row(T0, 3, "shadow"), row(T0, 4, "fallback")]],
            [(T0, 9)],
            id="kinds-summed-on-read",
        ),
        pytest.param(
            [[row(T0 + 60, 1)], [row(T0, 7)]], [(T0, 7), (T0 + 60, 1)], id="read-in-time-order"
        ),
        pytest.param([[row(T0, 5)], [row(T0, 5)]], [(T0, 10)], id="not-idempotent"),
    ],
)
def test_add_demand_adds_to_stored_counts(
    store: Store, batches: list[list[DemandRow]], expected: list[tuple[int, int]]
) -> None:
    """add_demand ADDS queries to the minute bucket (it never replaces them)."""
    for batch in batches:
        store.add_demand(batch)
    assert store.demand_series("minute", 0, T0 + 3600) == {(DI, "EU"): expected}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"di": ""}, "empty"),
        ({"region": ""}, "empty"),
        ({"kind": "bogus"}, "kind"),
        ({"queries": -1}, "negative"),
        ({"bucket_start": -60}, "1970"),
    ],
)
def test_demand_rows_are_checked_on_construction(kwargs: dict[str, object], message: str) -> None:
    """A DemandRow that cannot be stored is refused when it is made."""
    values: dict[str, object] = {
        "di": DI,
        "region": "EU",
        "bucket_start": T0,
        "kind": "primary",
        "queries": 1,
    }
    values.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DemandRow(**values)  # type: ignore[arg-type]


def test_a_failed_add_demand_writes_nothing(store: Store, backend: Backend) -> None:
    """If any statement of add_demand fails, no minute, pending or series row is kept,
    and the store keeps working afterwards (no half-created series id is reused)."""
    store.add_demand([row(T0, 1)])
    backend.fail_inserts("demand_pending_5m", "queries", 666)
    before = backend.dump()
    with pytest.raises(StoreError, match="boom"):
        store.add_demand([row(T0, 2), row(T0, 666, region="NEW")])
    assert backend.dump() == before
    store.add_demand([row(T0 + 60, 4, region="NEW")])
    assert store.demand_series("minute", 0, T0 + 3600) == {
        (DI, "EU"): [(T0, 1)],
        (DI, "NEW"): [(T0 + 60, 4)],
    }


@pytest.mark.parametrize(
    ("now", "five_minute", "hour"),
    [
        pytest.param(T0 + 299, [], [], id="first-5m-bucket-still-open"),
        pytest.param(T0 + 300, [(T0, 3)], [], id="first-5m-bucket-complete"),
        pytest.param(T0 + 3599, [(T0, 3), (T0 + 300, 4)], [], id="last-5m-and-hour-open"),
        pytest.param(
            T0 + 3600,
            [(T0, 3), (T0 + 300, 4), (T0 + 3300, 5)],
            [(T0, 12)],
            id="hour-complete",
        ),
        pytest.param(
            T0 + 7200,
            [(T0, 3), (T0 + 300, 4), (T0 + 3300, 5), (T0 + 3600, 6)],
            [(T0, 12), (T0 + 3600, 6)],
            id="two-hours-complete",
        ),
    ],
)
def test_rollup_moves_only_complete_buckets(
    store: Store,
    now: int,
    five_minute: list[tuple[int, int]],
    hour: list[tuple[int, int]],
) -> None:
    """5-minute and hourly tables get a bucket only once it is complete at `now`."""
    store.add_demand(
        [
            row(T0, 1),
            row(T0 + 240, 2, "shadow"),
            row(T0 + 300, 4),
            row(T0 + 3300, 5),
            row(T0 + 3600, 6),
        ]
    )
    store.rollup(now)
    assert store.demand_series("5m", 0, T0 + 86400).get((DI, "EU"), []) == five_minute
    assert store.demand_series("hour", 0, T0 + 86400).get((DI, "EU"), []) == hour


def test_every_answer_kind_is_stored_and_rolled_up(store: Store) -> None:
    """Demand of each kind the resolver labels answers with (NODATA included) is written,
    rolled up and read back; the store's kinds are the resolver's."""
    assert DEMAND_KINDS == ANSWER_KINDS
    store.add_demand([row(T0, i + 1, kind) for i, kind in enumerate(DEMAND_KINDS)])
    store.rollup(T0 + 3600)
    total = sum(range(1, len(DEMAND_KINDS) + 1))
    for resolution in RESOLUTIONS:
        assert store.demand_series(resolution, 0, T0 + 3600) == {(DI, "EU"): [(T0, total)]}


DEMAND_TABLE_NAMES = ("demand_minute", "demand_5m", "demand_hour", "demand_pending_5m",
                      "demand_pending_hour")


def test_the_schema_accepts_exactly_the_answer_kinds(backend: Backend) -> None:
    """Every demand table's CHECK admits each kind of `shadowdns.kinds` and nothing else
    (a kind added there needs a migration, or the minute flush fails)."""
    backend.open().close()
    backend.execute("INSERT INTO series (id, di, region) VALUES (99, 'x.', 'EU');")
    for table in DEMAND_TABLE_NAMES:
        for i, kind in enumerate(DEMAND_KINDS):
            backend.execute(f"INSERT INTO {table} (bucket_start, series, kind, queries)"
                            f" VALUES ({T0 + 60 * i}, 99, '{kind}', 1);")
        with pytest.raises(Exception, match=r"(?i)check"):
            backend.execute(f"INSERT INTO {table} (bucket_start, series, kind, queries)"
                            f" VALUES ({T0}, 99, 'bogus', 1);")


def test_rollup_is_additive_and_counts_late_queries_once(store: Store) -> None:
    """Re-running rollup adds nothing; queries arriving late for a rolled-up bucket are
    added at the next rollup, even after their minute rows have expired."""
    store.add_demand([row(T0, 10)])
    store.rollup(T0 + 7200)
    store.rollup(T0 + 7200)
    store.apply_retention(T0 + 3 * 86400)  # minute rows of T0 are gone
    assert store.demand_series("minute", 0, T0 + 86400) == {}
    store.add_demand([row(T0 + 120, 5)])
    store.rollup(T0 + 3 * 86400)
    assert store.demand_series("5m", 0, T0 + 86400) == {(DI, "EU"): [(T0, 15)]}
    assert store.demand_series("hour", 0, T0 + 86400) == {(DI, "EU"): [(T0, 15)]}


@pytest.mark.parametrize(
    ("retention", "age", "kept"),
    [
        pytest.param(Retention(), 2 * 86400 - 3600, {"minute", "5m", "hour"}, id="young"),
        pytest.param(Retention(), 2 * 86400 + 3600, {"5m", "hour"}, id="past-minute"),
        pytest.param(Retention(), 60 * 86400 + 3600, {"hour"}, id="past-5m"),
        pytest.param(Retention(), 730 * 86400 + 3600, set(), id="past-hour"),
        pytest.param(
            Retention(minute=3600, five_minute=7200, hour=14400),
            2000,
            {"5m", "hour"},
            id="custom",
        ),
    ],
)
def test_apply_retention_drops_rows_older_than_each_resolution_keeps(
    backend: Backend, retention: Retention, age: int, kept: set[str]
) -> None:
    """Each resolution forgets buckets older than its own retention, and only those."""
    store = backend.open(retention=retention)
    store.add_demand([row(T0, 7)])
    store.rollup(T0 + 3600)
    store.apply_retention(T0 + 3600 + age)
    present = {res for res in RESOLUTIONS if store.demand_series(res, 0, T0 + 86400)}
    assert present == kept


def test_retention_must_be_positive() -> None:
    """A retention of zero or less is refused."""
    with pytest.raises(ValueError):
        Retention(minute=0)


@pytest.mark.parametrize(
    ("since", "until", "dis", "expected"),
    [
        pytest.param(
            T0,
            T0 + 180,
            None,
            {("a.", "EU"): [(T0, 1), (T0 + 120, 3)], ("b.", "NA"): [(T0 + 60, 2)]},
            id="all-series-gaps-absent",
        ),
        pytest.param(T0 + 60, T0 + 120, None, {("b.", "NA"): [(T0 + 60, 2)]}, id="half-open"),
        pytest.param(T0, T0 + 600, ["b."], {("b.", "NA"): [(T0 + 60, 2)]}, id="filter-dis"),
        pytest.param(T0, T0 + 600, [], {}, id="empty-filter"),
        pytest.param(T0, T0 + 600, ["zzz."], {}, id="unknown-di"),
    ],
)
def test_demand_series_reads_a_time_range(
    store: Store,
    since: int,
    until: int,
    dis: list[str] | None,
    expected: dict[tuple[str, str], list[tuple[int, int]]],
) -> None:
    """demand_series returns buckets with since <= start < until, missing buckets absent."""
    store.add_demand(
        [row(T0, 1, di="a."), row(T0 + 60, 2, di="b.", region="NA"), row(T0 + 120, 3, di="a.")]
    )
    assert store.demand_series("minute", since, until, dis) == expected


def test_demand_series_rejects_an_unknown_resolution(store: Store) -> None:
    """Only minute, 5m and hour exist."""
    with pytest.raises(ValueError, match="resolution"):
        store.demand_series("day", 0, 1)  # type: ignore[arg-type]


def test_demand_series_over_all_series_is_one_range_scan_without_sorting(
    tmp_path: Path,
) -> None:
    """The many-series read uses the time-leading primary key and needs no temporary sort
    (SQLite's plan)."""
    store = SQLiteStore(tmp_path / "state.db")
    store.add_demand([row(T0, 1)])
    statements: list[str] = []
    store._db.conn.set_trace_callback(statements.append)
    store.demand_series("5m", T0 - 14 * 86400, T0)
    store._db.conn.set_trace_callback(None)
    conn = sqlite3.connect(store.path)
    plan = " | ".join(detail for *_, detail in conn.execute("EXPLAIN QUERY PLAN " + statements[0]))
    conn.close()
    store.close()
    assert "USING PRIMARY KEY (bucket_start>? AND bucket_start<?)" in plan
    assert "TEMP B-TREE" not in plan


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        pytest.param(T0, [("a.", "EU"), ("b.", "NA")], id="both"),
        pytest.param(T0 + 61, [("b.", "NA")], id="minute-ending-after-since"),
        pytest.param(T0 + 180, [], id="none"),
    ],
)
def test_active_series_are_those_with_queries_since(
    store: Store, since: int, expected: list[tuple[str, str]]
) -> None:
    """A series is active when a minute with queries ends after `since`; zeros don't count."""
    store.add_demand(
        [row(T0, 1, di="a."), row(T0 + 120, 2, di="b.", region="NA"), row(T0 + 120, 0, di="z.")]
    )
    assert store.active_series(since) == expected


def test_kinds_split_across_read_batches_are_summed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read fetches rows in batches; one bucket's kinds that fall in two batches
    still come out as one point."""
    monkeypatch.setattr(sqlstore, "READ_BATCH", 2)
    store.add_demand([row(T0, 1, "primary"), row(T0, 2, "shadow"), row(T0, 4, "fallback"),
                      row(T0 + 60, 8), row(T0, 16, di="b.")])
    expected = {(DI, "EU"): [(T0, 7), (T0 + 60, 8)], ("b.", "EU"): [(T0, 16)]}
    assert store.demand_series("minute", T0, T0 + 120) == expected
    columns = store.demand_columns("minute", T0, T0 + 120)
    assert len(columns) == 3
    assert dict(zip(columns.keys, columns.totals().tolist(), strict=True)) == {
        (DI, "EU"): 15, ("b.", "EU"): 16}
