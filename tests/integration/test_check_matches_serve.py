"""`check` refuses exactly what `serve` refuses, with the same file:line.

Each case is one class of bad input: a broken master file, a record clash, a bad policy, a
model that does not exist, a static record hidden by a DI, a bad `allocator.yaml`, a GeoIP
database that cannot be opened. For each, `check` exits 1 naming the file (and line where
the input has one), and `serve` on the same directory refuses to start with the same
problem. A running server refuses to reload into each of them too (one server, reloaded
into every case in turn, keeps serving its good data).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.serverproc import ServerProcess, serve

ZONE = """$ORIGIN ok.test.
$TTL 300
@     IN SOA ns1 hostmaster 1 3600 600 86400 60
@     IN NS  ns1
ns1   IN A   192.0.2.53
www   IN A   192.0.2.1
mail  IN A   192.0.2.25
"""
POLICY = """locations:
  eu-west: {lat: 52.37, lon: 4.90, continent: EU}
regions:
  default: eu-west
resources:
  web-eu-1: {address: 192.0.2.10, location: eu-west, role: primary}
dis:
  app:
    primaries: [web-eu-1]
    policy: {model: auto}
"""


@dataclass(frozen=True)
class Case:
    """Files to write over the good configuration; the problem `check` and `serve` name."""

    id: str
    files: dict[str, str]
    file: str
    line: int | None
    reason: str
    geoip: str | None = None


def _zone_with(extra: str) -> dict[str, str]:
    return {"ok.test.zone": ZONE + extra}


CASES = [
    Case("bad address", _zone_with("bad IN A 999.0.2.1\n"), "ok.test.zone", 8, "999.0.2.1"),
    Case("unknown type", _zone_with("bad IN BOGUS 1\n"), "ok.test.zone", 8, "BOGUS"),
    Case("CNAME beside data", _zone_with("mail IN CNAME www\n"), "ok.test.zone", 8,
         "CNAME at mail.ok.test. beside other data (A)"),
    Case("CNAME at the apex", _zone_with("@ IN CNAME www\n"), "ok.test.zone", 8,
         "CNAME at the zone apex"),
    Case("outside the zone", _zone_with("www.other.test. IN A 192.0.2.9\n"),
         "ok.test.zone", 8, "outside the zone"),
    Case("no SOA", {"ok.test.zone": ZONE.replace("@     IN SOA", "; @ IN SOA")},
         "ok.test.zone", None, "no SOA"),
    Case("second error of a file", _zone_with("a IN A 192.0.2.300\nb IN A 192.0.2.301\n"),
         "ok.test.zone", 9, "192.0.2.301"),
    Case("unknown policy key", {"ok.test.policy.yaml": POLICY + "    colour: blue\n"},
         "ok.test.policy.yaml", 11, "colour"),
    Case("model that does not exist",
         {"ok.test.policy.yaml": POLICY.replace("model: auto", "model: prophet")},
         "ok.test.policy.yaml", 10, "prophet"),
    Case("region default not a location",
         {"ok.test.policy.yaml": POLICY.replace("default: eu-west", "default: mars")},
         "ok.test.policy.yaml", 4, "mars"),
    Case("static A at a DI's name", _zone_with("app IN A 192.0.2.7\n"),
         "ok.test.zone", 8, "static A at app.ok.test."),
    Case("allocator key", {"allocator.yaml": "allocator:\n  mode: active\n  windw: 60\n"},
         "allocator.yaml", 3, "windw"),
    Case("allocator value", {"allocator.yaml": "allocator:\n  mode: sometimes\n"},
         "allocator.yaml", 2, "sometimes"),
    Case("allocator YAML", {"allocator.yaml": "allocator:\n  mode: [active\n"},
         "allocator.yaml", 3, "cannot read"),
    Case("GeoIP database", {}, "nothing.mmdb", None, "cannot open GeoIP database",
         geoip="nothing.mmdb"),
]


def _write(directory: Path, case: Case) -> None:
    (directory / "ok.test.zone").write_text(ZONE)
    (directory / "ok.test.policy.yaml").write_text(POLICY)
    (directory / "allocator.yaml").unlink(missing_ok=True)
    for name, text in case.files.items():
        (directory / name).write_text(text)


def _where(directory: Path, case: Case) -> str:
    path = str(directory / case.file)
    return path if case.line is None else f"{path}:{case.line}"


def _geoip(directory: Path, case: Case) -> list[str]:
    return [] if case.geoip is None else ["--geoip", str(directory / case.geoip)]


def _named(output: str, directory: Path, case: Case) -> bool:
    where = _where(directory, case) + ":"
    return any(where in line and case.reason in line for line in output.splitlines())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_check_and_serve_refuse_alike(tmp_path: Path, case: Case) -> None:
    """`check` exits 1 naming file:line; `serve` refuses to start with the same problem."""
    _write(tmp_path, case)
    checked = subprocess.run([sys.executable, "-m", "shadowdns", "check", str(tmp_path),
                              *_geoip(tmp_path, case)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert _named(checked.stderr, tmp_path, case), checked.stderr
    served = subprocess.run([sys.executable, "-m", "shadowdns", "serve", "--zones",
                             str(tmp_path), "--listen", "127.0.0.1:0", "--state", ":memory:",
                             *_geoip(tmp_path, case)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert served.returncode != 0, served.stderr
    assert _named(served.stderr, tmp_path, case), served.stderr


def test_check_accepts_the_good_configuration(tmp_path: Path) -> None:
    """The base every case starts from is valid, so each case fails for its own reason."""
    _write(tmp_path, Case("good", {}, "", None, ""))
    (tmp_path / "allocator.yaml").write_text("allocator:\n  mode: preview\n")
    checked = subprocess.run([sys.executable, "-m", "shadowdns", "check", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "allocator mode preview: ok" in checked.stdout


@pytest.fixture(scope="module")
def good_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess,
                                                                            Path]]:
    zones = tmp_path_factory.mktemp("zones")
    _write(zones, Case("good", {}, "", None, ""))
    proc = serve(zones, "--state", ":memory:")
    try:
        yield proc, zones
    finally:
        proc.stop()


FILE_CASES = [c for c in CASES if c.geoip is None]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_reload_refuses_alike(good_server: tuple[ServerProcess, Path], case: Case) -> None:
    """SIGHUP into each bad configuration is refused with the problem `check` names, and
    the last good data keeps answering."""
    server, zones = good_server
    _write(zones, case)
    mark = len(server.log)
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while not any("reload failed" in line for line in server.log[mark:]):
        assert time.monotonic() < deadline, "".join(server.log[mark:])
        time.sleep(0.05)
    time.sleep(0.3)  # the rest of the multi-line record
    log = "".join(server.log[mark:])
    assert _named(log, zones, case), log
    query = dns.message.make_query("www.ok.test.", "A")
    reply = dns.query.udp(query, server.host, port=server.port, timeout=3)
    assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["192.0.2.1"]
