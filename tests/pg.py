"""A throwaway PostgreSQL server for tests, from the distribution's binaries.

`PostgresServer.start()` runs initdb and pg_ctl in a temporary directory (in /dev/shm when
there is one): trust auth,
listening only on 127.0.0.1 at a free port, its unix socket inside the directory, fsync
off. As root it runs them as the `postgres` user (PostgreSQL refuses to run as root).
`create_database()` gives each test a fresh database: empty (from template0), or a copy of
a template database prepared once (copying is much faster than migrating).

Binaries are looked up in $SHADOWDNS_PG_BIN, then /usr/lib/postgresql/<newest>/bin (Debian,
`apt-get install postgresql`), then $PATH; `find_bin_dir()` returns None when there are
none, and tests skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

_SERVER_OPTIONS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    " -c max_connections=60 -c shared_buffers=16MB -c max_wal_size=256MB"
)


def find_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None."""
    candidates: list[Path] = []
    if os.environ.get("SHADOWDNS_PG_BIN"):
        candidates.append(Path(os.environ["SHADOWDNS_PG_BIN"]))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    return None


def _scratch_dir() -> str | None:
    """Where the cluster lives: $SHADOWDNS_PG_TMP, else /dev/shm (in memory: databases are
    created 20x faster than on disk), else the default temporary directory."""
    chosen = os.environ.get("SHADOWDNS_PG_TMP")
    if chosen:
        return chosen
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One running server; `stop()` shuts it down and deletes its directory."""

    def __init__(self, bin_dir: Path, root: Path, port: int, user: str | None) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self._user = user
        self._names = itertools.count(1)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> None:
        command: Sequence[str] = [str(self.bin_dir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{tail}")

    @classmethod
    def start(cls, bin_dir: Path) -> PostgresServer:
        """initdb + pg_ctl start in a new temporary directory."""
        root = Path(tempfile.mkdtemp(prefix="shadowdns-pg-", dir=_scratch_dir()))
        user = None
        if os.geteuid() == 0:
            user = "postgres"
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
        root.chmod(0o700)
        server = cls(bin_dir, root, 0, user)
        try:
            server._run(
                "initdb", "-D", str(server.data), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
            for _ in range(5):
                server.port = _free_port()
                try:
                    server._run(
                        "pg_ctl", "-D", str(server.data), "-l", str(root / "server.log"),
                        "-w", "-t", "60", "-o",
                        f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root}"
                        f" {_SERVER_OPTIONS}",
                        "start",
                    )  # fmt: skip
                    break
                except RuntimeError:
                    if "could not bind" not in (root / "server.log").read_text(errors="replace"):
                        raise
            else:
                raise RuntimeError("no free port for PostgreSQL")
        except BaseException:
            server.stop()
            raise
        return server

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        return psycopg.connect(self.url(), autocommit=True)

    def create_database(self, template: str = "template0", name: str | None = None) -> str:
        """A new database, a copy of `template` (empty by default); returns its URL."""
        name = name or f"test_{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
