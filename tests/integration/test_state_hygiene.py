"""What `serve` leaves on disk: private state files, no temporaries from a killed write."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import dns.message
import dns.query
import httpx

from shadowdns.resolver.commands import demo_zones_dir
from tests.serverproc import ServerProcess
from tests.unit.api.support import ZONE, served_api


def serving(zones: Path, state: Path, *extra: str) -> ServerProcess:
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                          "--state", str(state), *extra])


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_state_database_and_its_directory_are_private(tmp_path: Path) -> None:
    """A fresh state directory is 0700; the database and its WAL files are 0600."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    state = tmp_path / "private" / "state.db"
    with serving(zones, state) as server:
        query = dns.message.make_query(f"www.{ZONE}", "A")
        assert dns.query.udp(query, server.host, port=server.port, timeout=3).answer
        assert mode(state.parent) == 0o700
        files = [p for p in state.parent.iterdir() if p.name.startswith("state.db")]
        assert {p.name for p in files} >= {"state.db", "state.db-wal"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    """A database made readable by others before this release is 0600 after a start."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    state = tmp_path / "state.db"
    with serving(zones, state):
        pass
    os.chmod(state, 0o644)
    with serving(zones, state):
        assert mode(state) == 0o600


def test_files_the_api_writes_are_private(tmp_path: Path) -> None:
    """A zone file rewritten through the API is 0600, like the state it sits beside."""
    with served_api(tmp_path) as api:
        response = httpx.put(f"{api.url}/api/v1/zones/{ZONE}/rrsets/www/A",
                             json={"ttl": 60, "rdata": ["192.0.2.9"]},
                             headers=api.auth("operator"))
        assert response.status_code == 200, response.text
        assert mode(api.zones / f"{ZONE}zone") == 0o600
        assert mode(api.state) == 0o600


def test_temporaries_of_an_interrupted_write_are_removed_at_start(tmp_path: Path) -> None:
    """What a write killed before its rename leaves (staged zone and policy files, API
    checks, fleet checks) is gone after a start; zone, policy and other files, a symlink
    with the temporary suffix and its target are untouched."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    stale = [zones / f".{ZONE}zone.1a2b3c4d.tmp", zones / f".{ZONE}policy.yaml.k9x2_a1b.tmp",
             zones / ".api-check.0f0f0f0f.tmp", zones / ".fleet-check.x1y2.policy.yaml.tmp",
             zones / f".{ZONE}zone.restore.tmp"]
    for path in stale:
        path.write_text("; half a write\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours\n")
    kept = [zones / "notes.tmp", zones / ".keep"]
    for path in kept:
        path.write_text("kept\n")
    link = zones / ".link.tmp"
    link.symlink_to(outside)
    before = {p.name: p.read_bytes() for p in zones.iterdir()
              if p.suffix in (".zone", ".yaml") and not p.name.startswith(".")}
    server = serving(zones, tmp_path / "state.db").start()
    try:
        server.wait_log(r"removed 5 temporary file\(s\)")
        assert not [p for p in stale if p.exists()]
        assert all(p.exists() for p in kept) and link.is_symlink()
        assert outside.read_text() == "not ours\n"
        assert {name: (zones / name).read_bytes() for name in before} == before
    finally:
        server.stop()


def test_a_key_written_aside_and_interrupted_is_removed_at_start(tmp_path: Path) -> None:
    """A DNSSEC key file written aside by a process killed before its link (`.NAME.PID.tmp`
    in the key directory) is gone after a start; the keys themselves are kept and used."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    keys = tmp_path / "keys"
    server = serving(zones, tmp_path / "state.db", "--dnssec-keys", str(keys)).start()
    server.stop()
    made = sorted(p.name for p in keys.rglob("*") if p.is_file())
    assert made and not [name for name in made if name.endswith(".tmp")]
    stale = keys / ".half-written.key.4242.tmp"
    stale.write_bytes(b"half a key")
    server = serving(zones, tmp_path / "state2.db", "--dnssec-keys", str(keys)).start()
    try:
        server.wait_log(r"removed 1 temporary file\(s\)")
        assert not stale.exists()
        assert sorted(p.name for p in keys.rglob("*") if p.is_file()) == made
    finally:
        server.stop()
