"""Zone and policy files shared by a fleet through the store: storing, change detection,
the change generation and `shadowdns_config` notifications, deletion, and atomicity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shadowdns.errors import StoreError
from shadowdns.store import CHANNELS, CONFIG, ConfigFile, Store
from shadowdns.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS

from .conftest import ORIGIN, Backend

OTHER = "example.net."
ZONE = "$ORIGIN example.com.\n@ 3600 IN SOA ns1 hostmaster 1 7200 3600 1209600 300\n"
ZONE_2 = ZONE.replace(" 1 7200", " 2 7200")
POLICY = "origin: example.com.\nlocations: {}\n"


def test_config_file_name_is_the_channel() -> None:
    """Config changes go out on `shadowdns_config`, which default listeners hear."""
    assert CONFIG == "shadowdns_config"
    assert CONFIG in CHANNELS


def test_files_round_trip_in_origin_kind_order(backend: Backend) -> None:
    """Every stored file comes back whole, ordered by (origin, kind), on every node."""
    writer = backend.open()
    assert writer.config_files() == []
    assert writer.put_config_file(OTHER, "zone", "other zone\n", now=30.0)
    assert writer.put_config_file(ORIGIN, "zone", ZONE, now=10.0)
    assert writer.put_config_file(ORIGIN, "policy", POLICY, now=20.0)
    big = "x" * 200_000 + "\n\u00e9\u4e2d\n"
    assert writer.put_config_file("b.example.", "zone", big, now=40.0)
    expected = [
        ConfigFile("b.example.", "zone", big, 40.0),
        ConfigFile(ORIGIN, "policy", POLICY, 20.0),
        ConfigFile(ORIGIN, "zone", ZONE, 10.0),
        ConfigFile(OTHER, "zone", "other zone\n", 30.0),
    ]
    assert writer.config_files() == expected
    assert backend.open().config_files() == expected


def test_changed_text_replaces_the_file_and_identical_text_writes_nothing(
    store: Store, backend: Backend
) -> None:
    """New or different text returns True and bumps the generation once; the text already
    stored returns False and leaves the database (and `updated_at`) as it was."""
    before = store.change_generation()
    assert store.put_config_file(ORIGIN, "zone", ZONE, now=10.0) is True
    assert store.change_generation() == before + 1
    assert store.put_config_file(ORIGIN, "zone", ZONE_2, now=20.0) is True
    assert store.change_generation() == before + 2
    assert store.config_files() == [ConfigFile(ORIGIN, "zone", ZONE_2, 20.0)]
    dumped = backend.dump()
    assert store.put_config_file(ORIGIN, "zone", ZONE_2, now=30.0) is False
    assert backend.open().put_config_file(ORIGIN, "zone", ZONE_2) is False
    assert store.change_generation() == before + 2
    assert backend.dump() == dumped
    assert store.config_files() == [ConfigFile(ORIGIN, "zone", ZONE_2, 20.0)]


def test_without_now_the_current_time_is_stamped(store: Store) -> None:
    start = time.time()
    store.put_config_file(ORIGIN, "zone", ZONE)
    (stored,) = store.config_files()
    assert start - 1 <= stored.updated_at <= time.time() + 1


def test_a_change_notifies_shadowdns_config_with_the_origin(backend: Backend) -> None:
    """A listener on another connection (another node) gets (shadowdns_config, origin) for
    each change, on the config channel and on the default channels; identical text sends
    nothing."""
    store = backend.open()
    store.put_config_file(OTHER, "zone", "other\n")
    receiver = backend.open()
    with receiver.listen([CONFIG]) as config, receiver.listen() as default:
        store.put_config_file(ORIGIN, "zone", ZONE)
        assert config.poll(1.0) == [(CONFIG, ORIGIN)]
        assert default.poll(1.0) == [(CONFIG, ORIGIN)]
        store.put_config_file(ORIGIN, "zone", ZONE)
        store.put_config_file(OTHER, "zone", "other\n")
        assert config.poll(0.3) == []
        store.put_config_file(ORIGIN, "policy", POLICY)
        assert config.poll(1.0) == [(CONFIG, ORIGIN)]
        store.put_config_file(OTHER, "zone", "changed\n")
        assert config.poll(1.0) == [(CONFIG, OTHER)]
        got = default.poll(1.0)
        if len(got) < 2:
            got += default.poll(1.0)
        assert got == [(CONFIG, ORIGIN), (CONFIG, OTHER)]


def test_delete_forgets_one_file_and_notifies(store: Store) -> None:
    """Deleting returns True once (bump + notification), then False (neither)."""
    store.put_config_file(ORIGIN, "zone", ZONE, now=1.0)
    store.put_config_file(ORIGIN, "policy", POLICY, now=2.0)
    with store.listen([CONFIG]) as listener:
        before = store.change_generation()
        assert store.delete_config_file(ORIGIN, "policy") is True
        assert store.change_generation() == before + 1
        assert listener.poll(1.0) == [(CONFIG, ORIGIN)]
        assert store.config_files() == [ConfigFile(ORIGIN, "zone", ZONE, 1.0)]
        assert store.delete_config_file(ORIGIN, "policy") is False
        assert store.delete_config_file(OTHER, "zone") is False
        assert store.change_generation() == before + 1
        assert listener.poll(0.3) == []
    assert store.put_config_file(ORIGIN, "policy", POLICY) is True


@pytest.mark.parametrize(
    ("origin", "kind", "text"),
    [
        pytest.param(ORIGIN, "policies", POLICY, id="bad-kind"),
        pytest.param(ORIGIN, "", ZONE, id="empty-kind"),
        pytest.param(ORIGIN, "Zone", ZONE, id="kind-case"),
        pytest.param("", "zone", ZONE, id="empty-origin"),
        pytest.param("x" * 8000, "zone", ZONE, id="origin-over-payload"),
        pytest.param(ORIGIN, "zone", "nul\x00", id="nul-in-text"),
    ],
)
def test_unusable_files_are_refused_before_anything_is_written(
    store: Store, backend: Backend, origin: str, kind: str, text: str
) -> None:
    """A kind other than zone/policy (and an origin or text the store cannot keep or
    announce) raises ValueError and writes nothing."""
    dumped = backend.dump()
    with pytest.raises(ValueError):
        store.put_config_file(origin, kind, text)
    if "\x00" not in text:  # the only refusal that depends on the text
        with pytest.raises(ValueError):
            store.delete_config_file(origin, kind)
    assert backend.dump() == dumped


def test_a_config_file_value_checks_its_kind() -> None:
    with pytest.raises(ValueError, match="kind"):
        ConfigFile(ORIGIN, "policies", POLICY, 1.0)


def _fail_generation_bumps(backend: Backend) -> None:
    """From now on, bumping the change generation fails 'boom'."""
    if backend.name == "sqlite":
        backend.execute(
            "CREATE TRIGGER boom BEFORE UPDATE ON change_generation"
            " BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
    else:
        backend.execute(
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'boom'; END $$;"
            " CREATE TRIGGER boom BEFORE UPDATE ON change_generation"
            " FOR EACH ROW EXECUTE FUNCTION boom();"
        )


def _stop_failing(backend: Backend) -> None:
    if backend.name == "sqlite":
        backend.execute("DROP TRIGGER boom")
    else:
        backend.execute("DROP TRIGGER boom ON change_generation; DROP FUNCTION boom();")


def test_a_failed_write_stores_nothing_and_notifies_nobody(store: Store, backend: Backend) -> None:
    """When the generation bump fails, the file write in the same transaction is rolled
    back: no new file, no changed text, no deletion, no notification; a retry works."""
    store.put_config_file(ORIGIN, "zone", ZONE, now=1.0)
    before = store.change_generation()
    dumped = backend.dump()
    _fail_generation_bumps(backend)
    with store.listen([CONFIG]) as listener:
        with pytest.raises(StoreError, match="boom"):
            store.put_config_file(ORIGIN, "policy", POLICY, now=2.0)
        with pytest.raises(StoreError, match="boom"):
            store.put_config_file(ORIGIN, "zone", ZONE_2, now=2.0)
        with pytest.raises(StoreError, match="boom"):
            store.delete_config_file(ORIGIN, "zone")
        assert store.put_config_file(ORIGIN, "zone", ZONE, now=3.0) is False
        assert listener.poll(0.3) == []
    _stop_failing(backend)
    assert backend.dump() == dumped
    assert store.config_files() == [ConfigFile(ORIGIN, "zone", ZONE, 1.0)]
    assert store.change_generation() == before
    assert store.put_config_file(ORIGIN, "zone", ZONE_2, now=4.0) is True
    assert store.config_files() == [ConfigFile(ORIGIN, "zone", ZONE_2, 4.0)]


def test_a_sqlite_database_without_config_files_is_upgraded(tmp_path: Path) -> None:
    """A database written before shared config files gains the table, keeping its data."""
    path = tmp_path / "state.db"
    with SQLiteStore(path, migrations=SQLITE_MIGRATIONS[:-1]) as old:
        old.bump_generation()
    with SQLiteStore(path) as store:
        assert store.current_generation() == 1
        assert store.config_files() == []
        assert store.put_config_file(ORIGIN, "zone", ZONE)


def test_a_postgres_database_without_config_files_is_upgraded(pg_url: str) -> None:
    """Likewise on PostgreSQL: the trigger bumps the existing change generation."""
    from shadowdns.store.postgres import PostgresStore

    with PostgresStore(pg_url, migrations=PG_MIGRATIONS[:-1]) as old:
        old.bump_generation()
    with PostgresStore(pg_url) as store:
        assert store.current_generation() == 1
        assert store.config_files() == []
        assert store.put_config_file(ORIGIN, "zone", ZONE)
        assert store.change_generation() == 1


def test_postgres_hand_written_sql_notifies_too(pg_backend: Backend) -> None:
    """The trigger sees every writer: an operator's UPDATE notifies the origin and bumps
    the generation once; an UPDATE that changes no text does neither; TRUNCATE sends ""
    (re-read everything)."""
    store = pg_backend.open()
    store.put_config_file(ORIGIN, "zone", ZONE)
    store.put_config_file(OTHER, "zone", "other\n")
    with store.listen([CONFIG]) as listener:
        before = store.change_generation()
        pg_backend.execute("UPDATE config_files SET updated_at = 5 WHERE origin = 'example.com.'")
        assert listener.poll(0.3) == []
        assert store.change_generation() == before
        pg_backend.execute("UPDATE config_files SET text = text || ';'")
        got = listener.poll(1.0)
        if len(got) < 2:
            got += listener.poll(1.0)
        assert sorted(got) == [(CONFIG, ORIGIN), (CONFIG, OTHER)]
        assert store.change_generation() == before + 1
        pg_backend.execute("TRUNCATE config_files")
        assert listener.poll(1.0) == [(CONFIG, "")]
        assert store.change_generation() == before + 2
    assert store.config_files() == []
