"""A change the audit log cannot record is not made: the state database on a full disk.

The state database lives on a small tmpfs this test mounts (root only) and then fills. An
import through the API must be refused with 503, leave the zone file and the answers as
they were (the import is never served, not even while the request runs), and make
/readyz report `audit_unwritable`; once space is back, /readyz is ready
again and the same import goes through and is audited.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import httpx
import pytest

from shadowdns.resolver.commands import demo_zones_dir
from tests.serverproc import ServerProcess
from tests.unit.api.support import ZONE, make_tokens


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> None:
    """Write `path` until its file system has no space left."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    assert shutil.disk_usage(path.parent).free < 65536


def big_zone(text: str, records: int = 5000) -> str:
    """The demo zone plus `records` TXT records: an audit entry of about 600 kB."""
    filler = "x" * 100
    return text + "".join(f't{i} 60 IN TXT "{filler}"\n' for i in range(records))


def txt_rcode(server: ServerProcess, name: str) -> int:
    query = dns.message.make_query(name, "TXT")
    return dns.query.udp(query, server.host, port=server.port, timeout=3).rcode()


def test_a_full_disk_refuses_changes_with_503_until_space_is_back(
        tmp_path: Path, small_disk: Path) -> None:
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    zone_file = zones / f"{ZONE}zone"
    state = small_disk / "state.db"
    tokens = make_tokens(state)
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--api", "127.0.0.1:0"]).start()
    try:
        line = server.wait_log(r"api listening on \S+", timeout=30)
        url = re.search(r"api listening on (\S+)", line).group(1)  # type: ignore[union-attr]
        with httpx.Client(base_url=url, timeout=60) as http:
            assert http.get("/readyz").status_code == 200
            before = zone_file.read_bytes()
            text = big_zone(before.decode())
            fill(small_disk / "filler")

            # the refused change is never served, not even while the request runs
            seen: list[int] = []
            done = threading.Event()

            def probe() -> None:
                while not done.is_set():
                    seen.append(txt_rcode(server, f"t1.{ZONE}"))
                    time.sleep(0.005)

            prober = threading.Thread(target=probe)
            prober.start()
            try:
                refused = http.put(f"/api/v1/zones/{ZONE}", json={"text": text},
                                   headers=admin)
            finally:
                done.set()
                prober.join()
            assert seen and dns.rcode.NOERROR not in seen
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "audit_unavailable"
            assert zone_file.read_bytes() == before
            assert txt_rcode(server, f"t1.{ZONE}") == dns.rcode.NXDOMAIN
            ready = http.get("/readyz")
            assert ready.status_code == 503
            assert "audit_unwritable" in ready.json()["not_ready"]

            (small_disk / "filler").unlink()
            assert http.get("/readyz").status_code == 200
            accepted = http.put(f"/api/v1/zones/{ZONE}", json={"text": text}, headers=admin)
            assert accepted.status_code == 200, accepted.text
            assert txt_rcode(server, f"t1.{ZONE}") == dns.rcode.NOERROR
            actions = [e["action"] for e in http.get("/api/v1/audit", headers=admin).json()]
            assert actions[-2:] == ["audit.resumed", "zone.import"]
    finally:
        server.stop()
