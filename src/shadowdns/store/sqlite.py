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
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import sqlite_utils

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
    ALLOCATIONS,
    CHANNELS,
    CONFIG,
    HEALTH,
    Change,
    check_channel,
)
from shadowdns.store.sqlite_schema import MIGRATIONS, Migration, migrate
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
INSERT INTO {table} (bucket_start, series, kind, queries) VALUES (?, ?, ?, ?)
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = queries + excluded.queries
"""

_MOVE_DEMAND_SQL = """
INSERT INTO {dst} (bucket_start, series, kind, queries)
SELECT (bucket_start / {size}) * {size}, series, kind, SUM(queries) FROM {src}
WHERE bucket_start <= ? GROUP BY 1, 2, 3
ON CONFLICT (bucket_start, series, kind) DO UPDATE SET queries = queries + excluded.queries
"""

_CHANGE_LOG_LENGTH = 1000
"""Notifications kept for SQLite listeners; a listener further behind misses the oldest."""

log = logging.getLogger(__name__)


class SQLiteStore(SQLStore):
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
        super().__init__(retention=retention, health_event_limit=health_event_limit)
        if self.path != ":memory:":
            _private_file(Path(self.path))
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

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db.conn
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        with self._reading() as conn:
            return conn.execute(sql, params).fetchall()

    def _in_list(self, column: str, sql_type: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def _list_param(self, values: list[Any]) -> Any:
        return json.dumps(values)

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

    # demand

    def _create_series(
        self, conn: sqlite3.Connection, missing: list[SeriesKey], ids: dict[SeriesKey, int]
    ) -> None:
        conn.executemany(
            "INSERT INTO series (di, region) VALUES (?, ?) ON CONFLICT DO NOTHING", missing
        )
        for key in missing:
            row = conn.execute("SELECT id FROM series WHERE di = ? AND region = ?", key).fetchone()
            ids[key] = int(row[0])

    def _add_demand_rows(
        self,
        conn: sqlite3.Connection,
        ids: Mapping[SeriesKey, int],
        minute: DemandCounts,
        pending: DemandCounts,
        seen: SeriesSpans,
    ) -> None:
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

    def rollup(self, now: float) -> dict[Resolution, int]:
        """Add every bucket complete at `now` to the 5-minute and hourly tables.

        A 5-minute (hourly) bucket is complete once `bucket_start + 300 (3600) <= now`; a
        bucket still open stays pending, so the coarse tables never hold partial buckets.
        Late queries for an already rolled-up bucket are added at the next rollup. Returns
        the rows written per resolution.
        """
        written: dict[Resolution, int] = {}
        with self._write() as conn:
            for resolution, src, dst, nxt in ROLLUPS:
                size = RESOLUTION_SECONDS[resolution]
                cut = (now - size,)
                cursor = conn.execute(_MOVE_DEMAND_SQL.format(dst=dst, src=src, size=size), cut)
                written[resolution] = cursor.rowcount
                if nxt is not None:
                    conn.execute(_MOVE_DEMAND_SQL.format(dst=nxt, src=src, size=3600), cut)
                conn.execute(f"DELETE FROM {src} WHERE bucket_start <= ?", cut)
        return written

    # allocations and generations

    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]:
        """Write the allocations in one transaction; a second active allocation with the
        same (di, resource, region) is an error and writes nothing."""
        added: list[Allocation] = []
        with self._write() as conn:
            for a in allocations:
                row = conn.execute(
                    f"INSERT INTO allocations ({ALLOCATION_COLUMNS})"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    f" RETURNING {ALLOCATION_COLUMNS}",
                    allocation_values(a),
                ).fetchone()
                added.append(allocation_from_row(row))
            if added:
                self._changed(conn, ALLOCATIONS)
        return added

    # forecasts and model choice

    def write_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Each forecast replaces the points of its (di, region, resolution) from its first
        bucket on (see `Store.write_forecasts`); one transaction for all. Returns the number
        of points written."""
        written = 0
        with self._write() as conn:
            for f in forecasts:
                conn.execute(
                    "DELETE FROM forecasts WHERE resolution = ? AND di = ? AND region = ?"
                    " AND ts >= ?",
                    (f.resolution, f.di, f.region, f.first_ts),
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

    # policy graph

    def _load_rows(self, conn: sqlite3.Connection, table: str, columns: Sequence[str],
                   rows: Iterator[tuple[Any, ...]]) -> None:
        # Plain executemany: a policy graph can be millions of rows, and sqlite-utils' dict
        # rows cost several times more per row.
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

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


class SQLiteListener(Closing):
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


def _private_file(path: Path) -> None:
    """Create the database file (and its directory) for this user only, before SQLite
    does with the process umask; tighten an existing one that others can read (it holds
    token hashes and the audit log). SQLite gives its -wal and -shm files the same mode."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & 0o077 and path.is_file() and path.stat().st_uid == os.getuid():
            os.chmod(path, mode & 0o700)
            log.info("%s was readable by others; now mode %o", path, mode & 0o700)
    except OSError:
        return  # SQLite says what is wrong, with the path
