"""What the SQLite and PostgreSQL stores share: every method whose SQL is the same on both.

SQL here is written once with `?` placeholders; a backend whose driver wants another style
converts it in `_q`. The backends supply the plumbing (`_read`, `_write`), the in-code
change notifications (`_changed`, `_notify`) and everything whose SQL really differs
(upserts, bulk writes, rollups, migrations, listeners, leader locks).
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import dns.name

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
    HealthObservation,
    HealthState,
    KeyFile,
    ModelChoice,
    NewAllocation,
    Resolution,
    Retention,
    SeriesKey,
    StandbyCandidate,
    ZoneRecord,
    bucket_start,
    check_config_file,
    check_key_file,
)
from shadowdns.store.demand_columns import DemandColumns
from shadowdns.store.fleet import (
    ALLOCATIONS,
    CONFIG,
    POLICY,
    ZONES,
    check_batch_id,
    check_channel,
    check_payload,
)
from shadowdns.store.policy_rows import policy_part_rows, policy_rows
from shadowdns.zones.policy import Policy

DEMAND_TABLES: Mapping[Resolution, str] = {
    "minute": "demand_minute",
    "5m": "demand_5m",
    "hour": "demand_hour",
}

# Every table whose rows belong to one demand series (the pending ones await a rollup).
SERIES_TABLES = (*DEMAND_TABLES.values(), "demand_pending_5m", "demand_pending_hour")
READ_BATCH = 1 << 13  # demand rows fetched at once: numpy holds the GIL ~5 ms converting them

ALLOCATION_COLUMNS = (
    "id, di, resource, region, state, valid_from, valid_until, generation, reason, demand,"
    " pinned, created_at"
)

STANDBY_SQL = """
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
              WHERE a.resource = pool.id AND a.state <> 'released'), 0.0)
FROM pool JOIN near ON near.location = pool.location
ORDER BY near.km, pool.id
"""
"""Standby candidates of a DI near a location; `:name` parameters (see `SQLStore._named`)."""

ROLLUPS: tuple[tuple[Resolution, str, str, str | None], ...] = (
    ("5m", "demand_pending_5m", "demand_5m", "demand_pending_hour"),
    ("hour", "demand_pending_hour", "demand_hour", None),
)
"""Per coarse resolution: pending table, table it completes into, next pending table or None."""

DemandCounts = dict[tuple[int, SeriesKey, str], int]
"""Queries per (bucket start, series, kind)."""

SeriesSpans = dict[SeriesKey, tuple[int, int]]
"""First and last minute with queries, per series."""


def allocation_from_row(row: Sequence[Any]) -> Allocation:
    """An `Allocation` from a row of `ALLOCATION_COLUMNS`."""
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


def allocation_values(a: NewAllocation) -> tuple[Any, ...]:
    """The values of a new allocation, in `ALLOCATION_COLUMNS` order without `id`."""
    return (
        a.di,
        a.resource,
        a.region,
        a.state,
        a.valid_from,
        a.valid_until,
        a.generation,
        a.reason,
        a.demand,
        a.pinned,
        a.created_at,
    )


def demand_table(resolution: Resolution) -> str:
    """The table holding demand buckets of `resolution` (ValueError for an unknown one)."""
    try:
        return DEMAND_TABLES[resolution]
    except KeyError:
        raise ValueError(f"resolution {resolution!r} is not one of {RESOLUTIONS}") from None


_TOKEN_SELECT = "SELECT id, name, role, hash, created_at, expires_at FROM api_tokens"

class Closing(abc.ABC):
    """`close` on leaving a `with` block."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what this object holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SQLStore(Closing):
    """The backend-independent half of a SQL `Store` (see the module docstring)."""

    def __init__(self, *, retention: Retention | None, health_event_limit: int) -> None:
        self.retention = retention or Retention()
        self.health_event_limit = health_event_limit
        self._lock = threading.RLock()
        self._series_cache: dict[SeriesKey, int] = {}

    _NULLABLE_FLOAT = "?"
    """A float parameter that may be NULL (PostgreSQL needs its type spelled out)."""

    # hooks

    def _q(self, sql: str) -> str:
        """`sql`, written with `?` placeholders, in this backend's placeholder style."""
        return sql

    def _named(self, sql: str) -> str:
        """`sql`, written with `:name` placeholders, in this backend's named style."""
        return sql

    @abc.abstractmethod
    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = (), /) -> list[Any]:
        """Every row of one query, in a transaction of its own."""

    @abc.abstractmethod
    def _in_list(self, column: str, sql_type: str) -> str:
        """SQL true when `column` is in the list bound to one `?` (see `_list_param`)."""

    @abc.abstractmethod
    def _list_param(self, values: list[Any]) -> Any:
        """`values` as the parameter of an `_in_list` condition."""

    @abc.abstractmethod
    def _reading(self) -> contextlib.AbstractContextManager[Any]:
        """A read of several statements, yielding something with `execute(sql, params)`."""

    @abc.abstractmethod
    def _write(self) -> contextlib.AbstractContextManager[Any]:
        """One write transaction, yielding something with `execute(sql, params)`."""

    @abc.abstractmethod
    def _create_series(
        self, conn: Any, missing: list[SeriesKey], ids: dict[SeriesKey, int]
    ) -> None:
        """Create the rows of series not known to this store yet (ignoring ones that exist
        after all) and put the ids of all of `missing` into `ids`."""

    @abc.abstractmethod
    def _add_demand_rows(
        self,
        conn: Any,
        ids: Mapping[SeriesKey, int],
        minute: DemandCounts,
        pending: DemandCounts,
        seen: SeriesSpans,
    ) -> None:
        """ADD `minute` and `pending` (5-minute) counts and widen the series' seen spans."""

    @abc.abstractmethod
    def _load_rows(self, conn: Any, table: str, columns: Sequence[str],
                   rows: Iterator[tuple[Any, ...]]) -> None:
        """Insert `rows` (values in the order of `columns`) into `table`, as they come."""

    @abc.abstractmethod
    def _notify(self, conn: Any, channel: str, payload: str) -> None:
        """Send a notification on `channel` inside the caller's transaction."""

    def _changed(self, conn: Any, channel: str, payload: str | None = None) -> None:
        """Bump the change generation and notify `channel` for a write (caller's transaction).

        Nothing here: a backend with triggers has them do it.
        """
        return None

    # zones

    def upsert_zone(self, zone: ZoneRecord) -> None:
        """Record (or replace) the metadata of one zone."""
        with self._write() as conn:
            conn.execute(
                self._q(
                    "INSERT INTO zones (origin, file, serial, loaded_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (origin) DO UPDATE SET file = excluded.file,"
                    " serial = excluded.serial, loaded_at = excluded.loaded_at"
                ),
                (zone.origin, zone.file, zone.serial, zone.loaded_at),
            )
            self._changed(conn, ZONES)

    def list_zones(self) -> list[ZoneRecord]:
        rows = self._read("SELECT origin, file, serial, loaded_at FROM zones ORDER BY origin")
        return [ZoneRecord(*row) for row in rows]

    # zone and policy files shared by a fleet

    def delete_config_file(self, origin: str, kind: str) -> bool:
        """Forget zone `origin`'s file of `kind`; True (bump and notify) if there was one."""
        check_config_file(origin, kind)
        with self._write() as conn:
            cursor = conn.execute(
                self._q("DELETE FROM config_files WHERE origin = ? AND kind = ?"), (origin, kind)
            )
            if cursor.rowcount:
                self._changed(conn, CONFIG, origin)
            return bool(cursor.rowcount > 0)

    def config_files(self) -> list[ConfigFile]:
        """Every shared zone and policy file, ordered by (origin, kind)."""
        rows = self._read(
            "SELECT origin, kind, text, updated_at FROM config_files ORDER BY origin, kind"
        )
        return [ConfigFile(*row) for row in rows]

    # DNSSEC key files shared by a fleet

    def key_files(self) -> list[KeyFile]:
        """Every shared key file, ordered by name."""
        rows = self._read("SELECT origin, name, data, created_at FROM dnssec_keys ORDER BY name")
        return [KeyFile(origin, name, bytes(data), created_at)
                for origin, name, data, created_at in rows]

    def swap_key_file(self, origin: str, name: str, old: bytes | None, new: bytes | None,
                      now: float | None = None) -> bool:
        """Set `name` to `new` (None: delete it) only if it holds `old` (None: absent);
        True if it did (then bump and notify `CONFIG` with `origin`)."""
        check_key_file(origin, name)
        if old is None and new is None:
            raise ValueError("swap_key_file needs old or new data")
        created_at = time.time() if now is None else now
        with self._write() as conn:
            if old is None:
                cursor = conn.execute(self._q(
                    "INSERT INTO dnssec_keys (name, origin, data, created_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"),
                    (name, origin, new, created_at))
            elif new is None:
                cursor = conn.execute(self._q(
                    "DELETE FROM dnssec_keys WHERE name = ? AND data = ?"), (name, old))
            else:
                cursor = conn.execute(self._q(
                    "UPDATE dnssec_keys SET origin = ?, data = ?, created_at = ?"
                    " WHERE name = ? AND data = ?"), (origin, new, created_at, name, old))
            swapped = bool(cursor.rowcount > 0)
            if swapped:
                self._changed(conn, CONFIG, origin)
            return swapped

    # demand

    def _series_ids(self, conn: Any, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
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
            self._create_series(conn, missing, ids)
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
        minute: DemandCounts = {}
        seen: SeriesSpans = {}
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
        pending: DemandCounts = {}
        for (start, series, kind), queries in minute.items():
            key5 = (bucket_start(start, "5m"), series, kind)
            pending[key5] = pending.get(key5, 0) + queries
        with self._write() as conn:
            if batch_id is not None:
                cursor = conn.execute(
                    self._q(
                        "INSERT INTO demand_batches (batch_id, last_bucket, applied_at)"
                        " VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
                    ),
                    (batch_id, max(start for start, _, _ in minute), time.time()),
                )
                if cursor.rowcount == 0:
                    return 0
            ids = self._series_ids(conn, {series for _, series, _ in minute})
            self._add_demand_rows(conn, ids, minute, pending, seen)
        self._series_cache.update(ids)
        return len(minute)

    def apply_retention(self, now: float) -> dict[Resolution, int]:
        """Delete buckets older than the retention of their resolution; returns rows deleted.

        Series rows stay (their ids are permanent); `active_series` ignores old ones. Ids of
        applied demand batches are forgotten with the minute buckets they wrote.
        """
        deleted: dict[Resolution, int] = {}
        with self._write() as conn:
            for resolution, table in DEMAND_TABLES.items():
                cutoff = now - self.retention.seconds(resolution)
                cursor = conn.execute(
                    self._q(f"DELETE FROM {table} WHERE bucket_start < ?"), (cutoff,)
                )
                deleted[resolution] = cursor.rowcount
            conn.execute(
                self._q("DELETE FROM demand_batches WHERE last_bucket < ?"),
                (now - self.retention.seconds("minute"),),
            )
            conn.execute(self._q("DELETE FROM forecasts WHERE ts < ?"),
                         (int(now - self.retention.forecasts),))
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
        return self.demand_columns(resolution, since, until, dis).series()

    def demand_columns(
        self,
        resolution: Resolution,
        since: float,
        until: float,
        dis: Iterable[str] | None = None,
    ) -> DemandColumns:
        """What `demand_series` reads, as columns (for millions of points)."""
        table = demand_table(resolution)
        # Rows of one (bucket, series) differ only by kind and come out adjacent in this
        # order; summing them in numpy is much cheaper than GROUP BY.
        sql = f"SELECT series, bucket_start, queries FROM {table} WHERE "
        params: list[Any] = []
        if dis is not None:
            sql += f"series IN (SELECT id FROM series WHERE {self._in_list('di', 'text')}) AND "
            params.append(self._list_param(sorted(set(dis))))
        sql += "bucket_start >= ? AND bucket_start < ? ORDER BY bucket_start, series"
        params += [since, until]
        with self._reading() as conn:
            cursor = conn.execute(self._q(sql), params)
            columns, ids = DemandColumns.from_batches(
                iter(lambda: cursor.fetchmany(READ_BATCH), []))
            names = conn.execute(
                self._q(f"SELECT id, di, region FROM series WHERE {self._in_list('id', 'bigint')}"),
                (self._list_param(ids.tolist()),),
            ).fetchall()
        key_of = {series: (di, region) for series, di, region in names}
        return columns.with_keys([key_of[series] for series in ids.tolist()])

    def active_series(self, since: float) -> list[SeriesKey]:
        """Series that had at least one query in a minute ending after `since`, sorted."""
        rows = self._read(
            self._q("SELECT di, region FROM series WHERE last_seen > ? ORDER BY di, region"),
            (since - RESOLUTION_SECONDS["minute"],),
        )
        return [(di, region) for di, region in rows]

    # policy graph

    def replace_policy(self, origin: str, policy: Policy, digest: str | None = None) -> bool:
        """Replace zone `origin`'s locations, resources and DIs with `policy`, atomically.

        `origin` is absolute text and must name `policy.origin`. Distances between every
        pair of the zone's locations are computed here with the resolver's own
        `haversine_km`, so stored and routed distances agree.
        Other zones are untouched; a DI name already owned by another zone is an error.
        With `digest` (of the policy file), a graph already stored for it is left as it is.
        A DI the new policy no longer has (and no other zone took) is retired in the same
        transaction: its active allocations are released, its demand series, forecasts and
        model choices deleted, so no dashboard, forecast or allocator reads them again.
        """
        if self._holds(origin, policy, digest):
            return False
        with self._write() as conn:
            # the zone's row first, as `update_policy` takes it: two writers of one zone's
            # graph (a fleet's nodes) wait for each other instead of deadlocking
            conn.execute(self._q("UPDATE zones SET policy_digest = ? WHERE origin = ?"),
                         (digest, origin))
            before = {row[0] for row in conn.execute(
                self._q("SELECT name FROM dis WHERE zone = ?"), (origin,))}
            conn.execute(
                self._q(
                    "DELETE FROM di_resources WHERE di IN (SELECT name FROM dis WHERE zone = ?)"
                ),
                (origin,),
            )
            for table in ("dis", "resources", "locations", "location_distances"):
                conn.execute(self._q(f"DELETE FROM {table} WHERE zone = ?"), (origin,))
            for table, columns, rows in policy_rows(origin, policy):
                self._load_rows(conn, table, columns, rows)
            gone = before - {name.to_text() for name in policy.dis}
            if gone and self._retire_dis(conn, sorted(gone)):
                self._changed(conn, ALLOCATIONS)
            self._changed(conn, POLICY)
        return True

    def _holds(self, origin: str, policy: Policy, digest: str | None) -> bool:
        """Whether zone `origin` (which must be `policy`'s) has the graph of file
        `digest` already (never for a policy not read from a file)."""
        if dns.name.from_text(origin) != policy.origin:
            raise ValueError(f"origin {origin} does not match policy origin {policy.origin}")
        if digest is None:
            return False
        stored = self._read(self._q("SELECT policy_digest FROM zones WHERE origin = ?"),
                            (origin,))
        return bool(stored) and stored[0][0] == digest

    def update_policy(self, origin: str, policy: Policy, digest: str, previous: str,
                      dis: Collection[dns.name.Name], resources: Collection[str]) -> bool:
        """`replace_policy` for a policy that differs from the graph of file digest
        `previous` only in the entries of `dis` and `resources` (added, changed or gone):
        only their rows are written again (an API edit of one DI rewrote 120,000 rows at
        10,000 DIs). When the store holds another graph than `previous` (another node or
        a restart wrote it), the whole graph is replaced."""
        if self._holds(origin, policy, digest):
            return False
        with self._write() as conn:
            # taking the digest from `previous` locks the zone's row (PostgreSQL) against
            # another writer until this transaction ends
            claimed = conn.execute(self._q(
                "UPDATE zones SET policy_digest = ? WHERE origin = ? AND policy_digest = ?"),
                (digest, origin, previous))
            if claimed.rowcount == 1:
                names = self._list_param(sorted(name.to_text() for name in dis))
                conn.execute(self._q(
                    f"DELETE FROM di_resources WHERE {self._in_list('di', 'text')}"), (names,))
                conn.execute(self._q(
                    f"DELETE FROM dis WHERE zone = ? AND {self._in_list('name', 'text')}"),
                    (origin, names))
                conn.execute(self._q(
                    f"DELETE FROM resources WHERE zone = ? AND {self._in_list('id', 'text')}"),
                    (origin, self._list_param(sorted(resources))))
                for table, columns, rows in policy_part_rows(origin, policy, dis, resources):
                    self._load_rows(conn, table, columns, rows)
                gone = sorted(name.to_text() for name in dis if name not in policy.dis)
                if gone and self._retire_dis(conn, gone):
                    self._changed(conn, ALLOCATIONS)
                self._changed(conn, POLICY)
                return True
        return self.replace_policy(origin, policy, digest)

    def _retire_dis(self, conn: Any, dis: Sequence[str]) -> int:
        """Release the allocations of `dis` and delete their series, forecasts and model
        choices (the caller's transaction); returns how many allocations were released."""
        released = 0
        now = time.time()
        for di in dis:
            if conn.execute(self._q("SELECT 1 FROM dis WHERE name = ?"), (di,)).fetchone():
                continue  # another zone serves it now
            cursor = conn.execute(self._q(
                "UPDATE allocations SET state = 'released', valid_until = ? "
                "WHERE di = ? AND state <> 'released'"), (now, di))
            released += max(0, int(cursor.rowcount))
            for table in SERIES_TABLES:
                conn.execute(self._q(f"DELETE FROM {table} WHERE series IN "
                                     "(SELECT id FROM series WHERE di = ?)"), (di,))
            for table in ("series", "forecasts", "model_choices"):
                conn.execute(self._q(f"DELETE FROM {table} WHERE di = ?"), (di,))
        return released

    def location_distances(self, origin: str) -> dict[tuple[str, str], float]:
        """Great-circle km between every ordered pair of zone `origin`'s locations."""
        rows = self._read(
            self._q("SELECT a, b, km FROM location_distances WHERE zone = ?"), (origin,)
        )
        return {(a, b): km for a, b, km in rows}

    def standby_within(self, di: str, location: str, km: float) -> list[StandbyCandidate]:
        """Standby resources of `di`'s pool within `km` of `location`, nearest first.

        The pool is the DI's listed standby resources, plus, when the DI has a
        `standby_within_km` selector, every standby resource of its zone within that
        distance of `location`. `load` sums the demand of the resource's non-released
        allocations (over all DIs: a resource id names one machine). An unknown DI or
        location gives an empty list.
        """
        rows = self._read(self._named(STANDBY_SQL), {"di": di, "location": location, "km": km})
        return [StandbyCandidate(*row) for row in rows]

    # allocations and generations

    @abc.abstractmethod
    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]:
        """Add allocations in one transaction; returns them with ids, in order."""

    def add_allocation(self, allocation: NewAllocation) -> Allocation:
        return self.add_allocations([allocation])[0]

    def list_allocations(self, active_only: bool = True, di: str | None = None) -> list[Allocation]:
        """Allocations by id; `active_only` leaves out released ones."""
        sql = f"SELECT {ALLOCATION_COLUMNS} FROM allocations WHERE true"
        params: list[Any] = []
        if active_only:
            sql += " AND state <> 'released'"
        if di is not None:
            sql += " AND di = ?"
            params.append(di)
        rows = self._read(self._q(sql + " ORDER BY id"), params)
        return [allocation_from_row(row) for row in rows]

    def remove_allocation(self, target: int | AllocationKey) -> int:
        """Delete an allocation by id, or the active one with this (di, resource, region).

        Returns how many rows were deleted (0 or 1).
        """
        with self._write() as conn:
            if isinstance(target, int):
                cursor = conn.execute(self._q("DELETE FROM allocations WHERE id = ?"), (target,))
            else:
                cursor = conn.execute(
                    self._q(
                        "DELETE FROM allocations WHERE di = ? AND resource = ? AND region = ?"
                        " AND state <> 'released'"
                    ),
                    target,
                )
            if cursor.rowcount:
                self._changed(conn, ALLOCATIONS)
            return int(cursor.rowcount)

    def set_allocation_state(
        self, allocation_id: int, state: AllocationState, valid_until: float | None = None
    ) -> Allocation:
        """Move an allocation to `state` (and set `valid_until` when given)."""
        if state not in ALLOCATION_STATES:
            raise ValueError(f"allocation state {state!r} is not one of {ALLOCATION_STATES}")
        with self._write() as conn:
            row = conn.execute(
                self._q(
                    "UPDATE allocations SET state = ?,"
                    f" valid_until = COALESCE({self._NULLABLE_FLOAT}, valid_until)"
                    f" WHERE id = ? RETURNING {ALLOCATION_COLUMNS}"
                ),
                (state, valid_until, allocation_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"no allocation with id {allocation_id}")
            self._changed(conn, ALLOCATIONS)
        return allocation_from_row(row)

    def allocations_version(self) -> int:
        """A number that changes with every write to the allocations table (any writer)."""
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

    def read_forecasts(
        self,
        resolution: Resolution,
        di: str | None = None,
        region: str | None = None,
        past: bool = False,
    ) -> list[Forecast]:
        """Stored forecasts of `resolution` (optionally of one di / region), by series: the
        newest forecast's points, and with `past` also those kept of earlier forecasts for
        the buckets before it (see `Store.write_forecasts`)."""
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
        grouped: dict[SeriesKey, list[tuple[float, str, ForecastPoint]]] = {}
        for row_di, row_region, made_at, model, ts, point, upper in self._read(
            self._q(sql + " ORDER BY di, region, ts"), params
        ):
            grouped.setdefault((row_di, row_region), []).append(
                (made_at, model, ForecastPoint(ts, point, upper)))
        out = []
        for (d, r), rows in grouped.items():
            made_at, model, _ = max(rows, key=lambda row: row[0])
            points = tuple(p for at, _, p in rows if past or at == made_at)
            out.append(Forecast(d, r, resolution, made_at, model, points))
        return out

    def read_model_choices(self, di: str | None = None) -> list[ModelChoice]:
        sql = "SELECT di, region, model, error, chosen_at FROM model_choices"
        params: list[Any] = []
        if di is not None:
            sql += " WHERE di = ?"
            params.append(di)
        rows = self._read(self._q(sql + " ORDER BY di, region"), params)
        return [ModelChoice(*row) for row in rows]

    # health

    def record_health_observation(self, observation: HealthObservation) -> None:
        """Replace this node's view of one resource (fleet health quorum)."""
        with self._write() as conn:
            conn.execute(
                self._q(
                    "INSERT INTO health_observations (resource, node, state, ts)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (resource, node)"
                    " DO UPDATE SET state = excluded.state, ts = excluded.ts"
                ),
                (observation.resource, observation.node, observation.state, observation.ts),
            )

    def health_observations(self, since: float | None = None) -> list[HealthObservation]:
        """Every node's latest view of every resource (made at or after `since`)."""
        sql = "SELECT resource, node, state, ts FROM health_observations"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE ts >= ?"
            params.append(since)
        rows = self._read(self._q(sql + " ORDER BY resource, node"), params)
        return [HealthObservation(*row) for row in rows]

    def health_states(self) -> list[HealthState]:
        rows = self._read("SELECT resource, state, since, reason FROM health_state ORDER BY 1")
        return [HealthState(*row) for row in rows]

    def health_events(
        self, resource: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[HealthEvent]:
        """The newest `limit` events (of one resource, at or after `since`), oldest first."""
        sql = "SELECT resource, ts, old, new, reason FROM health_events WHERE true"
        params: list[Any] = []
        if resource is not None:
            sql += " AND resource = ?"
            params.append(resource)
        if since is not None:
            sql += " AND ts >= ?"
            params.append(since)
        rows = self._read(self._q(sql + " ORDER BY id DESC LIMIT ?"), [*params, limit])
        return [HealthEvent(*row) for row in reversed(rows)]

    # API tokens and audit

    def add_token(self, token: ApiToken) -> None:
        """Store a token; an id or hash already stored is an error."""
        with self._write() as conn:
            conn.execute(
                self._q(
                    "INSERT INTO api_tokens (id, name, role, hash, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                ),
                (token.id, token.name, token.role, token.hash, token.created_at,
                 token.expires_at),
            )

    def get_token(self, token_id: str) -> ApiToken | None:
        rows = self._read(
            self._q(_TOKEN_SELECT + " WHERE id = ?"),
            (token_id,),
        )
        return ApiToken(*rows[0]) if rows else None

    def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        rows = self._read(
            self._q(_TOKEN_SELECT + " WHERE hash = ?"),
            (token_hash,),
        )
        return ApiToken(*rows[0]) if rows else None

    def list_tokens(self) -> list[ApiToken]:
        rows = self._read(_TOKEN_SELECT + " ORDER BY id")
        return [ApiToken(*row) for row in rows]

    def delete_token(self, token_id: str) -> bool:
        with self._write() as conn:
            cursor = conn.execute(self._q("DELETE FROM api_tokens WHERE id = ?"), (token_id,))
            return bool(cursor.rowcount > 0)

    def add_audit(self, entry: AuditEntry) -> None:
        with self._write() as conn:
            conn.execute(
                self._q(
                    "INSERT INTO audit_log (ts, token_id, action, object, before_json, after_json)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                ),
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
        rows = self._read(self._q(sql + " ORDER BY id DESC LIMIT ?"), [*params, limit])
        return [AuditEntry(*row) for row in reversed(rows)]

    # fleet primitives

    def change_generation(self) -> int:
        """Bumped by every write that changes answers (allocations, health, policy, zones,
        shared config files), whoever wrote it."""
        return int(self._read("SELECT value FROM change_generation WHERE id = 1")[0][0])

    def notify_change(self, channel: str, payload: str = "") -> None:
        """Notify listeners of `channel` with `payload`."""
        check_channel(channel)
        check_payload(payload)
        with self._write() as conn:
            self._notify(conn, channel, payload)
