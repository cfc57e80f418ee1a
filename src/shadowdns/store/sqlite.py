"""The default store: one SQLite file in WAL mode, through sqlite-utils.

One `SQLiteStore` holds one connection guarded by a lock, so it may be shared by threads;
each process opens its own. Writes take the write lock up front (`BEGIN IMMEDIATE`) so
concurrent writers queue on the busy timeout instead of failing half-way; readers in other
processes are never blocked (WAL).

Fleet primitives are single-node versions: changes are appended to a short log (`changes`)
that `SQLiteListener` polls, and every leader lock is granted (one node is the only node).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import dns.name
import sqlite_utils

from shadowdns.errors import StoreError
from shadowdns.store.base import (
    ALLOCATION_STATES,
    RESOLUTION_SECONDS,
    RESOLUTIONS,
    Allocation,
    AllocationKey,
    AllocationState,
    ApiToken,
    AuditEntry,
    ConfigFile,
    DemandRow,
    Forecast,
    ForecastPoint,
    HealthEvent,
    HealthState,
    HealthStatus,
    ModelChoice,
    NewAllocation,
    Resolution,
    Retention,
    SeriesKey,
    StandbyCandidate,
    ZoneRecord,
    bucket_start,
    check_config_file,
)
from shadowdns.store.fleet import (
    ALLOCATIONS,
    CHANNELS,
    CONFIG,
    HEALTH,
    POLICY,
    ZONES,
    Change,
    check_batch_id,
    check_channel,
    check_payload,
)
from shadowdns.store.policy_rows import policy_rows
from shadowdns.store.sqlite_schema import MIGRATIONS, Migration, migrate
from shadowdns.zones.policy import Policy

_DEMAND_TABLES: Mapping[Resolution, str] = {
    "minute": "demand_minute",
    "5m": "demand_5m",
    "hour": "demand_hour",
}

# (pending table, table it completes into, next pending table or None, bucket size)
_ROLLUPS: tuple[tuple[Resolution, str, str, str | None], ...] = (
    ("5m", "demand_pending_5m", "demand_5m", "demand_pending_hour"),
    ("hour", "demand_pending_hour", "demand_hour", None),
)

_ADD_DEMAND_SQL = """
INSERT INTO {table} (bucket_start, series, kind, queries) VALUES (?, ?, ?, ?)
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = queries + excluded.queries
"""

_MOVE_DEMAND_SQL = """
INSERT INTO {dst} (bucket_start, series, kind, queries)
SELECT (bucket_start / {size}) * {size}, series, kind, SUM(queries) FROM {src}
WHERE bucket_start <= ? GROUP BY 1, 2, 3
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = queries + excluded.queries
"""

_ALLOCATION_COLUMNS = (
    "id, di, resource, region, state, valid_from, valid_until, generation, reason, demand,"
    " pinned, created_at"
)

_STANDBY_SQL = """
WITH d AS (SELECT name, zone, standby_within_km FROM dis WHERE name = :di),
near AS (
    SELECT ld.b AS location, ld.km FROM d
    JOIN location_distances ld ON ld.zone = d.zone AND ld.a = :location
    WHERE ld.km <= :km
),
pool AS (
    SELECT r.id, r.location, r.capacity FROM d
    JOIN di_resources dr ON dr.di = d.name AND dr.role = 'standby'
    JOIN resources r ON r.zone = d.zone AND r.id = dr.resource
    UNION
    SELECT r.id, r.location, r.capacity FROM d
    JOIN resources r ON r.zone = d.zone AND r.role = 'standby'
    JOIN near ON near.location = r.location
    WHERE d.standby_within_km IS NOT NULL AND near.km <= d.standby_within_km
)
SELECT pool.id, pool.location, near.km, pool.capacity,
    COALESCE((SELECT SUM(a.demand) FROM allocations a
              WHERE a.resource = pool.id AND a.state != 'released'), 0.0)
FROM pool JOIN near ON near.location = pool.location
ORDER BY near.km, pool.id
"""


def _allocation(row: Sequence[Any]) -> Allocation:
    return Allocation(
        id=row[0],
        di=row[1],
        resource=row[2],
        region=row[3],
        state=row[4],
        valid_from=row[5],
        valid_until=row[6],
        generation=row[7],
        reason=row[8],
        demand=row[9],
        pinned=bool(row[10]),
        created_at=row[11],
    )


_CHANGE_LOG_LENGTH = 1000
"""Notifications kept for SQLite listeners; a listener further behind misses the oldest."""


def _demand_table(resolution: Resolution) -> str:
    try:
        return _DEMAND_TABLES[resolution]
    except KeyError:
        raise ValueError(f"resolution {resolution!r} is not one of {RESOLUTIONS}") from None


class SQLiteStore:
    """`Store` on a SQLite file (created with its directory if missing).

    `retention` sets how long each demand resolution is kept; health events beyond the
    newest `health_event_limit` are dropped as new ones arrive. `migrations` exists for
    tests: it defaults to the schema this code knows.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: Retention | None = None,
        health_event_limit: int = 10_000,
        timeout: float = 10.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self.retention = retention or Retention()
        self.health_event_limit = health_event_limit
        self._lock = threading.RLock()
        self._series_cache: dict[SeriesKey, int] = {}
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from exc
        try:
            self._db = sqlite_utils.Database(conn, execute_plugins=False)
            self._db.enable_wal()
            conn.execute("PRAGMA synchronous = NORMAL")
            migrate(self._db, migrations, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    # plumbing

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything inside commits together or not at all."""
        with self._lock:
            conn = self._db.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot start a transaction: {exc}") from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    # zones

    def upsert_zone(self, zone: ZoneRecord) -> None:
        """Record (or replace) the metadata of one zone."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO zones (origin, file, serial, loaded_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (origin) DO UPDATE SET file = excluded.file,"
                " serial = excluded.serial, loaded_at = excluded.loaded_at",
                (zone.origin, zone.file, zone.serial, zone.loaded_at),
            )
            self._changed(conn, ZONES)

    def list_zones(self) -> list[ZoneRecord]:
        rows = self._read("SELECT origin, file, serial, loaded_at FROM zones ORDER BY origin")
        return [ZoneRecord(*row) for row in rows]

    # zone and policy files shared by a fleet

    def put_config_file(self, origin: str, kind: str, text: str, now: float | None = None) -> bool:
        """Store the text of zone `origin`'s file of `kind`; True if it changed.

        A change bumps the change generation and notifies `CONFIG` with `origin`, in the
        same transaction; the text already stored writes nothing and returns False.
        """
        check_config_file(origin, kind, text)
        updated_at = time.time() if now is None else now
        with self._write() as conn:
            written = conn.execute(
                "INSERT INTO config_files (origin, kind, text, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (origin, kind) DO UPDATE SET text = excluded.text,"
                " updated_at = excluded.updated_at WHERE text IS NOT excluded.text"
                " RETURNING 1",
                (origin, kind, text, updated_at),
            ).fetchall()
            if written:
                self._changed(conn, CONFIG, origin)
        return bool(written)

    def delete_config_file(self, origin: str, kind: str) -> bool:
        """Forget zone `origin`'s file of `kind`; True (bump and notify) if there was one."""
        check_config_file(origin, kind)
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM config_files WHERE origin = ? AND kind = ?", (origin, kind)
            )
            if cursor.rowcount:
                self._changed(conn, CONFIG, origin)
            return cursor.rowcount > 0

    def config_files(self) -> list[ConfigFile]:
        """Every shared zone and policy file, ordered by (origin, kind)."""
        rows = self._read(
            "SELECT origin, kind, text, updated_at FROM config_files ORDER BY origin, kind"
        )
        return [ConfigFile(*row) for row in rows]

    # demand

    def _series_ids(
        self, conn: sqlite3.Connection, keys: Iterable[SeriesKey]
    ) -> dict[SeriesKey, int]:
        """Ids of these series, creating rows for new ones (inside the caller's transaction).

        Ids are cached only by the caller after its commit: a rolled-back id is not real.
        """
        ids: dict[SeriesKey, int] = {}
        missing: list[SeriesKey] = []
        for key in keys:
            known = self._series_cache.get(key)
            if known is None:
                missing.append(key)
            else:
                ids[key] = known
        if missing:
            conn.executemany(
                "INSERT INTO series (di, region) VALUES (?, ?) ON CONFLICT DO NOTHING", missing
            )
            for key in missing:
                row = conn.execute(
                    "SELECT id FROM series WHERE di = ? AND region = ?", key
                ).fetchone()
                ids[key] = int(row[0])
        return ids

    def add_demand(self, rows: Iterable[DemandRow], *, batch_id: str | None = None) -> int:
        """ADD each row's queries to its minute bucket, in one transaction.

        Rows are floored to the minute and summed per (di, region, minute, kind) first;
        returns the number of minute rows touched. Without `batch_id`, writing a batch
        twice counts it twice. With one, the id is recorded with the rows, and a batch
        whose id is already recorded writes nothing and returns 0. The 5-minute and
        hourly tables see these queries after `rollup`.
        """
        check_batch_id(batch_id)
        minute: dict[tuple[int, SeriesKey, str], int] = {}
        seen: dict[SeriesKey, tuple[int, int]] = {}
        for row in rows:
            start = bucket_start(row.bucket_start, "minute")
            series = (row.di, row.region)
            key = (start, series, row.kind)
            minute[key] = minute.get(key, 0) + row.queries
            if row.queries > 0:
                first, last = seen.get(series, (start, start))
                seen[series] = (min(first, start), max(last, start))
        if not minute:
            return 0
        pending: dict[tuple[int, SeriesKey, str], int] = {}
        for (start, series, kind), queries in minute.items():
            key5 = (bucket_start(start, "5m"), series, kind)
            pending[key5] = pending.get(key5, 0) + queries
        with self._write() as conn:
            if batch_id is not None:
                cursor = conn.execute(
                    "INSERT INTO demand_batches (batch_id, last_bucket, applied_at)"
                    " VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (batch_id, max(start for start, _, _ in minute), time.time()),
                )
                if cursor.rowcount == 0:
                    return 0
            ids = self._series_ids(conn, {series for _, series, _ in minute})
            conn.executemany(
                _ADD_DEMAND_SQL.format(table="demand_minute"),
                [(start, ids[s], kind, q) for (start, s, kind), q in minute.items()],
            )
            conn.executemany(
                _ADD_DEMAND_SQL.format(table="demand_pending_5m"),
                [(start, ids[s], kind, q) for (start, s, kind), q in pending.items()],
            )
            conn.executemany(
                "UPDATE series SET first_seen = MIN(COALESCE(first_seen, ?1), ?1),"
                " last_seen = MAX(COALESCE(last_seen, ?2), ?2) WHERE id = ?3",
                [(first, last, ids[s]) for s, (first, last) in seen.items()],
            )
        self._series_cache.update(ids)
        return len(minute)

    def rollup(self, now: float) -> dict[Resolution, int]:
        """Add every bucket complete at `now` to the 5-minute and hourly tables.

        A 5-minute (hourly) bucket is complete once `bucket_start + 300 (3600) <= now`; a
        bucket still open stays pending, so the coarse tables never hold partial buckets.
        Late queries for an already rolled-up bucket are added at the next rollup. Returns
        the rows written per resolution.
        """
        written: dict[Resolution, int] = {}
        with self._write() as conn:
            for resolution, src, dst, nxt in _ROLLUPS:
                size = RESOLUTION_SECONDS[resolution]
                cut = (now - size,)
                cursor = conn.execute(_MOVE_DEMAND_SQL.format(dst=dst, src=src, size=size), cut)
                written[resolution] = cursor.rowcount
                if nxt is not None:
                    conn.execute(_MOVE_DEMAND_SQL.format(dst=nxt, src=src, size=3600), cut)
                conn.execute(f"DELETE FROM {src} WHERE bucket_start <= ?", cut)
        return written

    def apply_retention(self, now: float) -> dict[Resolution, int]:
        """Delete buckets older than the retention of their resolution; returns rows deleted.

        Series rows stay (their ids are permanent); `active_series` ignores old ones. Ids of
        applied demand batches are forgotten with the minute buckets they wrote.
        """
        deleted: dict[Resolution, int] = {}
        with self._write() as conn:
            for resolution, table in _DEMAND_TABLES.items():
                cutoff = now - self.retention.seconds(resolution)
                cursor = conn.execute(f"DELETE FROM {table} WHERE bucket_start < ?", (cutoff,))
                deleted[resolution] = cursor.rowcount
            conn.execute(
                "DELETE FROM demand_batches WHERE last_bucket < ?",
                (now - self.retention.seconds("minute"),),
            )
        return deleted

    def demand_series(
        self,
        resolution: Resolution,
        since: float,
        until: float,
        dis: Iterable[str] | None = None,
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """Queries per bucket (all kinds summed) for buckets starting in [since, until).

        Returns {(di, region): [(bucket_start, queries), ...]} in time order, for every series
        with at least one stored bucket in range (only those of `dis` when given). Buckets
        without a row are absent and mean zero queries: the reader fills them if it needs a
        dense series.
        """
        table = _demand_table(resolution)
        # Rows of one (bucket, series) differ only by kind and come out adjacent in this
        # order; summing them here is much cheaper than GROUP BY.
        sql = f"SELECT series, bucket_start, queries FROM {table} WHERE "
        params: list[Any] = []
        if dis is not None:
            sql += "series IN (SELECT id FROM series WHERE di IN (SELECT value FROM json_each(?)))"
            sql += " AND "
            params.append(json.dumps(sorted(set(dis))))
        sql += "bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start, series"
        params += [since, until]
        by_id: dict[int, list[tuple[int, int]]] = {}
        with self._lock:
            try:
                for series, start, queries in self._db.conn.execute(sql, params):
                    points = by_id.get(series)
                    if points is None:
                        by_id[series] = [(start, queries)]
                    elif points[-1][0] == start:
                        points[-1] = (start, points[-1][1] + queries)
                    else:
                        points.append((start, queries))
                names = self._db.conn.execute(
                    "SELECT id, di, region FROM series"
                    " WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(by_id)),),
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
        key_of = {series: (di, region) for series, di, region in names}
        return {key_of[series]: points for series, points in by_id.items()}

    def active_series(self, since: float) -> list[SeriesKey]:
        """Series that had at least one query in a minute ending after `since`, sorted."""
        rows = self._read(
            "SELECT di, region FROM series WHERE last_seen > ? ORDER BY di, region",
            (since - RESOLUTION_SECONDS["minute"],),
        )
        return [(di, region) for di, region in rows]

    # policy graph

    def replace_policy(self, origin: str, policy: Policy) -> None:
        """Replace zone `origin`'s locations, resources and DIs with `policy`, atomically.

        `origin` is absolute text and must name `policy.origin`. Distances between every
        pair of the zone's locations are computed here (great circle, 6371 km radius).
        Other zones are untouched; a DI name already owned by another zone is an error.
        """
        if dns.name.from_text(origin) != policy.origin:
            raise ValueError(f"origin {origin} does not match policy origin {policy.origin}")
        rows = policy_rows(origin, policy)
        with self._write() as conn:
            conn.execute(
                "DELETE FROM di_resources WHERE di IN (SELECT name FROM dis WHERE zone = ?)",
                (origin,),
            )
            for table in ("dis", "resources", "locations", "location_distances"):
                conn.execute(f"DELETE FROM {table} WHERE zone = ?", (origin,))
            for table, table_rows in (
                ("locations", rows.locations),
                ("location_distances", rows.location_distances),
                ("resources", rows.resources),
                ("dis", rows.dis),
                ("di_resources", rows.di_resources),
            ):
                if table_rows:
                    self._db.table(table).insert_all(table_rows)
            self._changed(conn, POLICY)

    def location_distances(self, origin: str) -> dict[tuple[str, str], float]:
        """Great-circle km between every ordered pair of zone `origin`'s locations."""
        rows = self._read("SELECT a, b, km FROM location_distances WHERE zone = ?", (origin,))
        return {(a, b): km for a, b, km in rows}

    def standby_within(self, di: str, location: str, km: float) -> list[StandbyCandidate]:
        """Standby resources of `di`'s pool within `km` of `location`, nearest first.

        The pool is the DI's listed standby resources, plus, when the DI has a
        `standby_within_km` selector, every standby resource of its zone within that
        distance of `location`. `load` sums the demand of the resource's non-released
        allocations (over all DIs: a resource id names one machine). An unknown DI or
        location gives an empty list.
        """
        rows = self._read(_STANDBY_SQL, {"di": di, "location": location, "km": km})
        return [StandbyCandidate(*row) for row in rows]

    # allocations and generations

    def add_allocation(self, allocation: NewAllocation) -> Allocation:
        return self.add_allocations([allocation])[0]

    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]:
        """Write the allocations in one transaction; a second active allocation with the
        same (di, resource, region) is an error and writes nothing."""
        added: list[Allocation] = []
        with self._write() as conn:
            for a in allocations:
                row = conn.execute(
                    f"INSERT INTO allocations ({_ALLOCATION_COLUMNS})"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    f" RETURNING {_ALLOCATION_COLUMNS}",
                    (
                        a.di,
                        a.resource,
                        a.region,
                        a.state,
                        a.valid_from,
                        a.valid_until,
                        a.generation,
                        a.reason,
                        a.demand,
                        int(a.pinned),
                        a.created_at,
                    ),
                ).fetchone()
                added.append(_allocation(row))
            if added:
                self._changed(conn, ALLOCATIONS)
        return added

    def list_allocations(self, active_only: bool = True, di: str | None = None) -> list[Allocation]:
        """Allocations by id; `active_only` leaves out released ones."""
        sql = f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE 1"
        params: list[Any] = []
        if active_only:
            sql += " AND state != 'released'"
        if di is not None:
            sql += " AND di = ?"
            params.append(di)
        return [_allocation(row) for row in self._read(sql + " ORDER BY id", params)]

    def remove_allocation(self, target: int | AllocationKey) -> int:
        """Delete an allocation by id, or the active one with this (di, resource, region).

        Returns how many rows were deleted (0 or 1).
        """
        with self._write() as conn:
            if isinstance(target, int):
                cursor = conn.execute("DELETE FROM allocations WHERE id = ?", (target,))
            else:
                cursor = conn.execute(
                    "DELETE FROM allocations WHERE di = ? AND resource = ? AND region = ?"
                    " AND state != 'released'",
                    target,
                )
            if cursor.rowcount:
                self._changed(conn, ALLOCATIONS)
            return cursor.rowcount

    def set_allocation_state(
        self, allocation_id: int, state: AllocationState, valid_until: float | None = None
    ) -> Allocation:
        """Move an allocation to `state` (and set `valid_until` when given)."""
        if state not in ALLOCATION_STATES:
            raise ValueError(f"allocation state {state!r} is not one of {ALLOCATION_STATES}")
        with self._write() as conn:
            row = conn.execute(
                "UPDATE allocations SET state = ?, valid_until = COALESCE(?, valid_until)"
                f" WHERE id = ? RETURNING {_ALLOCATION_COLUMNS}",
                (state, valid_until, allocation_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"no allocation with id {allocation_id}")
            self._changed(conn, ALLOCATIONS)
        return _allocation(row)

    def allocations_version(self) -> int:
        """A number that changes with every write to the allocations table (any process)."""
        return int(self._read("SELECT value FROM allocations_version WHERE id = 1")[0][0])

    def bump_generation(self) -> int:
        """Start a new generation of allocations; returns its number (1, 2, ...)."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value"
            ).fetchone()
        return int(row[0])

    def current_generation(self) -> int:
        """The latest generation number (0 before the first bump)."""
        return int(self._read("SELECT value FROM generation WHERE id = 1")[0][0])

    # forecasts and model choice

    def write_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Each forecast replaces the stored one of its (di, region, resolution); one
        transaction for all. Returns the number of points written."""
        written = 0
        with self._write() as conn:
            for f in forecasts:
                conn.execute(
                    "DELETE FROM forecasts WHERE resolution = ? AND di = ? AND region = ?",
                    (f.resolution, f.di, f.region),
                )
                conn.executemany(
                    "INSERT INTO forecasts"
                    " (resolution, di, region, ts, made_at, point, upper, model)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (f.resolution, f.di, f.region, p.ts, f.made_at, p.point, p.upper, f.model)
                        for p in f.points
                    ],
                )
                written += len(f.points)
        return written

    def read_forecasts(
        self,
        resolution: Resolution,
        di: str | None = None,
        region: str | None = None,
    ) -> list[Forecast]:
        """Stored forecasts of `resolution` (optionally of one di / region), by series."""
        sql = (
            "SELECT di, region, made_at, model, ts, point, upper FROM forecasts"
            " WHERE resolution = ?"
        )
        params: list[Any] = [resolution]
        if di is not None:
            sql += " AND di = ?"
            params.append(di)
        if region is not None:
            sql += " AND region = ?"
            params.append(region)
        grouped: dict[SeriesKey, tuple[float, str, list[ForecastPoint]]] = {}
        for row_di, row_region, made_at, model, ts, point, upper in self._read(
            sql + " ORDER BY di, region, ts", params
        ):
            entry = grouped.setdefault((row_di, row_region), (made_at, model, []))
            entry[2].append(ForecastPoint(ts, point, upper))
        return [
            Forecast(d, r, resolution, made_at, model, tuple(points))
            for (d, r), (made_at, model, points) in grouped.items()
        ]

    def write_model_choices(self, choices: Iterable[ModelChoice]) -> int:
        """Record (or replace) the model chosen per series; one transaction."""
        rows = [(c.di, c.region, c.model, c.error, c.chosen_at) for c in choices]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO model_choices (di, region, model, error, chosen_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (di, region) DO UPDATE SET"
                " model = excluded.model, error = excluded.error,"
                " chosen_at = excluded.chosen_at",
                rows,
            )
        return len(rows)

    def read_model_choices(self, di: str | None = None) -> list[ModelChoice]:
        sql = "SELECT di, region, model, error, chosen_at FROM model_choices"
        params: list[Any] = []
        if di is not None:
            sql += " WHERE di = ?"
            params.append(di)
        return [ModelChoice(*row) for row in self._read(sql + " ORDER BY di, region", params)]

    # health

    def set_health_state(self, state: HealthState) -> bool:
        """Record a resource's state; a change is also appended to the event log.

        Returns True when the state changed (or was unknown). Setting the state it already
        has writes nothing, so `since` keeps the time of the last change.
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT state FROM health_state WHERE resource = ?", (state.resource,)
            ).fetchone()
            old = cast(HealthStatus | None, None if row is None else row[0])
            if old == state.state:
                return False
            conn.execute(
                "INSERT INTO health_state (resource, state, since, reason) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (resource) DO UPDATE SET state = excluded.state,"
                " since = excluded.since, reason = excluded.reason",
                (state.resource, state.state, state.since, state.reason),
            )
            cursor = conn.execute(
                "INSERT INTO health_events (resource, ts, old, new, reason) VALUES (?, ?, ?, ?, ?)",
                (state.resource, state.since, old, state.state, state.reason),
            )
            conn.execute(
                "DELETE FROM health_events WHERE id <= ?",
                (cast(int, cursor.lastrowid) - self.health_event_limit,),
            )
            self._changed(conn, HEALTH)
        return True

    def health_states(self) -> list[HealthState]:
        rows = self._read("SELECT resource, state, since, reason FROM health_state ORDER BY 1")
        return [HealthState(*row) for row in rows]

    def health_events(
        self, resource: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[HealthEvent]:
        """The newest `limit` events (of one resource, at or after `since`), oldest first."""
        sql = "SELECT resource, ts, old, new, reason FROM health_events WHERE 1"
        params: list[Any] = []
        if resource is not None:
            sql += " AND resource = ?"
            params.append(resource)
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since)
        rows = self._read(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [HealthEvent(*row) for row in reversed(rows)]

    # API tokens and audit

    def add_token(self, token: ApiToken) -> None:
        """Store a token; an id or hash already stored is an error."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, name, role, hash, created_at) VALUES (?, ?, ?, ?, ?)",
                (token.id, token.name, token.role, token.hash, token.created_at),
            )

    def get_token(self, token_id: str) -> ApiToken | None:
        rows = self._read(
            "SELECT id, name, role, hash, created_at FROM api_tokens WHERE id = ?", (token_id,)
        )
        return ApiToken(*rows[0]) if rows else None

    def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        rows = self._read(
            "SELECT id, name, role, hash, created_at FROM api_tokens WHERE hash = ?",
            (token_hash,),
        )
        return ApiToken(*rows[0]) if rows else None

    def list_tokens(self) -> list[ApiToken]:
        rows = self._read("SELECT id, name, role, hash, created_at FROM api_tokens ORDER BY id")
        return [ApiToken(*row) for row in rows]

    def delete_token(self, token_id: str) -> bool:
        with self._write() as conn:
            return conn.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,)).rowcount > 0

    def add_audit(self, entry: AuditEntry) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO audit_log (ts, token_id, action, object, before_json, after_json)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.ts,
                    entry.token_id,
                    entry.action,
                    entry.object,
                    entry.before_json,
                    entry.after_json,
                ),
            )

    def list_audit(self, since: float | None = None, limit: int = 1000) -> list[AuditEntry]:
        """The newest `limit` entries (at or after `since`), oldest first."""
        sql = "SELECT ts, token_id, action, object, before_json, after_json FROM audit_log"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            params.append(since)
        rows = self._read(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        return [AuditEntry(*row) for row in reversed(rows)]

    # fleet primitives (single node)

    def _notify(self, conn: sqlite3.Connection, channel: str, payload: str) -> None:
        cursor = conn.execute(
            "INSERT INTO changes (channel, payload, ts) VALUES (?, ?, ?)",
            (channel, payload, time.time()),
        )
        conn.execute(
            "DELETE FROM changes WHERE seq <= ?",
            (cast(int, cursor.lastrowid) - _CHANGE_LOG_LENGTH,),
        )

    def _changed(self, conn: sqlite3.Connection, channel: str, payload: str | None = None) -> None:
        """Bump the change generation and announce it on `channel` (caller's transaction),
        with `payload`, or the new generation when it is None."""
        row = conn.execute(
            "UPDATE change_generation SET value = value + 1 WHERE id = 1 RETURNING value"
        ).fetchone()
        self._notify(conn, channel, str(row[0]) if payload is None else payload)

    def change_generation(self) -> int:
        """Bumped by every write that changes answers (allocations, health, policy, zones,
        shared config files)."""
        return int(self._read("SELECT value FROM change_generation WHERE id = 1")[0][0])

    def notify_change(self, channel: str, payload: str = "") -> None:
        """Append a notification for listeners of `channel` (in any process on this file)."""
        check_channel(channel)
        check_payload(payload)
        with self._write() as conn:
            self._notify(conn, channel, payload)

    def listen(self, channels: Iterable[str] = CHANNELS) -> SQLiteListener:
        """A listener polling the change log for notifications on `channels` from now on."""
        return SQLiteListener(self, channels)

    def _changes_after(self, seq: int, channels: Sequence[str]) -> list[tuple[int, str, str]]:
        rows = self._read(
            "SELECT seq, channel, payload FROM changes WHERE seq > ?"
            " AND channel IN (SELECT value FROM json_each(?)) ORDER BY seq",
            (seq, json.dumps(list(channels))),
        )
        return [(int(n), channel, payload) for n, channel, payload in rows]

    def _last_change(self) -> int:
        return int(self._read("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])

    def try_leader_lock(self, name: str) -> bool:
        """Always True: a SQLite store serves one node, which leads itself."""
        return True

    def release_leader_lock(self, name: str) -> None:
        """Nothing to release on a single node."""


class SQLiteListener:
    """Polls a SQLite store's change log every `interval` seconds (see `ChangeListener`).

    It reads through its store, so it stops working when the store is closed.
    """

    def __init__(
        self, store: SQLiteStore, channels: Iterable[str], *, interval: float = 0.1
    ) -> None:
        self._store = store
        self._channels = tuple(dict.fromkeys(check_channel(c) for c in channels))
        self._interval = interval
        self._seq = store._last_change()
        self._closed = False

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def poll(self, timeout: float = 0.0) -> list[Change]:
        """Notifications that arrived since the last poll, waiting up to `timeout` seconds."""
        if self._closed:
            raise StoreError("listener is closed")
        deadline = time.monotonic() + timeout
        while True:
            rows = self._store._changes_after(self._seq, self._channels)
            if rows:
                self._seq = rows[-1][0]
                return [(channel, payload) for _, channel, payload in rows]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(self._interval, remaining))

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
