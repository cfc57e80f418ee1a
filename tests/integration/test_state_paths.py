"""Commands that read state refuse a database that does not exist, unless told to create it.

A `--state` typo, or a relative path run from another directory, used to create an empty
database silently: a token the server never sees, an explanation without shadows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def shadowdns(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(cwd), "XDG_DATA_HOME": str(cwd / "xdg")}
    env.pop("SHADOWDNS_STATE", None)
    return subprocess.run([sys.executable, "-m", "shadowdns", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("command", [
    ("token", "create", "--role", "reader"),
    ("token", "list"),
    ("shadow", "list"),
    ("traffic", "export"),
    ("forecast", "run", "--workers", "1"),
    ("explain", "app.demo.shadowdns.test", "--client", "192.0.2.1"),
])
def test_a_missing_state_is_refused_and_not_created(tmp_path: Path,
                                                    command: tuple[str, ...]) -> None:
    """Each reading command exits 1 naming the absolute path and --create; no file appears."""
    done = shadowdns(*command, "--state", "typo.db", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"no state database at {tmp_path / 'typo.db'}" in done.stderr
    assert "--create" in done.stderr
    assert not (tmp_path / "typo.db").exists()


def test_create_makes_it_and_the_next_command_finds_it(tmp_path: Path) -> None:
    """`--create` makes the database; then a token made there is listed without --create."""
    made = shadowdns("token", "create", "--role", "reader", "--name", "ci", "--state", "s.db",
                     "--create", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    listed = shadowdns("token", "list", "--state", str(tmp_path / "s.db"), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "ci" in listed.stdout


def test_state_file_names_the_store_and_a_bad_one_is_a_clear_error(tmp_path: Path) -> None:
    """`--state-file` reads the path or URL from a file (a password stays out of argv)."""
    assert shadowdns("token", "list", "--state", "s.db", "--create",
                     cwd=tmp_path).returncode == 0
    url_file = tmp_path / "store.url"
    url_file.write_text(f"sqlite:///{tmp_path / 's.db'}\n")
    listed = shadowdns("token", "list", "--state-file", str(url_file), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    missing = shadowdns("token", "list", "--state-file", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 1
    assert "--state-file" in missing.stderr and "nope" in missing.stderr
    (tmp_path / "empty").write_text("\n")
    empty = shadowdns("token", "list", "--state-file", str(tmp_path / "empty"), cwd=tmp_path)
    assert empty.returncode == 1 and "is empty" in empty.stderr


def test_token_expiry_is_set_and_shown(tmp_path: Path) -> None:
    """`token create --expires 30d` stores the expiry; `token list` shows it, `--json` as
    epoch seconds; a duration that is not one is a usage error."""
    import json
    import time

    made = shadowdns("token", "create", "--role", "reader", "--name", "temp", "--expires",
                     "30d", "--json", "--state", "s.db", "--create", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert abs(token["expires_at"] - (time.time() + 30 * 86400)) < 120
    listed = shadowdns("token", "list", "--json", "--state", "s.db", cwd=tmp_path)
    [row] = json.loads(listed.stdout)
    assert row["expires_at"] == token["expires_at"]
    table = shadowdns("token", "list", "--state", "s.db", cwd=tmp_path).stdout
    assert "expires" in table.splitlines()[0].lower() and "never" not in table
    never = shadowdns("token", "create", "--role", "reader", "--state", "s.db", cwd=tmp_path)
    assert never.returncode == 0
    assert "never" in shadowdns("token", "list", "--state", "s.db", cwd=tmp_path).stdout
    bad = shadowdns("token", "create", "--role", "reader", "--expires", "soon", "--state",
                    "s.db", cwd=tmp_path)
    assert bad.returncode == 2 and "--expires" in bad.stderr
