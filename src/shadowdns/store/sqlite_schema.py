"""The SQLite schema as numbered migrations, and the code that applies them.

Migration N is `MIGRATIONS[N - 1]`: an SQL script or a callable taking the sqlite-utils
`Database`. `migrate` applies every pending one, in order, in a single transaction, and
records the new version in `schema_version`; a database already at the code's version is
left untouched, and one newer than the code is refused. Never edit a released migration:
append a new one.

Demand rows name their series (di, region) by the integer id of a `series` row, so rows
stay small and reads return no strings per row; series rows are never deleted, so an id
means the same series forever (stores may cache it). Demand tables are keyed
(bucket_start, series, kind): a time range over all series is one primary-key range scan in
time order; a second index (series, bucket_start) serves reads of a few series.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence

import sqlite_utils

from shadowdns.errors import StoreError

Migration = str | Callable[[sqlite_utils.Database], None]

_KINDS_V1 = "'shadow', 'primary', 'fallback', 'static'"
_KINDS_V6 = "'shadow', 'primary', 'fallback', 'nodata', 'static'"
_DEMAND_TABLES = ("demand_minute", "demand_5m", "demand_hour", "demand_pending_5m",
                  "demand_pending_hour")
_INDEXED_DEMAND_TABLES = ("demand_minute", "demand_5m", "demand_hour")


def _demand_table(name: str, kinds: str = _KINDS_V1) -> str:
    return f"""
CREATE TABLE {name} (
    bucket_start INTEGER NOT NULL,
    series INTEGER NOT NULL REFERENCES series (id),
    kind TEXT NOT NULL CHECK (kind IN ({kinds})),
    queries INTEGER NOT NULL CHECK (queries >= 0),
    PRIMARY KEY (bucket_start, series, kind)
) WITHOUT ROWID;
"""


_V1 = (
    """
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    di TEXT NOT NULL,
    region TEXT NOT NULL,
    first_seen INTEGER,
    last_seen INTEGER,
    UNIQUE (di, region)
);
CREATE INDEX series_last_seen ON series (last_seen);

CREATE TABLE zones (
    origin TEXT PRIMARY KEY,
    file TEXT,
    serial INTEGER NOT NULL,
    loaded_at REAL NOT NULL
);
"""
    + _demand_table("demand_minute")
    + _demand_table("demand_5m")
    + _demand_table("demand_hour")
    + _demand_table("demand_pending_5m")
    + _demand_table("demand_pending_hour")
    + """
CREATE INDEX demand_minute_series ON demand_minute (series, bucket_start);
CREATE INDEX demand_5m_series ON demand_5m (series, bucket_start);
CREATE INDEX demand_hour_series ON demand_hour (series, bucket_start);

CREATE TABLE locations (
    zone TEXT NOT NULL,
    name TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    continent TEXT,
    PRIMARY KEY (zone, name)
) WITHOUT ROWID;

CREATE TABLE location_distances (
    zone TEXT NOT NULL,
    a TEXT NOT NULL,
    b TEXT NOT NULL,
    km REAL NOT NULL,
    PRIMARY KEY (zone, a, b)
) WITHOUT ROWID;

CREATE TABLE resources (
    zone TEXT NOT NULL,
    id TEXT NOT NULL,
    address TEXT,
    address6 TEXT,
    location TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('primary', 'standby')),
    capacity REAL NOT NULL,
    cost REAL NOT NULL,
    warmup REAL NOT NULL,
    check_json TEXT,
    override TEXT NOT NULL CHECK (override IN ('obey', 'up', 'down')),
    PRIMARY KEY (zone, id)
) WITHOUT ROWID;

CREATE TABLE dis (
    name TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    answers INTEGER NOT NULL,
    all_down TEXT NOT NULL CHECK (all_down IN ('primaries', 'nodata')),
    standby_within_km REAL,
    policy_json TEXT NOT NULL
);
CREATE INDEX dis_zone ON dis (zone);

CREATE TABLE di_resources (
    di TEXT NOT NULL,
    resource TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('primary', 'standby')),
    position INTEGER NOT NULL,
    PRIMARY KEY (di, resource, role)
) WITHOUT ROWID;

CREATE TABLE allocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    di TEXT NOT NULL,
    resource TEXT NOT NULL,
    region TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('warming', 'ready', 'draining', 'released')),
    valid_from REAL NOT NULL,
    valid_until REAL,
    generation INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    demand REAL NOT NULL DEFAULT 0 CHECK (demand >= 0),
    pinned INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX allocations_active_key
    ON allocations (di, resource, region) WHERE state != 'released';
CREATE INDEX allocations_active_resource
    ON allocations (resource) WHERE state != 'released';

CREATE TABLE generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO generation (id, value) VALUES (1, 0);

CREATE TABLE allocations_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO allocations_version (id, value) VALUES (1, 0);
CREATE TRIGGER allocations_version_insert AFTER INSERT ON allocations BEGIN
    UPDATE allocations_version SET value = value + 1 WHERE id = 1;
END;
CREATE TRIGGER allocations_version_update AFTER UPDATE ON allocations BEGIN
    UPDATE allocations_version SET value = value + 1 WHERE id = 1;
END;
CREATE TRIGGER allocations_version_delete AFTER DELETE ON allocations BEGIN
    UPDATE allocations_version SET value = value + 1 WHERE id = 1;
END;

CREATE TABLE forecasts (
    resolution TEXT NOT NULL CHECK (resolution IN ('minute', '5m', 'hour')),
    di TEXT NOT NULL,
    region TEXT NOT NULL,
    ts INTEGER NOT NULL,
    made_at REAL NOT NULL,
    point REAL NOT NULL,
    upper REAL NOT NULL,
    model TEXT NOT NULL,
    PRIMARY KEY (resolution, di, region, ts)
) WITHOUT ROWID;

CREATE TABLE model_choices (
    di TEXT NOT NULL,
    region TEXT NOT NULL,
    model TEXT NOT NULL,
    error REAL NOT NULL,
    chosen_at REAL NOT NULL,
    PRIMARY KEY (di, region)
) WITHOUT ROWID;

CREATE TABLE health_state (
    resource TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('up', 'down')),
    since REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);

CREATE TABLE health_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    resource TEXT NOT NULL,
    ts REAL NOT NULL,
    old TEXT CHECK (old IN ('up', 'down')),
    new TEXT NOT NULL CHECK (new IN ('up', 'down')),
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX health_events_resource ON health_events (resource, id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    token_id TEXT,
    action TEXT NOT NULL,
    object TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT
);
CREATE INDEX audit_log_ts ON audit_log (ts);
"""
)

_V2 = """
CREATE TABLE demand_batches (
    batch_id TEXT PRIMARY KEY,
    last_bucket INTEGER NOT NULL,
    applied_at REAL NOT NULL
);
CREATE INDEX demand_batches_last_bucket ON demand_batches (last_bucket);

CREATE TABLE change_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO change_generation (id, value) VALUES (1, 0);

CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    payload TEXT NOT NULL,
    ts REAL NOT NULL
);
"""
"""Fleet mode: ids of applied demand batches (idempotent retries), the change generation,
and the short log of change notifications that SQLite listeners poll."""

_V3 = """
CREATE TABLE config_files (
    origin TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('zone', 'policy')),
    text TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (origin, kind)
);
"""
"""Zone master files and policy files shared by the nodes of a fleet, in full (a rowid
table: the text can be large)."""

_V4 = """
CREATE TABLE health_observations (
    resource TEXT NOT NULL,
    node TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('up', 'down')),
    ts REAL NOT NULL,
    PRIMARY KEY (resource, node)
);
"""
"""What each node of a fleet last saw of each resource; the shared health state is the
quorum of the fresh observations."""

_V5 = """
ALTER TABLE zones ADD COLUMN policy_digest TEXT;
"""
"""The digest of the policy file whose graph the store holds: a restart with the same file
does not rewrite millions of rows."""



def _v6(db: sqlite_utils.Database) -> None:
    """Demand of NODATA answers (`all_down: nodata`): the kind is added to the CHECK of
    every demand table. SQLite cannot alter a CHECK, so each table is rebuilt, statement by
    statement inside `migrate`'s transaction (`executescript` would commit halfway)."""
    conn = db.conn
    for table in _DEMAND_TABLES:
        conn.execute(_demand_table(f"{table}_v6", _KINDS_V6))
        conn.execute(f"INSERT INTO {table}_v6 (bucket_start, series, kind, queries)"
                     f" SELECT bucket_start, series, kind, queries FROM {table}")
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_v6 RENAME TO {table}")
    for table in _INDEXED_DEMAND_TABLES:
        conn.execute(f"CREATE INDEX {table}_series ON {table} (series, bucket_start)")


_V7 = """
ALTER TABLE api_tokens ADD COLUMN expires_at REAL;
"""
"""Optional token expiry (epoch seconds; NULL never expires)."""



def _v8(db: sqlite_utils.Database) -> None:
    """`allocator.yaml` is shared through `config_files` too (kind "allocator"): the
    table is rebuilt with the wider CHECK (SQLite cannot alter one), inside `migrate`'s
    transaction."""
    conn = db.conn
    conn.execute("""
CREATE TABLE config_files_v8 (
    origin TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('zone', 'policy', 'allocator')),
    text TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (origin, kind)
)""")
    conn.execute("INSERT INTO config_files_v8 (origin, kind, text, updated_at)"
                 " SELECT origin, kind, text, updated_at FROM config_files")
    conn.execute("DROP TABLE config_files")
    conn.execute("ALTER TABLE config_files_v8 RENAME TO config_files")


_V9 = """
CREATE INDEX forecasts_ts ON forecasts (ts);
"""
"""Forecast points of past buckets are kept (what was forecast for them) until retention
deletes them by time."""

_V10 = """
CREATE TABLE dnssec_keys (
    name TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    data BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""
"""DNSSEC key files shared by the nodes of a fleet (`shadowdns.fleet.sync_keys`), by their
name in the key directory: private keys, in a file only the server can read."""

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2, _V3, _V4, _V5, _v6, _V7, _v8, _V9, _V10)
"""Every migration of the schema, oldest first; the code's schema version is its length."""

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at REAL NOT NULL
);
"""


def schema_version(db: sqlite_utils.Database) -> int:
    """The version recorded in the database (0 for a database never migrated)."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _check_not_newer(found: int, known: int, where: str) -> None:
    if found > known:
        raise StoreError(
            f"{where}: schema version {found} is newer than this shadowdns knows ({known});"
            " upgrade shadowdns"
        )


def migrate(db: sqlite_utils.Database, migrations: Sequence[Migration], where: str) -> int:
    """Bring the schema up to `len(migrations)`; returns how many migrations ran."""
    target = len(migrations)
    current = schema_version(db)
    _check_not_newer(current, target, where)
    if current == target:
        return 0
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = schema_version(db)  # another process may have migrated meanwhile
        _check_not_newer(current, target, where)
        db.executescript(_VERSION_TABLE)
        for version in range(current + 1, target + 1):
            step = migrations[version - 1]
            if isinstance(step, str):
                db.executescript(step)
            else:
                step(db)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{where}: migration failed: {exc}") from exc
        raise
    return target - current
