"""Choosing a store: URLs and paths, and where the default state lives."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

import shadowdns.store
from shadowdns.errors import StoreError
from shadowdns.store import default_state_path, open_store
from shadowdns.store.factory import sqlite_path
from shadowdns.store.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/var/lib/shadowdns/state.db", "/var/lib/shadowdns/state.db"),
        ("state.db", "state.db"),
        ("sqlite:////var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:///relative/x.db", "relative/x.db"),
        ("SQLITE:///x.db", "x.db"),
        ("sqlite://", ":memory:"),
        ("postgresql://127.0.0.1/shadowdns", None),
    ],
)
def test_sqlite_path_reads_urls_and_plain_paths(given: str, expected: str | None) -> None:
    """sqlite:///PATH and plain paths name a SQLite file; other schemes name no file."""
    assert sqlite_path(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("mysql://db", "unknown store scheme"),
        ("sqlite://host/x.db", "sqlite:///PATH"),
    ],
)
def test_open_store_refuses_what_it_cannot_open(given: str, message: str) -> None:
    """Unsupported backends and malformed URLs raise StoreError, naming the problem."""
    with pytest.raises(StoreError, match=message):
        open_store(given)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_open_store_opens_postgresql_urls(pg_url: str, scheme: str) -> None:
    """postgresql:// and postgres:// open the fleet store, and options reach it."""
    from shadowdns.store.postgres import PostgresStore

    store = open_store(scheme + pg_url.removeprefix("postgresql"), health_event_limit=7)
    try:
        assert isinstance(store, PostgresStore)
        assert store.health_event_limit == 7
        assert store.current_generation() == 0
    finally:
        store.close()


def test_open_store_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg, a postgresql:// URL is a StoreError naming the missing package."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "shadowdns.store.postgres", raising=False)
    monkeypatch.delitem(sys.modules, "shadowdns.store.postgres_schema", raising=False)
    with pytest.raises(StoreError, match=r"psycopg.*shadowdns\[postgres\]"):
        open_store("postgresql://127.0.0.1:1/x")


def test_an_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    """Connection failures are StoreErrors that name the server but never the password."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        url = f"postgresql://node:s3cret@127.0.0.1:{port}/fleet"
        with pytest.raises(StoreError, match="cannot connect") as caught:
            open_store(url, timeout=2)
    assert f"postgresql://node@127.0.0.1:{port}/fleet" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("form", ["path", "url"])
def test_open_store_opens_sqlite_from_a_path_or_url(tmp_path: Path, form: str) -> None:
    """Both spellings open the same file, and options reach the backend."""
    path = tmp_path / "x" / "state.db"
    target = str(path) if form == "path" else f"sqlite:///{path}"
    store = open_store(target, health_event_limit=7)
    try:
        assert isinstance(store, SQLiteStore)
        assert store.health_event_limit == 7
    finally:
        store.close()
    assert path.exists()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SHADOWDNS_STATE": "/srv/s.db", "XDG_DATA_HOME": "/xdg"}, "/srv/s.db"),
        ({"SHADOWDNS_STATE": "", "XDG_DATA_HOME": "/xdg"}, "/xdg/shadowdns/state.db"),
        (
            {"XDG_DATA_HOME": "relative", "HOME": "/home/u"},
            "/home/u/.local/share/shadowdns/state.db",
        ),
        ({"HOME": "/home/u"}, "/home/u/.local/share/shadowdns/state.db"),
    ],
)
def test_default_state_path_follows_the_environment(env: dict[str, str], expected: str) -> None:
    """$SHADOWDNS_STATE, else $XDG_DATA_HOME (absolute only), else ~/.local/share."""
    assert default_state_path(env) == expected


def test_package_exports_exist() -> None:
    """Everything in shadowdns.store.__all__ is importable from the package."""
    for name in shadowdns.store.__all__:
        assert getattr(shadowdns.store, name) is not None
