"""DNSSEC key files shared by a fleet through the store: compare-and-set writes (a key is
never replaced by a writer that did not see it), change notifications, the migrations
that add the table, and that nothing but the fleet sync reads the rows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shadowdns.api
from shadowdns.store import CONFIG, KeyFile, Store
from shadowdns.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS

from .conftest import ORIGIN, Backend

CSK = "example.com.csk.pem"
PEM = b"-----BEGIN PRIVATE KEY-----\nfirst\n-----END PRIVATE KEY-----\n"
PEM_2 = b"-----BEGIN PRIVATE KEY-----\nsecond\n-----END PRIVATE KEY-----\n"


def test_a_new_name_is_added_once_and_the_first_writer_wins(backend: Backend) -> None:
    """Adding a name nobody holds stores it whole (bytes, any value); a second add of that
    name, from any node, returns False and leaves the first writer's key."""
    one, two = backend.open(), backend.open()
    assert one.key_files() == []
    binary = bytes(range(256)) * 4
    assert one.swap_key_file(ORIGIN, CSK, None, PEM, now=10.0) is True
    assert one.swap_key_file(ORIGIN, "example.com.zsk.json", None, binary, now=11.0) is True
    assert two.swap_key_file(ORIGIN, CSK, None, PEM_2, now=12.0) is False
    expected = [KeyFile(ORIGIN, CSK, PEM, 10.0),
                KeyFile(ORIGIN, "example.com.zsk.json", binary, 11.0)]
    assert one.key_files() == expected
    assert two.key_files() == expected


@pytest.mark.parametrize(("old", "new", "swapped", "left"), [
    pytest.param(PEM, PEM_2, True, [(PEM_2, 20.0)], id="replace-what-it-saw"),
    pytest.param(PEM_2, b"third", False, [(PEM, 10.0)], id="replace-what-it-did-not-see"),
    pytest.param(PEM, None, True, [], id="delete-what-it-saw"),
    pytest.param(PEM_2, None, False, [(PEM, 10.0)], id="delete-what-it-did-not-see"),
])
def test_replacing_or_deleting_needs_the_data_the_store_holds(
    store: Store, old: bytes, new: bytes | None, swapped: bool, left: list[tuple[bytes, float]]
) -> None:
    """A replace or delete happens only when `old` is what the store holds (compare and
    set); otherwise nothing changes."""
    store.swap_key_file(ORIGIN, CSK, None, PEM, now=10.0)
    assert store.swap_key_file(ORIGIN, CSK, old, new, now=20.0) is swapped
    assert [(k.data, k.created_at) for k in store.key_files()] == left


def test_a_change_bumps_the_generation_and_notifies_the_zone(backend: Backend) -> None:
    """Another node hears (shadowdns_config, origin) for each key added, replaced or
    deleted, and the change generation moves; a swap that loses does neither."""
    writer, receiver = backend.open(), backend.open()
    with receiver.listen([CONFIG]) as listener:
        before = writer.change_generation()
        assert writer.swap_key_file(ORIGIN, CSK, None, PEM)
        assert listener.poll(1.0) == [(CONFIG, ORIGIN)]
        assert writer.change_generation() == before + 1
        assert not writer.swap_key_file(ORIGIN, CSK, None, PEM_2)
        assert not writer.swap_key_file(ORIGIN, CSK, PEM_2, None)
        assert listener.poll(0.3) == []
        assert writer.change_generation() == before + 1
        assert writer.swap_key_file(ORIGIN, CSK, PEM, PEM_2)
        assert writer.swap_key_file(ORIGIN, CSK, PEM_2, None)
        got = listener.poll(1.0)
        if len(got) < 2:
            got += listener.poll(1.0)
        assert got == [(CONFIG, ORIGIN), (CONFIG, ORIGIN)]
        assert writer.change_generation() == before + 3


@pytest.mark.parametrize(("origin", "name"), [
    ("", CSK), (ORIGIN, ""), (ORIGIN, ".example.com.csk.pem.123.tmp"),
    (ORIGIN, "../example.com.csk.pem"), (ORIGIN, "a\x00b"), (ORIGIN, "x" * 256),
])
def test_a_name_that_is_not_a_plain_file_name_is_refused(
    store: Store, origin: str, name: str
) -> None:
    """Names a node could not write safely into its key directory (hidden, a path, NUL,
    too long) and an empty origin are refused before anything is written."""
    with pytest.raises(ValueError):
        store.swap_key_file(origin, name, None, PEM)
    assert store.key_files() == []


def test_swapping_nothing_for_nothing_is_an_error(store: Store) -> None:
    with pytest.raises(ValueError, match="old or new"):
        store.swap_key_file(ORIGIN, CSK, None, None)


def test_a_key_file_never_shows_its_key_in_repr() -> None:
    """A row in a log line or a traceback names the file, not the private key."""
    text = repr(KeyFile(ORIGIN, CSK, PEM, 1.0))
    assert CSK in text
    assert "PRIVATE" not in text and "first" not in text


def test_a_sqlite_database_of_the_previous_version_gains_the_table(tmp_path: Path) -> None:
    """Migration 10 adds the key table to a version 9 database and keeps its data."""
    path = tmp_path / "state.db"
    assert len(SQLITE_MIGRATIONS) == 10
    with SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:9]) as old:
        old.bump_generation()
    with SQLiteStore(path) as store:
        assert store.current_generation() == 1
        assert store.key_files() == []
        assert store.swap_key_file(ORIGIN, CSK, None, PEM, now=5.0)
        assert store.key_files() == [KeyFile(ORIGIN, CSK, PEM, 5.0)]


def test_a_postgres_database_of_the_previous_version_gains_the_table(pg_url: str) -> None:
    """Migration 9 adds the key table to a version 8 database, with the triggers that
    bump the existing change generation; no role but its owner may read it."""
    import psycopg

    from shadowdns.store.postgres import PostgresStore

    assert len(PG_MIGRATIONS) == 9
    with PostgresStore(pg_url, migrations=PG_MIGRATIONS[:8]) as old:
        old.bump_generation()
    with PostgresStore(pg_url) as store:
        assert store.current_generation() == 1
        assert store.key_files() == []
        assert store.swap_key_file(ORIGIN, CSK, None, PEM, now=5.0)
        assert store.key_files() == [KeyFile(ORIGIN, CSK, PEM, 5.0)]
        assert store.change_generation() == 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT relacl FROM pg_class WHERE relname = 'dnssec_keys'"
                           ).fetchone()
    assert row is not None
    assert not any(str(entry).startswith("=") for entry in row[0] or ())  # nothing PUBLIC


def test_no_api_module_reads_the_key_rows() -> None:
    """The REST API never lists or returns key material: no module of `shadowdns.api`
    calls the key methods or names the table (a tripwire for a future endpoint)."""
    api_dir = Path(shadowdns.api.__file__).parent
    pattern = re.compile(r"key_files|swap_key_file|dnssec_keys")
    offenders = [p.name for p in sorted(api_dir.rglob("*.py"))
                 if pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
