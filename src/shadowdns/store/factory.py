"""Choose a store backend from what the operator wrote: a URL or a plain path.

`sqlite:///PATH` (PATH as written after the three slashes, so `sqlite:////var/x.db` is
absolute) or a plain path opens SQLite; `postgresql://…` (or `postgres://…`) opens the
fleet backend, which needs the `postgres` extra (psycopg), imported only then.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shadowdns.errors import StoreError
from shadowdns.store.base import Store

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def default_state_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the state lives unless `--state` says otherwise.

    `$SHADOWDNS_STATE` if set, else `$XDG_DATA_HOME/shadowdns/state.db`, else
    `~/.local/share/shadowdns/state.db`.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("SHADOWDNS_STATE")
    if explicit:
        return explicit
    data_home = env.get("XDG_DATA_HOME")
    if data_home and os.path.isabs(data_home):
        base = Path(data_home)
    else:
        home = env.get("HOME")
        base = (Path(home) if home else Path.home()) / ".local" / "share"
    return str(base / "shadowdns" / "state.db")


def sqlite_path(url_or_path: str | os.PathLike[str]) -> str | None:
    """The SQLite file named by `url_or_path`, or None if it names another backend."""
    text = os.fspath(url_or_path)
    match = _SCHEME.match(text)
    if match is None:
        return text
    if match.group(1).lower() != "sqlite":
        return None
    rest = text[match.end() :]
    if rest == "":
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise StoreError(f"{text}: expected sqlite:///PATH")
    return rest[1:]


def open_store(url_or_path: str | os.PathLike[str], **options: Any) -> Store:
    """Open (creating and migrating if needed) the store named by a URL or path.

    `options` go to the backend (both take `retention`, `health_event_limit`, `timeout`).
    """
    path = sqlite_path(url_or_path)
    if path is not None:
        from shadowdns.store.sqlite import SQLiteStore

        return SQLiteStore(path, **options)
    scheme = _SCHEME.match(os.fspath(url_or_path))
    name = scheme.group(1).lower() if scheme else "?"
    if name in ("postgres", "postgresql"):
        try:
            from shadowdns.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"the PostgreSQL store needs psycopg ({exc});"
                " install it with: pip install 'shadowdns[postgres]'"
            ) from exc
        return PostgresStore(os.fspath(url_or_path), **options)
    raise StoreError(f"{os.fspath(url_or_path)}: unknown store scheme {name!r}")
