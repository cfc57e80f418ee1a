"""The fleet store: one PostgreSQL database shared by every node, through psycopg 3.

It answers exactly like `SQLiteStore` (the same store tests run against both). One
`PostgresStore` holds one connection guarded by a lock, so it may be shared by threads.
Autocommit is off and every method runs in its own explicit transaction: a read never
leaves a transaction open, and a write of many rows commits whole or not at all. A broken
connection is replaced on the next call, so a node rides out a database restart (calls
fail with StoreError meanwhile).

Fleet concerns:

- writes from several nodes interleave safely: demand upserts take row locks in key order,
  rollup *moves* pending rows (DELETE ... RETURNING) so a concurrent flush is never lost
  or counted twice, and `add_demand(batch_id=...)` makes a retried flush count once;
- answer-affecting tables (and shared config files) notify their channel from a trigger
  (see `postgres_schema`);
- `listen` opens its own connection for LISTEN;
- leader locks are session advisory locks on a separate connection that holds nothing
  else, so a lock lives exactly as long as this store's session does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, cast

import dns.name
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

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
    CHANNELS,
    LEADER_PREFIX,
    Change,
    check_batch_id,
    check_channel,
    check_payload,
    lock_key,
)
from shadowdns.store.policy_rows import policy_rows
from shadowdns.store.postgres_schema import MIGRATIONS, Migration, migrate
from shadowdns.zones.policy import Policy

_DEMAND_TABLES: Mapping[Resolution, str] = {
    "minute": "demand_minute",
    "5m": "demand_5m",
    "hour": "demand_hour",
}

# (resolution, pending table, table it completes into, next pending table or None)
_ROLLUPS: tuple[tuple[Resolution, str, str, str | None], ...] = (
    ("5m", "demand_pending_5m", "demand_5m", "demand_pending_hour"),
    ("hour", "demand_pending_hour", "demand_hour", None),
)

_ADD_DEMAND_SQL = """
INSERT INTO {table} AS t (bucket_start, series, kind, queries)
SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::bigint[])
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = t.queries + excluded.queries
"""

_UPSERT_MOVED = """
INSERT INTO {dst} AS t (bucket_start, series, kind, queries)
SELECT (bucket_start / {size}) * {size}, series, kind, SUM(queries) FROM moved GROUP BY 1, 2, 3
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = t.queries + excluded.queries
"""

_ALLOCATION_COLUMNS = (
    "id, di, resource, region, state, valid_from, valid_until, generation, reason, demand,"
    " pinned, created_at"
)

_STANDBY_SQL = """
WITH d AS (SELECT name, zone, standby_within_km FROM dis WHERE name = %(di)s),
near AS (
    SELECT ld.b AS location, ld.km FROM d
    JOIN location_distances ld ON ld.zone = d.zone AND ld.a = %(location)s
    WHERE ld.km <= %(km)s
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

_KEEPALIVE: Mapping[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


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


def _demand_table(resolution: Resolution) -> str:
    try:
        return _DEMAND_TABLES[resolution]
    except KeyError:
        raise ValueError(f"resolution {resolution!r} is not one of {RESOLUTIONS}") from None


def describe(url: str) -> str:
    """`url` without its password, for messages: postgresql://user@host:port/dbname."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


class PostgresStore:
    """`Store` on a PostgreSQL database (its schema created or migrated on open).

    `url` is a libpq URL or conninfo string. The options mean what they mean for
    `SQLiteStore`; `timeout` is the connect timeout in seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        retention: Retention | None = None,
        health_event_limit: int = 10_000,
        timeout: float = 10.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.retention = retention or Retention()
        self.health_event_limit = health_event_limit
        self.timeout = timeout
        self._lock = threading.RLock()
        self._leader_lock = threading.Lock()
        self._series_cache: dict[SeriesKey, int] = {}
        self._closed = False
        self._leader_conn: psycopg.Connection[Any] | None = None
        self._leaders: set[str] = set()
        self._conn = self.connect()
        try:
            migrate(self._conn, migrations, self.where)
        except BaseException:
            self._conn.close()
            raise

    # plumbing

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new connection to this store's database (StoreError when unreachable)."""
        try:
            given = conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: bad connection string: {exc}") from exc
        extra = {key: value for key, value in _KEEPALIVE.items() if key not in given}
        extra.setdefault("connect_timeout", max(1, round(self.timeout)))
        extra.setdefault("application_name", "shadowdns")
        try:
            return psycopg.connect(self.url, autocommit=autocommit, **extra)
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot connect: {exc}") from exc

    def close(self) -> None:
        """Close the connections; leader locks are released with their session."""
        with self._leader_lock:
            if self._leader_conn is not None:
                self._leader_conn.close()
                self._leader_conn = None
            self._leaders.clear()
        with self._lock:
            self._closed = True
            self._conn.close()

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
        return f"PostgresStore({self.where!r})"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise StoreError(f"{self.where}: the store is closed")
        if self._conn.closed or self._conn.broken:
            self._conn.close()
            self._conn = self.connect()
        return self._conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: everything inside commits together or not at all."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StoreError(f"{self.where}: {exc}") from exc

    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._tx() as cur:
            return cur.execute(query, params).fetchall()

    # zones

    def upsert_zone(self, zone: ZoneRecord) -> None:
        """Record (or replace) the metadata of one zone."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO zones (origin, file, serial, loaded_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (origin) DO UPDATE SET file = excluded.file,"
                " serial = excluded.serial, loaded_at = excluded.loaded_at",
                (zone.origin, zone.file, zone.serial, zone.loaded_at),
            )

    def list_zones(self) -> list[ZoneRecord]:
        rows = self._read("SELECT origin, file, serial, loaded_at FROM zones ORDER BY origin")
        return [ZoneRecord(*row) for row in rows]

    # zone and policy files shared by a fleet

    def put_config_file(self, origin: str, kind: str, text: str, now: float | None = None) -> bool:
        """Store the text of zone `origin`'s file of `kind`; True if it changed.

        As `SQLiteStore.put_config_file`; the bump and the notification come from the
        table's trigger. Two nodes writing the same new text at once: one gets True.
        """
        check_config_file(origin, kind, text)
        updated_at = time.time() if now is None else now
        with self._tx() as cur:
            written = cur.execute(
                "INSERT INTO config_files AS c (origin, kind, text, updated_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (origin, kind) DO UPDATE SET"
                " text = excluded.text, updated_at = excluded.updated_at"
                " WHERE c.text IS DISTINCT FROM excluded.text RETURNING 1",
                (origin, kind, text, updated_at),
            ).fetchone()
        return written is not None

    def delete_config_file(self, origin: str, kind: str) -> bool:
        """Forget zone `origin`'s file of `kind`; True (bump and notify) if there was one."""
        check_config_file(origin, kind)
        with self._tx() as cur:
            cur.execute("DELETE FROM config_files WHERE origin = %s AND kind = %s", (origin, kind))
            return cur.rowcount > 0

    def config_files(self) -> list[ConfigFile]:
        """Every shared zone and policy file, ordered by (origin, kind)."""
        rows = self._read(
            "SELECT origin, kind, text, updated_at FROM config_files ORDER BY origin, kind"
        )
        return [ConfigFile(*row) for row in rows]

    # demand

    def _series_ids(
        self, cur: psycopg.Cursor[Any], keys: Iterable[SeriesKey]
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
            missing.sort()
            dis = [di for di, _ in missing]
            regions = [region for _, region in missing]
            cur.execute(
                "INSERT INTO series (di, region) SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT DO NOTHING",
                (dis, regions),
            )
            cur.execute(
                "SELECT s.id, s.di, s.region FROM series s"
                " JOIN unnest(%s::text[], %s::text[]) AS k (di, region)"
                " ON s.di = k.di AND s.region = k.region",
                (dis, regions),
            )
            for series_id, di, region in cur.fetchall():
                ids[(di, region)] = int(series_id)
        return ids

    def _upsert_demand(
        self,
        cur: psycopg.Cursor[Any],
        table: str,
        ids: Mapping[SeriesKey, int],
        counts: Mapping[tuple[int, SeriesKey, str], int],
    ) -> None:
        # Key order is lock order: concurrent flushes of several nodes cannot deadlock.
        rows = sorted((start, ids[series], kind, q) for (start, series, kind), q in counts.items())
        cur.execute(
            _ADD_DEMAND_SQL.format(table=table),
            (
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ),
        )

    def add_demand(self, rows: Iterable[DemandRow], *, batch_id: str | None = None) -> int:
        """ADD each row's queries to its minute bucket, in one transaction.

        As `SQLiteStore.add_demand`: rows are floored to the minute and summed first;
        returns the minute rows touched; a `batch_id` already applied (by any node)
        writes nothing and returns 0. A retry racing the original waits for it to commit.
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
        with self._tx() as cur:
            if batch_id is not None:
                cur.execute(
                    "INSERT INTO demand_batches (batch_id, last_bucket, applied_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    (batch_id, max(start for start, _, _ in minute), time.time()),
                )
                if cur.rowcount == 0:
                    return 0
            ids = self._series_ids(cur, {series for _, series, _ in minute})
            self._upsert_demand(cur, "demand_minute", ids, minute)
            self._upsert_demand(cur, "demand_pending_5m", ids, pending)
            if seen:
                spans = sorted((ids[s], first, last) for s, (first, last) in seen.items())
                cur.execute(
                    "UPDATE series SET first_seen = LEAST(first_seen, v.first),"
                    " last_seen = GREATEST(last_seen, v.last)"
                    " FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS v (id, first, last)"
                    " WHERE series.id = v.id AND (first_seen IS NULL OR first_seen > v.first"
                    " OR last_seen < v.last)",
                    ([s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans]),
                )
        self._series_cache.update(ids)
        return len(minute)

    def rollup(self, now: float) -> dict[Resolution, int]:
        """Add every bucket complete at `now` to the 5-minute and hourly tables.

        As `SQLiteStore.rollup`. Pending rows are deleted and added in one statement, so a
        flush or another node's rollup running meanwhile is neither lost nor counted twice.
        """
        written: dict[Resolution, int] = {}
        with self._tx() as cur:
            for resolution, src, dst, nxt in _ROLLUPS:
                size = RESOLUTION_SECONDS[resolution]
                query = (
                    f"WITH moved AS (DELETE FROM {src} WHERE bucket_start <= %s"
                    " RETURNING bucket_start, series, kind, queries)"
                )
                if nxt is not None:
                    query += f", to_next AS ({_UPSERT_MOVED.format(dst=nxt, size=3600)})"
                query += _UPSERT_MOVED.format(dst=dst, size=size)
                cur.execute(query, (now - size,))
                written[resolution] = cur.rowcount
        return written

    def apply_retention(self, now: float) -> dict[Resolution, int]:
        """Delete buckets older than the retention of their resolution; returns rows deleted.

        Ids of applied demand batches are forgotten with the minute buckets they wrote.
        """
        deleted: dict[Resolution, int] = {}
        with self._tx() as cur:
            for resolution, table in _DEMAND_TABLES.items():
                cutoff = now - self.retention.seconds(resolution)
                cur.execute(f"DELETE FROM {table} WHERE bucket_start < %s", (cutoff,))
                deleted[resolution] = cur.rowcount
            cur.execute(
                "DELETE FROM demand_batches WHERE last_bucket < %s",
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

        As `SQLiteStore.demand_series`: missing buckets are absent and mean zero.
        """
        table = _demand_table(resolution)
        query = f"SELECT series, bucket_start, queries FROM {table} WHERE "
        params: list[Any] = []
        if dis is not None:
            query += "series IN (SELECT id FROM series WHERE di = ANY(%s::text[])) AND "
            params.append(sorted(set(dis)))
        query += "bucket_start >= %s AND bucket_start < %s ORDER BY bucket_start, series"
        params += [since, until]
        by_id: dict[int, list[tuple[int, int]]] = {}
        with self._tx() as cur:
            for series, start, queries in cur.execute(query, params):
                points = by_id.get(series)
                if points is None:
                    by_id[series] = [(start, queries)]
                elif points[-1][0] == start:
                    points[-1] = (start, points[-1][1] + queries)
                else:
                    points.append((start, queries))
            names = cur.execute(
                "SELECT id, di, region FROM series WHERE id = ANY(%s::bigint[])", (list(by_id),)
            ).fetchall()
        key_of = {series: (di, region) for series, di, region in names}
        return {key_of[series]: points for series, points in by_id.items()}

    def active_series(self, since: float) -> list[SeriesKey]:
        """Series that had at least one query in a minute ending after `since`, sorted."""
        rows = self._read(
            "SELECT di, region FROM series WHERE last_seen > %s ORDER BY di, region",
            (since - RESOLUTION_SECONDS["minute"],),
        )
        return [(di, region) for di, region in rows]

    # policy graph

    def replace_policy(self, origin: str, policy: Policy) -> None:
        """Replace zone `origin`'s locations, resources and DIs with `policy`, atomically.

        As `SQLiteStore.replace_policy`; rows are loaded with COPY.
        """
        if dns.name.from_text(origin) != policy.origin:
            raise ValueError(f"origin {origin} does not match policy origin {policy.origin}")
        rows = policy_rows(origin, policy)
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM di_resources WHERE di IN (SELECT name FROM dis WHERE zone = %s)",
                (origin,),
            )
            for table in ("dis", "resources", "locations", "location_distances"):
                cur.execute(f"DELETE FROM {table} WHERE zone = %s", (origin,))
            for table, table_rows in (
                ("locations", rows.locations),
                ("location_distances", rows.location_distances),
                ("resources", rows.resources),
                ("dis", rows.dis),
                ("di_resources", rows.di_resources),
            ):
                if not table_rows:
                    continue
                columns = list(table_rows[0])
                statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
                    sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
                )
                with cur.copy(statement) as copy:
                    for row in table_rows:
                        copy.write_row([row[column] for column in columns])

    def location_distances(self, origin: str) -> dict[tuple[str, str], float]:
        """Great-circle km between every ordered pair of zone `origin`'s locations."""
        rows = self._read("SELECT a, b, km FROM location_distances WHERE zone = %s", (origin,))
        return {(a, b): km for a, b, km in rows}

    def standby_within(self, di: str, location: str, km: float) -> list[StandbyCandidate]:
        """Standby resources of `di`'s pool within `km` of `location`, nearest first."""
        rows = self._read(_STANDBY_SQL, {"di": di, "location": location, "km": km})
        return [StandbyCandidate(*row) for row in rows]

    # allocations and generations

    def add_allocation(self, allocation: NewAllocation) -> Allocation:
        return self.add_allocations([allocation])[0]

    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]:
        """Write the allocations in one transaction; a second active allocation with the
        same (di, resource, region) is an error and writes nothing."""
        if not allocations:
            return []
        added: list[Allocation] = []
        with self._tx() as cur:
            cur.executemany(
                "INSERT INTO allocations (di, resource, region, state, valid_from, valid_until,"
                " generation, reason, demand, pinned, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {_ALLOCATION_COLUMNS}",
                [
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
                        a.pinned,
                        a.created_at,
                    )
                    for a in allocations
                ],
                returning=True,
            )
            while True:
                added.append(_allocation(cast(Sequence[Any], cur.fetchone())))
                if not cur.nextset():
                    break
        return added

    def list_allocations(self, active_only: bool = True, di: str | None = None) -> list[Allocation]:
        """Allocations by id; `active_only` leaves out released ones."""
        query = f"SELECT {_ALLOCATION_COLUMNS} FROM allocations WHERE true"
        params: list[Any] = []
        if active_only:
            query += " AND state <> 'released'"
        if di is not None:
            query += " AND di = %s"
            params.append(di)
        return [_allocation(row) for row in self._read(query + " ORDER BY id", params)]

    def remove_allocation(self, target: int | AllocationKey) -> int:
        """Delete an allocation by id, or the active one with this (di, resource, region)."""
        with self._tx() as cur:
            if isinstance(target, int):
                cur.execute("DELETE FROM allocations WHERE id = %s", (target,))
            else:
                cur.execute(
                    "DELETE FROM allocations WHERE di = %s AND resource = %s AND region = %s"
                    " AND state <> 'released'",
                    target,
                )
            return cur.rowcount

    def set_allocation_state(
        self, allocation_id: int, state: AllocationState, valid_until: float | None = None
    ) -> Allocation:
        """Move an allocation to `state` (and set `valid_until` when given)."""
        if state not in ALLOCATION_STATES:
            raise ValueError(f"allocation state {state!r} is not one of {ALLOCATION_STATES}")
        with self._tx() as cur:
            row = cur.execute(
                "UPDATE allocations SET state = %s,"
                " valid_until = COALESCE(%s::double precision, valid_until)"
                f" WHERE id = %s RETURNING {_ALLOCATION_COLUMNS}",
                (state, valid_until, allocation_id),
            ).fetchone()
            if row is None:
                raise StoreError(f"no allocation with id {allocation_id}")
        return _allocation(row)

    def allocations_version(self) -> int:
        """A number that changes with every write to the allocations table (any node)."""
        return int(self._read("SELECT value FROM allocations_version WHERE id = 1")[0][0])

    def bump_generation(self) -> int:
        """Start a new generation of allocations; returns its number (1, 2, ...)."""
        with self._tx() as cur:
            row = cur.execute(
                "UPDATE generation SET value = value + 1 WHERE id = 1 RETURNING value"
            ).fetchone()
        return int(cast(Sequence[Any], row)[0])

    def current_generation(self) -> int:
        """The latest generation number (0 before the first bump)."""
        return int(self._read("SELECT value FROM generation WHERE id = 1")[0][0])

    # forecasts and model choice

    def write_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Each forecast replaces the stored one of its (di, region, resolution); one
        transaction for all. Returns the number of points written."""
        latest: dict[tuple[str, str, str], Forecast] = {}
        written = 0
        for f in forecasts:
            latest[(f.resolution, f.di, f.region)] = f
            written += len(f.points)
        if not latest:
            return 0
        keys = sorted(latest)
        points = [(f, p) for key in keys for f in (latest[key],) for p in f.points]
        with self._tx() as cur:
            cur.execute(
                "DELETE FROM forecasts f"
                " USING unnest(%s::text[], %s::text[], %s::text[]) AS k (resolution, di, region)"
                " WHERE f.resolution = k.resolution AND f.di = k.di AND f.region = k.region",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
            )
            cur.execute(
                "INSERT INTO forecasts (resolution, di, region, ts, made_at, point, upper, model)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],"
                " %s::float8[], %s::float8[], %s::float8[], %s::text[])",
                (
                    [f.resolution for f, _ in points],
                    [f.di for f, _ in points],
                    [f.region for f, _ in points],
                    [p.ts for _, p in points],
                    [f.made_at for f, _ in points],
                    [p.point for _, p in points],
                    [p.upper for _, p in points],
                    [f.model for f, _ in points],
                ),
            )
        return written

    def read_forecasts(
        self,
        resolution: Resolution,
        di: str | None = None,
        region: str | None = None,
    ) -> list[Forecast]:
        """Stored forecasts of `resolution` (optionally of one di / region), by series."""
        query = (
            "SELECT di, region, made_at, model, ts, point, upper FROM forecasts"
            " WHERE resolution = %s"
        )
        params: list[Any] = [resolution]
        if di is not None:
            query += " AND di = %s"
            params.append(di)
        if region is not None:
            query += " AND region = %s"
            params.append(region)
        grouped: dict[SeriesKey, tuple[float, str, list[ForecastPoint]]] = {}
        for row_di, row_region, made_at, model, ts, point, upper in self._read(
            query + " ORDER BY di, region, ts", params
        ):
            entry = grouped.setdefault((row_di, row_region), (made_at, model, []))
            entry[2].append(ForecastPoint(ts, point, upper))
        return [
            Forecast(d, r, resolution, made_at, model, tuple(points))
            for (d, r), (made_at, model, points) in grouped.items()
        ]

    def write_model_choices(self, choices: Iterable[ModelChoice]) -> int:
        """Record (or replace) the model chosen per series; one transaction."""
        given = list(choices)
        latest = {(c.di, c.region): c for c in given}
        rows = [latest[key] for key in sorted(latest)]
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO model_choices (di, region, model, error, chosen_at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::float8[],"
                " %s::float8[]) ON CONFLICT (di, region) DO UPDATE SET"
                " model = excluded.model, error = excluded.error,"
                " chosen_at = excluded.chosen_at",
                (
                    [c.di for c in rows],
                    [c.region for c in rows],
                    [c.model for c in rows],
                    [c.error for c in rows],
                    [c.chosen_at for c in rows],
                ),
            )
        return len(given)

    def read_model_choices(self, di: str | None = None) -> list[ModelChoice]:
        query = "SELECT di, region, model, error, chosen_at FROM model_choices"
        params: list[Any] = []
        if di is not None:
            query += " WHERE di = %s"
            params.append(di)
        return [ModelChoice(*row) for row in self._read(query + " ORDER BY di, region", params)]

    # health

    def set_health_state(self, state: HealthState) -> bool:
        """Record a resource's state; a change is also appended to the event log.

        As `SQLiteStore.set_health_state`. The row is locked while it is compared, so two
        nodes reporting the same change log it once. An unchanged state writes nothing
        (and so bumps no change generation).
        """
        select = "SELECT state FROM health_state WHERE resource = %s FOR UPDATE"
        with self._tx() as cur:
            row = cur.execute(select, (state.resource,)).fetchone()
            if row is None:
                inserted = cur.execute(
                    "INSERT INTO health_state (resource, state, since, reason)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (resource) DO NOTHING RETURNING 1",
                    (state.resource, state.state, state.since, state.reason),
                ).fetchone()
                if inserted is None:  # another node inserted it meanwhile
                    row = cur.execute(select, (state.resource,)).fetchone()
            old = cast(HealthStatus | None, None if row is None else row[0])
            if row is not None:
                if old == state.state:
                    return False
                cur.execute(
                    "UPDATE health_state SET state = %s, since = %s, reason = %s"
                    " WHERE resource = %s",
                    (state.state, state.since, state.reason, state.resource),
                )
            event = cur.execute(
                "INSERT INTO health_events (resource, ts, old, new, reason)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                (state.resource, state.since, old, state.state, state.reason),
            ).fetchone()
            cur.execute(
                "DELETE FROM health_events WHERE id <= %s",
                (int(cast(Sequence[Any], event)[0]) - self.health_event_limit,),
            )
        return True

    def health_states(self) -> list[HealthState]:
        rows = self._read("SELECT resource, state, since, reason FROM health_state ORDER BY 1")
        return [HealthState(*row) for row in rows]

    def health_events(
        self, resource: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[HealthEvent]:
        """The newest `limit` events (of one resource, at or after `since`), oldest first."""
        query = "SELECT resource, ts, old, new, reason FROM health_events WHERE true"
        params: list[Any] = []
        if resource is not None:
            query += " AND resource = %s"
            params.append(resource)
        if since is not None:
            query += " AND ts >= %s"
            params.append(since)
        rows = self._read(query + " ORDER BY id DESC LIMIT %s", [*params, limit])
        return [HealthEvent(*row) for row in reversed(rows)]

    # API tokens and audit

    def add_token(self, token: ApiToken) -> None:
        """Store a token; an id or hash already stored is an error."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO api_tokens (id, name, role, hash, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (token.id, token.name, token.role, token.hash, token.created_at),
            )

    def get_token(self, token_id: str) -> ApiToken | None:
        rows = self._read(
            "SELECT id, name, role, hash, created_at FROM api_tokens WHERE id = %s", (token_id,)
        )
        return ApiToken(*rows[0]) if rows else None

    def get_token_by_hash(self, token_hash: str) -> ApiToken | None:
        rows = self._read(
            "SELECT id, name, role, hash, created_at FROM api_tokens WHERE hash = %s",
            (token_hash,),
        )
        return ApiToken(*rows[0]) if rows else None

    def list_tokens(self) -> list[ApiToken]:
        rows = self._read("SELECT id, name, role, hash, created_at FROM api_tokens ORDER BY id")
        return [ApiToken(*row) for row in rows]

    def delete_token(self, token_id: str) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM api_tokens WHERE id = %s", (token_id,))
            return cur.rowcount > 0

    def add_audit(self, entry: AuditEntry) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO audit_log (ts, token_id, action, object, before_json, after_json)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
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
        query = "SELECT ts, token_id, action, object, before_json, after_json FROM audit_log"
        params: list[Any] = []
        if since is not None:
            query += " WHERE ts >= %s"
            params.append(since)
        rows = self._read(query + " ORDER BY id DESC LIMIT %s", [*params, limit])
        return [AuditEntry(*row) for row in reversed(rows)]

    # fleet primitives

    def change_generation(self) -> int:
        """Bumped once by every transaction that changes answers (allocations, health,
        policy, zones, shared config files), whoever wrote it."""
        return int(self._read("SELECT value FROM change_generation WHERE id = 1")[0][0])

    def notify_change(self, channel: str, payload: str = "") -> None:
        """NOTIFY `channel` with `payload` (every node's listeners get it)."""
        check_channel(channel)
        check_payload(payload)
        with self._tx() as cur:
            cur.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def listen(self, channels: Iterable[str] = CHANNELS) -> PostgresListener:
        """A listener on its own connection, LISTENing to `channels` from now on."""
        return PostgresListener(lambda: self.connect(autocommit=True), channels, self.where)

    def try_leader_lock(self, name: str) -> bool:
        """Take the named session advisory lock without waiting, or confirm it is held.

        The lock lives on a connection of its own: when this store closes or its session
        dies (node crash, network loss), PostgreSQL releases it and another node's next
        try succeeds. A held lock is confirmed by checking that its session is alive, so
        call this before each round of leader work. StoreError when the database cannot
        be reached.
        """
        with self._leader_lock:
            if self._closed:
                raise StoreError(f"{self.where}: the store is closed")
            conn = self._leader_conn
            if conn is not None and name in self._leaders:
                try:
                    conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    pass
            if conn is not None and (conn.closed or conn.broken):
                conn.close()
                self._leaders.clear()
                conn = self._leader_conn = None
            if conn is None:
                conn = self._leader_conn = self.connect(autocommit=True)
            try:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s)", (lock_key(LEADER_PREFIX + name),)
                ).fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"{self.where}: leader lock {name!r}: {exc}") from exc
            held = bool(row and row[0])
            if held:
                self._leaders.add(name)
            return held

    def release_leader_lock(self, name: str) -> None:
        """Release the named lock if this store holds it."""
        with self._leader_lock:
            if name not in self._leaders:
                return
            self._leaders.discard(name)
            conn = self._leader_conn
            if conn is None:
                return
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (lock_key(LEADER_PREFIX + name),))
            except psycopg.Error:  # the session is gone, and the lock with it
                conn.close()
                self._leaders.clear()
                self._leader_conn = None


class PostgresListener:
    """LISTEN on a connection of its own (see `ChangeListener`).

    When the connection breaks, the next `poll` reconnects, LISTENs again and returns
    `(channel, "")` for every channel: notifications sent meanwhile are lost, so the
    caller re-reads. If the database is still unreachable, `poll` raises StoreError.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channels: Iterable[str],
        where: str,
    ) -> None:
        self._connect = connect
        self._channels = tuple(dict.fromkeys(check_channel(c) for c in channels))
        self._where = where
        self._closed = False
        self._conn = self._open()

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    def _open(self) -> psycopg.Connection[Any]:
        conn = self._connect()
        try:
            for channel in self._channels:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"{self._where}: LISTEN failed: {exc}") from exc
        return conn

    def _reconnect(self) -> list[Change]:
        self._conn.close()
        self._conn = self._open()
        return [(channel, "") for channel in self._channels]

    def poll(self, timeout: float = 0.0) -> list[Change]:
        """Notifications received since the last poll, waiting up to `timeout` seconds."""
        if self._closed:
            raise StoreError(f"{self._where}: listener is closed")
        if self._conn.closed or self._conn.broken:
            return self._reconnect()
        try:
            got = [
                (n.channel, n.payload) for n in self._conn.notifies(timeout=timeout, stop_after=1)
            ]
            if got:
                got += [(n.channel, n.payload) for n in self._conn.notifies(timeout=0)]
        except psycopg.Error:
            return self._reconnect()
        return got

    def close(self) -> None:
        self._closed = True
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
