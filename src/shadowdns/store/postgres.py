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
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from shadowdns.errors import StoreError
from shadowdns.store.base import (
    RESOLUTION_SECONDS,
    Allocation,
    Forecast,
    HealthState,
    HealthStatus,
    ModelChoice,
    NewAllocation,
    Resolution,
    Retention,
    SeriesKey,
    check_config_file,
)
from shadowdns.store.fleet import (
    CHANNELS,
    LEADER_PREFIX,
    Change,
    check_channel,
    lock_key,
)
from shadowdns.store.postgres_schema import MIGRATIONS, Migration, migrate
from shadowdns.store.sqlstore import (
    ALLOCATION_COLUMNS,
    ROLLUPS,
    Closing,
    DemandCounts,
    SeriesSpans,
    SQLStore,
    allocation_from_row,
    allocation_values,
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

_KEEPALIVE: Mapping[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
}


def describe(url: str) -> str:
    """`url` without its password, for messages: postgresql://user@host:port/dbname."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql://?"
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


class PostgresStore(SQLStore):
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
        super().__init__(retention=retention, health_event_limit=health_event_limit)
        self.timeout = timeout
        self._leader_lock = threading.Lock()
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
    def _write(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: everything inside commits together or not at all."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.Error as exc:
                raise StoreError(f"{self.where}: {exc}") from exc

    def _read(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._write() as cur:
            return cur.execute(query, params).fetchall()

    def _reading(self) -> contextlib.AbstractContextManager[psycopg.Cursor[Any]]:
        return self._write()

    def _in_list(self, column: str, sql_type: str) -> str:
        return f"{column} = ANY(?::{sql_type}[])"

    def _list_param(self, values: list[Any]) -> Any:
        return values

    _NULLABLE_FLOAT = "?::double precision"

    def _q(self, sql: str) -> str:
        """psycopg's placeholders: `?` becomes `%s`."""
        return sql.replace("?", "%s")

    def _named(self, sql: str) -> str:
        """psycopg's named placeholders: `:name` becomes `%(name)s`."""
        return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)

    def _load_rows(self, conn: psycopg.Cursor[Any], table: str, columns: Sequence[str],
                   rows: Iterator[tuple[Any, ...]]) -> None:
        """Rows are loaded with COPY."""
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        with conn.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def _notify(self, conn: psycopg.Cursor[Any], channel: str, payload: str) -> None:
        """NOTIFY `channel` with `payload` (every node's listeners get it)."""
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    # zone and policy files shared by a fleet

    def put_config_file(self, origin: str, kind: str, text: str, now: float | None = None) -> bool:
        """Store the text of zone `origin`'s file of `kind`; True if it changed.

        As `SQLiteStore.put_config_file`; the bump and the notification come from the
        table's trigger. Two nodes writing the same new text at once: one gets True.
        """
        check_config_file(origin, kind, text)
        updated_at = time.time() if now is None else now
        with self._write() as cur:
            written = cur.execute(
                "INSERT INTO config_files AS c (origin, kind, text, updated_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (origin, kind) DO UPDATE SET"
                " text = excluded.text, updated_at = excluded.updated_at"
                " WHERE c.text IS DISTINCT FROM excluded.text RETURNING 1",
                (origin, kind, text, updated_at),
            ).fetchone()
        return written is not None

    # demand

    def _create_series(
        self, cur: psycopg.Cursor[Any], missing: list[SeriesKey], ids: dict[SeriesKey, int]
    ) -> None:
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

    def _add_demand_rows(
        self,
        cur: psycopg.Cursor[Any],
        ids: Mapping[SeriesKey, int],
        minute: DemandCounts,
        pending: DemandCounts,
        seen: SeriesSpans,
    ) -> None:
        """Bulk upserts in key order (see `_upsert_demand`); a retried `add_demand` racing
        the original waits on its `demand_batches` row until it commits."""
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

    def rollup(self, now: float) -> dict[Resolution, int]:
        """Add every bucket complete at `now` to the 5-minute and hourly tables.

        As `SQLiteStore.rollup`. Pending rows are deleted and added in one statement, so a
        flush or another node's rollup running meanwhile is neither lost nor counted twice.
        """
        written: dict[Resolution, int] = {}
        with self._write() as cur:
            for resolution, src, dst, nxt in ROLLUPS:
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

    # allocations and generations

    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]:
        """Write the allocations in one transaction; a second active allocation with the
        same (di, resource, region) is an error and writes nothing."""
        if not allocations:
            return []
        added: list[Allocation] = []
        with self._write() as cur:
            cur.executemany(
                "INSERT INTO allocations (di, resource, region, state, valid_from, valid_until,"
                " generation, reason, demand, pinned, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                f" RETURNING {ALLOCATION_COLUMNS}",
                [allocation_values(a) for a in allocations],
                returning=True,
            )
            while True:
                added.append(allocation_from_row(cast(Sequence[Any], cur.fetchone())))
                if not cur.nextset():
                    break
        return added

    # forecasts and model choice

    def write_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Each forecast replaces the points of its (di, region, resolution) from its first
        bucket on (see `Store.write_forecasts`); one transaction for all. Returns the number
        of points written."""
        latest: dict[tuple[str, str, str], Forecast] = {}
        written = 0
        for f in forecasts:
            latest[(f.resolution, f.di, f.region)] = f
            written += len(f.points)
        if not latest:
            return 0
        keys = sorted(latest)
        points = [(f, p) for key in keys for f in (latest[key],) for p in f.points]
        with self._write() as cur:
            cur.execute(
                "DELETE FROM forecasts f USING unnest(%s::text[], %s::text[], %s::text[],"
                " %s::bigint[]) AS k (resolution, di, region, first_ts)"
                " WHERE f.resolution = k.resolution AND f.di = k.di AND f.region = k.region"
                " AND f.ts >= k.first_ts",
                ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                 [latest[k].first_ts for k in keys]),
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

    def write_model_choices(self, choices: Iterable[ModelChoice]) -> int:
        """Record (or replace) the model chosen per series; one transaction."""
        given = list(choices)
        latest = {(c.di, c.region): c for c in given}
        rows = [latest[key] for key in sorted(latest)]
        with self._write() as cur:
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

    # health

    def set_health_state(self, state: HealthState) -> bool:
        """Record a resource's state; a change is also appended to the event log.

        As `SQLiteStore.set_health_state`. The row is locked while it is compared, so two
        nodes reporting the same change log it once. An unchanged state writes nothing
        (and so bumps no change generation).
        """
        select = "SELECT state FROM health_state WHERE resource = %s FOR UPDATE"
        with self._write() as cur:
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

    # fleet primitives

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


class PostgresListener(Closing):
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
