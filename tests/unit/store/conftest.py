"""Fixtures of the store tests: every backend, a fresh store of each, and a small policy.

`store` runs a test once per backend: SQLite on a temporary file, and PostgreSQL on a fresh
database of one throwaway server per session (`tests.pg`; skipped when the PostgreSQL
binaries or psycopg are missing). `backend` opens more stores on the same database, dumps
its contents, and plants failures.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import pytest

from shadowdns.store.base import Store
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.zones.policy import DI, Location, Policy, Regions, Resource
from tests.pg import PostgresServer, find_bin_dir

ORIGIN = "example.com."
BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, on 127.0.0.1 at a free port."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (extra: postgres)")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries not found (apt-get install postgresql, or set SHADOWDNS_PG_BIN)"
        )
    server = PostgresServer.start(bin_dir)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer) -> str:
    """A database migrated to the code's schema once, for fresh copies."""
    from shadowdns.store.postgres import PostgresStore

    url = pg_server.create_database(name="shadowdns_template")
    PostgresStore(url).close()
    return "shadowdns_template"


@pytest.fixture
def pg_store_url(pg_server: PostgresServer, pg_template: str) -> Iterator[str]:
    """The URL of a fresh database already at the code's schema, dropped after the test."""
    url = pg_server.create_database(template=pg_template)
    yield url
    pg_server.drop_database(url)


def dump(path: Path) -> list[str]:
    """Every statement that recreates the database: equal dumps mean equal contents."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _pg_dump(url: str) -> list[str]:
    import psycopg

    lines: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            width = len(conn.execute(f'SELECT * FROM "{table}" LIMIT 0').description or ())
            order = ", ".join(str(i + 1) for i in range(width))
            rows = conn.execute(f'SELECT * FROM "{table}" ORDER BY {order}').fetchall()
            lines += [f"{table}: {row!r}" for row in rows]
    return lines


@dataclass
class Backend:
    """One database of one backend, and ways to look at it from outside the store."""

    name: str
    target: str
    opened: list[Store] = field(default_factory=list)

    def open(self, **options: Any) -> Store:
        """Another store on this database (closed after the test)."""
        store: Store
        if self.name == "sqlite":
            store = SQLiteStore(self.target, **options)
        else:
            from shadowdns.store.postgres import PostgresStore

            store = PostgresStore(self.target, **options)
        self.opened.append(store)
        return store

    def dump(self) -> list[str]:
        """The whole contents: equal dumps mean equal contents."""
        return dump(Path(self.target)) if self.name == "sqlite" else _pg_dump(self.target)

    def execute(self, sql: str) -> None:
        """Run SQL on a connection of its own, committed."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                conn.executescript(sql)
            finally:
                conn.close()
        else:
            import psycopg

            with psycopg.connect(self.target, autocommit=True) as pg:
                pg.execute(sql.encode())

    def fail_inserts(self, table: str, column: str, value: int) -> None:
        """From now on, inserting a row of `table` whose `column` is `value` fails 'boom'."""
        if self.name == "sqlite":
            self.execute(
                f"CREATE TRIGGER boom BEFORE INSERT ON {table} WHEN NEW.{column} = {value}"
                " BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        else:
            self.execute(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.{column} = {value} THEN RAISE EXCEPTION 'boom'; END IF;"
                " RETURN NEW; END $$;"
                f" CREATE TRIGGER boom BEFORE INSERT ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION boom();"
            )

    def stop_failing(self, table: str) -> None:
        """Undo `fail_inserts` on `table`."""
        if self.name == "sqlite":
            self.execute("DROP TRIGGER boom")
        else:
            self.execute(f"DROP TRIGGER boom ON {table}; DROP FUNCTION boom();")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, on a fresh database."""
    if request.param == "sqlite":
        chosen = Backend("sqlite", str(tmp_path / "state.db"))
    else:
        chosen = Backend("postgres", request.getfixturevalue("pg_store_url"))
    yield chosen
    for store in chosen.opened:
        store.close()


@pytest.fixture
def pg_backend(pg_store_url: str) -> Iterator[Backend]:
    """PostgreSQL only, on a fresh database (for what only the fleet store does)."""
    chosen = Backend("postgres", pg_store_url)
    yield chosen
    for store in chosen.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    """A fresh store of each backend."""
    return backend.open()


def make_policy(
    origin: str = ORIGIN,
    *,
    locations: dict[str, tuple[float, float]] | None = None,
    resources: dict[str, tuple[str, str, float]] | None = None,
    dis: dict[str, tuple[tuple[str, ...], tuple[str, ...], float | None]] | None = None,
) -> Policy:
    """A policy from compact tables: location -> (lat, lon); resource -> (location, role,
    capacity); DI label -> (primaries, standby, standby_within_km)."""
    locations = locations or {
        "eu-west": (52.37, 4.90),
        "eu-central": (50.11, 8.68),
        "us-east": (38.90, -77.04),
        "ap-east": (35.68, 139.69),
    }
    resources = resources or {
        "web-eu-1": ("eu-west", "primary", 1000.0),
        "web-us-1": ("us-east", "primary", 1000.0),
        "sb-eu-1": ("eu-central", "standby", 300.0),
        "sb-us-1": ("us-east", "standby", 400.0),
        "sb-ap-1": ("ap-east", "standby", 500.0),
    }
    dis = dis or {
        "app": (("web-eu-1", "web-us-1"), ("sb-ap-1", "sb-us-1", "sb-eu-1"), None),
        "api": (("web-eu-1",), (), 1000.0),
    }
    origin_name = dns.name.from_text(origin)
    return Policy(
        origin=origin_name,
        locations={name: Location(name, lat, lon) for name, (lat, lon) in locations.items()},
        regions=Regions(default=next(iter(locations))),
        resources={
            rid: Resource(
                id=rid,
                location=loc,
                role="primary" if role == "primary" else "standby",
                address=f"192.0.2.{i + 1}",
                capacity=capacity,
            )
            for i, (rid, (loc, role, capacity)) in enumerate(resources.items())
        },
        dis={
            dns.name.from_text(label, origin_name): DI(
                name=dns.name.from_text(label, origin_name),
                primaries=primaries,
                standby=standby,
                standby_within_km=within,
            )
            for label, (primaries, standby, within) in dis.items()
        },
    )
