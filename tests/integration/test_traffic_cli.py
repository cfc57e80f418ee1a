"""`shadowdns traffic import|export` run as the real command in a subprocess."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SHADOWDNS = Path(sys.executable).parent / "shadowdns"

HISTORY = """timestamp,di,region,queries
2024-05-01T12:00:10Z,app.example.com.,EU,5
2024-05-01 12:00:50,app.example.com,EU,3
2024-05-01T12:04:00Z,app.example.com.,EU,2
2024-05-01T14:06:00+02:00,app.example.com.,NA,7
2024-05-01T13:30:00Z,web.example.com.,EU,11
"""

EXPECTED = {
    "minute": """timestamp,di,region,queries
2024-05-01T12:00:00Z,app.example.com.,EU,8
2024-05-01T12:04:00Z,app.example.com.,EU,2
2024-05-01T12:06:00Z,app.example.com.,NA,7
2024-05-01T13:30:00Z,web.example.com.,EU,11
""",
    "5m": """timestamp,di,region,queries
2024-05-01T12:00:00Z,app.example.com.,EU,10
2024-05-01T12:05:00Z,app.example.com.,NA,7
2024-05-01T13:30:00Z,web.example.com.,EU,11
""",
    "hour": """timestamp,di,region,queries
2024-05-01T12:00:00Z,app.example.com.,EU,10
2024-05-01T12:00:00Z,app.example.com.,NA,7
2024-05-01T13:00:00Z,web.example.com.,EU,11
""",
}


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SHADOWDNS_STATE"}
    env["HOME"] = str(home)
    env["XDG_DATA_HOME"] = str(home / "xdg")
    return subprocess.run(
        [str(SHADOWDNS), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_import_then_export_round_trips_at_every_resolution(tmp_path: Path) -> None:
    """Imported rows come back bucketed and summed per resolution; exporting the minute
    CSV and importing it into a new state gives the same export."""
    csv_file = tmp_path / "history.csv"
    csv_file.write_text(HISTORY)
    state = tmp_path / "state.db"
    done = run("traffic", "import", str(csv_file), "--state", str(state), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 5 rows of 3 series" in done.stdout
    for resolution, expected in EXPECTED.items():
        out = run(
            "traffic", "export", "--resolution", resolution, "--state", str(state), home=tmp_path
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == expected, resolution

    exported = tmp_path / "exported.csv"
    exported.write_text(EXPECTED["minute"])
    copy = tmp_path / "copy.db"
    assert (
        run("traffic", "import", str(exported), "--state", str(copy), home=tmp_path).returncode == 0
    )
    again = run("traffic", "export", "--state", str(copy), home=tmp_path)
    assert again.stdout == EXPECTED["minute"]


def test_export_since_keeps_later_buckets_only(tmp_path: Path) -> None:
    """--since T drops buckets that start before T."""
    csv_file = tmp_path / "history.csv"
    csv_file.write_text(HISTORY)
    state = tmp_path / "state.db"
    run("traffic", "import", str(csv_file), "--state", str(state), home=tmp_path)
    out = run(
        "traffic", "export", "--since", "2024-05-01 12:05:00", "--state", str(state), home=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "timestamp,di,region,queries",
        "2024-05-01T12:06:00Z,app.example.com.,NA,7",
        "2024-05-01T13:30:00Z,web.example.com.,EU,11",
    ]


def test_default_state_is_under_xdg_data_home_and_state_overrides_it(tmp_path: Path) -> None:
    """Without --state the state goes to $XDG_DATA_HOME/shadowdns/state.db; --state wins."""
    csv_file = tmp_path / "history.csv"
    csv_file.write_text(HISTORY)
    default = tmp_path / "xdg" / "shadowdns" / "state.db"
    assert run("traffic", "import", str(csv_file), home=tmp_path).returncode == 0
    assert default.exists()
    assert run("traffic", "export", home=tmp_path).stdout == EXPECTED["minute"]
    other = tmp_path / "other.db"
    assert run("traffic", "export", "--state", str(other), home=tmp_path).returncode == 1
    assert not other.exists()


BAD = """timestamp,di,region,queries
2024-05-01T12:00:00Z,app.example.com.,EU,5
not-a-time,app.example.com.,EU,5
2024-05-01T12:01:00Z,,EU,5
2024-05-01T12:02:00Z,app.example.com.,EU,-1
2024-05-01T12:03:00Z,app.example.com.,EU,nan
2024-05-01T12:04:00Z,app.example.com.,EU
2024-05-01T12:05:00Z,app.example.com.,EU,2
2024-05-01T12:06:00Z,app.example.com.,EU,2.5
"""


@pytest.mark.parametrize("state_exists", [False, True])
def test_a_bad_csv_fails_listing_every_bad_line_and_writes_nothing(
    tmp_path: Path, state_exists: bool
) -> None:
    """Exit 1, one message per bad line (3, 4, 5, 6, 7, 9) with its reason, and the state
    is exactly as before (or not created at all)."""
    state = tmp_path / "state.db"
    if state_exists:
        good = tmp_path / "good.csv"
        good.write_text(HISTORY)
        assert (
            run("traffic", "import", str(good), "--state", str(state), home=tmp_path).returncode
            == 0
        )
        before = dump(state)
    bad = tmp_path / "bad.csv"
    bad.write_text(BAD)
    done = run("traffic", "import", str(bad), "--state", str(state), home=tmp_path)
    assert done.returncode == 1
    for line, reason in [
        (3, "is not ISO 8601"),
        (4, "empty di"),
        (5, "negative"),
        (6, "NaN"),
        (7, "expected 4 columns"),
        (9, "not an integer"),
    ]:
        pattern = rf"{re.escape(str(bad))}:{line}: [^\n]*{re.escape(reason)}"
        assert re.search(pattern, done.stderr), (line, done.stderr)
    for line in (1, 2, 8):
        assert f"{bad}:{line}:" not in done.stderr
    if state_exists:
        assert dump(state) == before
    else:
        assert not state.exists()


def test_a_missing_csv_file_is_an_error(tmp_path: Path) -> None:
    """A file that cannot be read exits 1 with the file name, creating no state."""
    state = tmp_path / "state.db"
    done = run(
        "traffic", "import", str(tmp_path / "nope.csv"), "--state", str(state), home=tmp_path
    )
    assert done.returncode == 1
    assert "nope.csv" in done.stderr
    assert not state.exists()
