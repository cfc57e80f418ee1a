"""Zone transfers out: ACL, TSIG, AXFR/IXFR shape, and Knot as a real secondary fed by NOTIFY."""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.zone
import pytest

from tests.knotproc import SKIP_REASON, free_port, knotd_path
from tests.serverproc import ServerProcess

ZONE = """$ORIGIN xfr.test.
$TTL 300
@     SOA  ns1 hostmaster {serial} 3600 600 86400 60
@     NS   ns1
ns1   A    192.0.2.1
www   A    192.0.2.80
mail  MX   10 www
{extra}
"""
POLICY = """locations:
  eu: {lat: 50.1, lon: 8.7}
  us: {lat: 38.9, lon: -77.0}
regions: {default: eu}
resources:
  p-eu: {address: 192.0.2.10, location: eu, role: primary}
  p-us: {address: 198.51.100.10, location: us, role: primary}
dis:
  app: {primaries: [p-eu, p-us], ttl: 30}
"""
SECRET = base64.b64encode(b"shadowdns-transfer-test-secret!!").decode()
KEY = dns.tsigkeyring.from_text({"xfr-key.": ("hmac-sha256", SECRET)})


def write_zone(directory: Path, serial: int, extra: str = "") -> None:
    (directory / "xfr.test.zone").write_text(ZONE.format(serial=serial, extra=extra))


@pytest.fixture
def zones(tmp_path: Path) -> Path:
    directory = tmp_path / "zones"
    directory.mkdir()
    write_zone(directory, 1)
    (directory / "xfr.test.policy.yaml").write_text(POLICY)
    return directory


def start(zones: Path, tmp: Path, *extra: str) -> ServerProcess:
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                          "--state", str(tmp / "state.db"), *extra]).start()


def axfr(server: ServerProcess, keyring: object = None) -> dns.zone.Zone:
    kw = {"keyring": keyring} if keyring is not None else {}
    return dns.zone.from_xfr(dns.query.xfr(server.host, "xfr.test.", port=server.port,
                                           timeout=5, **kw))


def test_transfers_are_refused_without_an_acl(zones: Path, tmp_path: Path) -> None:
    """With no --transfer-acl, AXFR gets REFUSED; over UDP it is FORMERR (RFC 5936 §4.2)."""
    server = start(zones, tmp_path)
    try:
        query = dns.message.make_query("xfr.test.", dns.rdatatype.AXFR)
        reply = dns.query.tcp(query, server.host, port=server.port, timeout=5)
        assert reply.rcode() == dns.rcode.REFUSED
        reply = dns.query.udp(query, server.host, port=server.port, timeout=5)
        assert reply.rcode() == dns.rcode.FORMERR
    finally:
        server.stop()


def test_axfr_carries_the_static_view_including_dis(zones: Path, tmp_path: Path) -> None:
    """AXFR starts and ends with the SOA and holds every record plus each DI's primaries."""
    server = start(zones, tmp_path, "--transfer-acl", "127.0.0.0/8")
    try:
        zone = axfr(server)
    finally:
        server.stop()
    names = {n.to_text() for n in zone.nodes}
    assert {"@", "ns1", "www", "mail", "app"} <= names
    app = zone.get_rdataset("app", "A")
    assert app is not None and sorted(r.address for r in app) == ["192.0.2.10",
                                                                   "198.51.100.10"]
    assert zone.get_rdataset("@", "SOA")[0].serial == 1


def test_tsig_is_required_when_keys_are_configured(zones: Path, tmp_path: Path) -> None:
    """With a key: unsigned AXFR is REFUSED, a wrong key gets NOTAUTH, the right key works
    and the signed answer verifies; a signed SOA query gets a signed answer."""
    server = start(zones, tmp_path, "--transfer-acl", "127.0.0.0/8",
                   "--tsig-key", f"hmac-sha256:xfr-key:{SECRET}")
    try:
        query = dns.message.make_query("xfr.test.", dns.rdatatype.AXFR)
        assert dns.query.tcp(query, server.host, port=server.port,
                             timeout=5).rcode() == dns.rcode.REFUSED
        wrong = dns.tsigkeyring.from_text({"other-key.": ("hmac-sha256", SECRET)})
        signed_wrong = dns.message.make_query("xfr.test.", dns.rdatatype.SOA)
        signed_wrong.use_tsig(wrong)
        with pytest.raises(dns.tsig.PeerBadKey):
            dns.query.udp(signed_wrong, server.host, port=server.port, timeout=5)
        zone = axfr(server, KEY)
        assert zone.get_rdataset("www", "A") is not None
        soa = dns.message.make_query("xfr.test.", dns.rdatatype.SOA)
        soa.use_tsig(KEY)
        reply = dns.query.udp(soa, server.host, port=server.port, timeout=5)
        assert reply.had_tsig and reply.answer[0].rdtype == dns.rdatatype.SOA
    finally:
        server.stop()


def test_ixfr_up_to_date_gets_one_soa_else_a_full_transfer(zones: Path, tmp_path: Path) -> None:
    """IXFR from the current serial answers with the SOA alone; from an older one, the zone."""
    server = start(zones, tmp_path, "--transfer-acl", "127.0.0.0/8")
    try:
        current = dns.message.make_query("xfr.test.", dns.rdatatype.IXFR)
        current.authority.append(dns.rrset.from_text(
            "xfr.test.", 0, "IN", "SOA", "ns1.xfr.test. hostmaster.xfr.test. 1 1 1 1 1"))
        reply = dns.query.tcp(current, server.host, port=server.port, timeout=5)
        assert [rr.rdtype for rr in reply.answer] == [dns.rdatatype.SOA]
        zone = dns.zone.from_xfr(dns.query.xfr(server.host, "xfr.test.", port=server.port,
                                               rdtype=dns.rdatatype.IXFR, serial=0, timeout=5))
        assert zone.get_rdataset("www", "A") is not None
    finally:
        server.stop()


KNOT_SECONDARY = """server:
    rundir: "{tmp}"
    listen: 127.0.0.1@{port}
key:
  - id: xfr-key
    algorithm: hmac-sha256
    secret: {secret}
remote:
  - id: primary
    address: 127.0.0.1@{primary}
    key: xfr-key
acl:
  - id: notify-from-primary
    address: 127.0.0.0/8
    key: xfr-key
    action: notify
database:
    storage: "{tmp}/db"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "{tmp}/zones"
    zonefile-sync: -1
    zonefile-load: none
    journal-content: none
zone:
  - domain: xfr.test
    master: primary
    acl: notify-from-primary
"""


def api_add_record(server: ServerProcess, state: Path, name: str, address: str) -> None:
    """Add an A RRset through the running server's REST API with a fresh operator token."""
    line = server.wait_log(r"api listening on http://127\.0\.0\.1:\d+")
    port = int(re.search(r":(\d+)\s*$", line.strip()).group(1))  # type: ignore[union-attr]
    out = subprocess.run([sys.executable, "-m", "shadowdns", "token", "create", "--role",
                          "operator", "--state", str(state)],
                         capture_output=True, text=True, check=True).stdout
    secret = re.search(r"(sdns_\S+)", out).group(1)  # type: ignore[union-attr]
    body = json.dumps({"name": name, "type": "A", "ttl": 60, "rdata": [address]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/zones/xfr.test./rrsets", data=body, method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status in (200, 201)


@pytest.fixture
def knot_port() -> Iterator[int]:
    if knotd_path() is None:
        pytest.skip(SKIP_REASON)
    yield free_port()


def knot_answer(port: int, name: str, rdtype: str) -> list[str]:
    query = dns.message.make_query(name, rdtype)
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=1)
    except (dns.exception.Timeout, OSError):
        return []
    return sorted(r.to_text() for rr in reply.answer for r in rr)


def wait_knot(port: int, name: str, rdtype: str, expect: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    got: list[str] = []
    while time.monotonic() < deadline:
        got = knot_answer(port, name, rdtype)
        if got == expect:
            return
        time.sleep(0.1)
    raise AssertionError(f"Knot answers {got} for {name} {rdtype}, expected {expect}")


def test_knot_secondary_transfers_and_follows_notify(zones: Path, tmp_path: Path,
                                                     knot_port: int) -> None:
    """Knot, configured as a secondary with TSIG, transfers the zone and answers the same
    static records; a serial change by reload, and a change through the API, reach it by
    NOTIFY."""
    server = start(zones, tmp_path, "--transfer-acl", "127.0.0.0/8",
                   "--tsig-key", f"hmac-sha256:xfr-key:{SECRET}",
                   "--notify", f"127.0.0.1:{knot_port}", "--api", "127.0.0.1:0")
    knot_dir = Path(tempfile.mkdtemp(prefix="knot-secondary-"))
    (knot_dir / "zones").mkdir()
    (knot_dir / "db").mkdir()
    conf = knot_dir / "knot.conf"
    conf.write_text(KNOT_SECONDARY.format(tmp=knot_dir, port=knot_port, secret=SECRET,
                                          primary=server.port))
    binary = knotd_path()
    assert binary is not None
    with (knot_dir / "knotd.log").open("wb") as log:
        knot = subprocess.Popen([binary, "-c", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_knot(knot_port, "www.xfr.test.", "A", ["192.0.2.80"], 15)
        assert knot_answer(knot_port, "app.xfr.test.", "A") == ["192.0.2.10",
                                                                 "198.51.100.10"]
        write_zone(zones, 2, "new   A    192.0.2.99")
        server.signal(signal.SIGHUP)
        server.wait_log(r"reloaded")
        wait_knot(knot_port, "new.xfr.test.", "A", ["192.0.2.99"], 10)
        server.wait_log(r"NOTIFY xfr.test. to 127.0.0.1:\d+ answered NOERROR")
        api_add_record(server, tmp_path / "state.db", "viaapi", "192.0.2.98")
        wait_knot(knot_port, "viaapi.xfr.test.", "A", ["192.0.2.98"], 10)
    except AssertionError:
        print((knot_dir / "knotd.log").read_text(errors="replace"))
        print("".join(server.log))
        raise
    finally:
        knot.terminate()
        knot.wait(10)
        server.stop()
        shutil.rmtree(knot_dir, ignore_errors=True)


@pytest.mark.parametrize("form", ["bind", "line"])
def test_tsig_key_file_keeps_the_secret_off_the_command_line(zones: Path, tmp_path: Path,
                                                             form: str) -> None:
    """--tsig-key-file reads a BIND `key` block (as tsig-keygen writes it) or an
    [ALG:]NAME:SECRET line: the signed AXFR works, an unsigned one is REFUSED, and the
    secret is not in the server's argv."""
    key_file = tmp_path / "xfr.key"
    key_file.write_text(
        f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n'
        if form == "bind" else f"# transfer key\nhmac-sha256:xfr-key:{SECRET}\n")
    server = start(zones, tmp_path, "--transfer-acl", "127.0.0.0/8",
                   "--tsig-key-file", str(key_file))
    try:
        assert SECRET not in " ".join(server.args)
        query = dns.message.make_query("xfr.test.", dns.rdatatype.AXFR)
        assert dns.query.tcp(query, server.host, port=server.port,
                             timeout=5).rcode() == dns.rcode.REFUSED
        assert axfr(server, KEY).get_rdataset("www", "A") is not None
    finally:
        server.stop()


def test_a_bad_tsig_key_file_stops_serve_naming_the_file(zones: Path, tmp_path: Path) -> None:
    """A key file without a usable key is an error at start, naming the flag or file."""
    bad = tmp_path / "bad.key"
    bad.write_text('key "k" { algorithm hmac-sha256; };\n')
    done = subprocess.run([sys.executable, "-m", "shadowdns", "serve", "--zones", str(zones),
                           "--listen", "127.0.0.1:0", "--state", str(tmp_path / "s.db"),
                           "--tsig-key-file", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no secret" in done.stderr and str(bad) in done.stderr
    missing = subprocess.run([sys.executable, "-m", "shadowdns", "serve", "--zones",
                              str(zones), "--listen", "127.0.0.1:0", "--state",
                              str(tmp_path / "s.db"), "--tsig-key-file",
                              str(tmp_path / "nope")], capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode != 0 and "--tsig-key-file" in missing.stderr
