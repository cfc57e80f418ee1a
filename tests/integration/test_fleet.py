"""Fleet mode: two `shadowdns serve` nodes on different loopback ports sharing one PostgreSQL.

PostgreSQL is started by the tests from Debian's binaries (tests/pg.py). The nodes keep
their own zones (and DNSSEC key) directories; the store carries the files, keys,
allocations and health between them, elects one control-plane leader, and going away must
not stop either node answering.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from shadowdns.zones.keys import new_private_key
from tests.knotproc import free_port
from tests.pg import PostgresServer, find_bin_dir
from tests.serverproc import ServerProcess

GEO = Path(__file__).resolve().parent.parent / "data" / "zones" / "geo"


@pytest.fixture
def pg() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="psycopg is not installed (extra: postgres)")
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    server = PostgresServer.start(bin_dir)
    try:
        yield server
    finally:
        server.stop()


def node(tmp: Path, name: str, url: str, *extra: str) -> ServerProcess:
    zones = tmp / name
    shutil.copytree(GEO, zones)
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                          "--store", url, "--node-id", name, *extra]).start()


def answer(server: ServerProcess, name: str, rdtype: str = "A") -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, rdtype), server.host,
                          port=server.port, timeout=2)
    assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
    return sorted(r.to_text() for rr in reply.answer for r in rr)


def wait_answer(server: ServerProcess, name: str, expect: list[str],
                seconds: float) -> float:
    start = time.monotonic()
    got: list[str] = []
    while time.monotonic() - start < seconds:
        got = answer(server, name)
        if got == expect:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{name}: {got}, expected {expect} within {seconds}s")


def api_port(server: ServerProcess) -> int:
    line = server.wait_log(r"api listening on http://127\.0\.0\.1:\d+")
    match = re.search(r":(\d+)\s*$", line.strip())
    assert match is not None
    return int(match.group(1))


def token(url: str) -> str:
    out = subprocess.run([sys.executable, "-m", "shadowdns", "token", "create", "--role",
                          "operator", "--name", "fleet-test", "--state", url],
                         capture_output=True, text=True, check=True).stdout
    match = re.search(r"(sdns_\S+)", out)
    assert match is not None, out
    return match.group(1)


def test_change_through_one_node_is_answered_by_the_other(pg: PostgresServer,
                                                          tmp_path: Path) -> None:
    """A record added through node A's API is answered by node B within a second, and a
    shadow allocated on the shared store moves both nodes' answers."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url, "--api", "127.0.0.1:0")
    b = node(tmp_path, "node-b", url)
    try:
        secret = token(url)
        body = json.dumps({"name": "fleet", "type": "A", "ttl": 60,
                           "rdata": ["192.0.2.77"]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port(a)}/api/v1/zones/geo.test./rrsets", data=body,
            method="POST", headers={"Authorization": f"Bearer {secret}",
                                    "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status in (200, 201)
        took = wait_answer(b, "fleet.geo.test.", ["192.0.2.77"], 3.0)
        print(f"node B answered the change after {took:.3f}s")
        assert took < 1.0, f"node B took {took:.2f}s"
        assert answer(a, "fleet.geo.test.") == ["192.0.2.77"]
        subprocess.run([sys.executable, "-m", "shadowdns", "shadow", "add", "app.geo.test.",
                        "s-br", "--region", "eu", "--state", url], check=True,
                       capture_output=True)
        for server in (a, b):
            wait_answer(server, "app.geo.test.", ["203.0.113.40"], 3.0)
    finally:
        a.stop()
        b.stop()


def test_allocator_settings_edited_on_one_node_run_on_the_other(pg: PostgresServer,
                                                                tmp_path: Path) -> None:
    """A pin added through node A's API reaches node B's allocator.yaml through the store,
    B's running allocator takes it, and the pinned shadow answers on both nodes."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url, "--api", "127.0.0.1:0")
    b = node(tmp_path, "node-b", url)
    try:
        secret = token(url)
        body = json.dumps({"di": "app.geo.test.", "resource": "s-br", "region": "eu"})
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port(a)}/api/v1/allocator/pins", data=body.encode(),
            method="POST", headers={"Authorization": f"Bearer {secret}",
                                    "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 201
        b.wait_log(r"allocator: new settings: active, window 300s, 1 pin", timeout=10)
        assert "resource: s-br" in (tmp_path / "node-b" / "allocator.yaml").read_text()
        for server in (a, b):
            wait_answer(server, "app.geo.test.", ["203.0.113.40"], 10.0)
    finally:
        a.stop()
        b.stop()


def test_killing_the_leader_moves_the_control_plane(pg: PostgresServer,
                                                    tmp_path: Path) -> None:
    """Exactly one node leads; when it dies the other takes the lock."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url)
    a.wait_log(r"node node-a now leads the control plane")
    b = node(tmp_path, "node-b", url)
    try:
        time.sleep(3)
        assert not any("node-b now leads" in line for line in b.log)
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        b.wait_log(r"node node-b now leads the control plane", timeout=15)
    finally:
        a.stop()
        b.stop()


def test_nodes_keep_answering_without_the_database(pg: PostgresServer,
                                                   tmp_path: Path) -> None:
    """With PostgreSQL stopped both nodes still answer from their last good table, node A
    reports not ready with the reason, and both notice when it comes back."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url, "--api", "127.0.0.1:0")
    b = node(tmp_path, "node-b", url)
    try:
        port = api_port(a)
        pg._run("pg_ctl", "-D", str(pg.data), "-m", "fast", "-w", "stop")
        for server in (a, b):
            assert answer(server, "www.geo.test.") == ["192.0.2.80"]
            assert answer(server, "app.geo.test.") in (["192.0.2.10"], ["198.51.100.10"])
        a.wait_log(r"store unreachable", timeout=15)
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10)
            ready_status = 200
        except urllib.error.HTTPError as exc:
            ready_status = exc.code
            reason = exc.read().decode()
        assert ready_status == 503
        assert "store" in reason
        pg._run("pg_ctl", "-D", str(pg.data), "-l", str(pg.root / "server.log"), "-w",
                "-o", f"-c listen_addresses=127.0.0.1 -p {pg.port} -k {pg.root}", "start")
        a.wait_log(r"store reachable again", timeout=20)
        assert answer(b, "www.geo.test.") == ["192.0.2.80"]
    finally:
        a.stop()
        b.stop()


def signed(server: ServerProcess, name: str, rdtype: str) -> dns.message.Message:
    """The answer to a query with the DO bit."""
    query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
    return dns.query.udp(query, server.host, port=server.port, timeout=2)


def dnskeys(server: ServerProcess) -> dns.rrset.RRset:
    reply = signed(server, "geo.test.", "DNSKEY")
    return reply.find_rrset(reply.answer, dns.name.from_text("geo.test."), dns.rdataclass.IN,
                            dns.rdatatype.DNSKEY)


def wait_dnskeys(server: ServerProcess, count: int, seconds: float) -> dns.rrset.RRset:
    deadline = time.monotonic() + seconds
    while True:
        found = dnskeys(server)
        if len(found) == count or time.monotonic() > deadline:
            assert len(found) == count, f"{found} after {seconds}s, expected {count} key(s)"
            return found
        time.sleep(0.1)


def validated_by(server: ServerProcess, keys: dns.rrset.RRset) -> None:
    """The server's signed answer for www validates against `keys` (another node's)."""
    reply = signed(server, "www.geo.test.", "A")
    answer = reply.find_rrset(reply.answer, dns.name.from_text("www.geo.test."),
                              dns.rdataclass.IN, dns.rdatatype.A)
    rrsig = reply.find_rrset(reply.answer, answer.name, dns.rdataclass.IN,
                             dns.rdatatype.RRSIG, dns.rdatatype.A)
    dns.dnssec.validate(answer, rrsig, {keys.name: keys})


def dnssec(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "shadowdns", "dnssec", *args], check=True,
                   capture_output=True, text=True)


def test_nodes_with_empty_key_directories_sign_with_one_key_set(pg: PostgresServer,
                                                                 tmp_path: Path) -> None:
    """Two nodes started together, each with its own empty --dnssec-keys directory, serve
    the same DNSKEY set, and each one's signatures validate with the other's keys; the
    key files are the same bytes, mode 0600. A hand roll on node A (`dnssec roll`, then
    `--finish`) reaches node B through the store: both publish both keys, then the new
    one alone."""
    url = pg.create_database()
    keys_a, keys_b = tmp_path / "keys-a", tmp_path / "keys-b"
    with ThreadPoolExecutor(2) as pool:
        started = [pool.submit(node, tmp_path, name, url, "--dnssec-keys", str(keys))
                   for name, keys in (("node-a", keys_a), ("node-b", keys_b))]
    a, b = (future.result() for future in started)
    try:
        first = dnskeys(a)
        assert len(first) == 1
        assert dnskeys(b) == first
        validated_by(b, dnskeys(a))
        validated_by(a, dnskeys(b))
        files = sorted(p.name for p in keys_a.iterdir())
        assert files == ["geo.test.csk.pem"]
        assert sorted(p.name for p in keys_b.iterdir()) == files
        for keys in (keys_a, keys_b):
            assert stat.S_IMODE((keys / files[0]).stat().st_mode) == 0o600
        assert (keys_a / files[0]).read_bytes() == (keys_b / files[0]).read_bytes()

        dnssec("roll", "--keys", str(keys_a), "geo.test.")
        start = time.monotonic()
        a.signal(signal.SIGHUP)
        rolling = wait_dnskeys(a, 2, 10.0)
        assert wait_dnskeys(b, 2, 10.0) == rolling
        print(f"node B served the successor {time.monotonic() - start:.3f}s after SIGHUP to A")
        validated_by(b, rolling)

        dnssec("roll", "--finish", "--keys", str(keys_a), "geo.test.")
        start = time.monotonic()
        a.signal(signal.SIGHUP)
        finished = wait_dnskeys(a, 1, 10.0)
        assert wait_dnskeys(b, 1, 10.0) == finished
        print(f"node B finished the roll {time.monotonic() - start:.3f}s after SIGHUP to A")
        assert finished != first
        validated_by(b, finished)
        assert sorted(p.name for p in keys_b.iterdir()) == sorted(
            p.name for p in keys_a.iterdir())
    finally:
        a.stop()
        b.stop()


def test_a_node_with_worker_processes_takes_the_fleets_key(pg: PostgresServer,
                                                         tmp_path: Path) -> None:
    """A node started with `--workers 2` and an empty key directory on a fleet that has
    its key: the main process takes the store's key before the worker loads, so it starts
    (no conflict with a key its own worker made) and every process serves the fleet's
    DNSKEY set."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url, "--dnssec-keys", str(tmp_path / "keys-a"))
    try:
        fleet_keys = dnskeys(a)
        zones = tmp_path / "node-b"
        shutil.copytree(GEO, zones)
        b = ServerProcess(["serve", "--zones", str(zones), "--listen",
                           f"127.0.0.1:{free_port()}", "--store", url, "--node-id", "node-b",
                           "--dnssec-keys", str(tmp_path / "keys-b"), "--workers", "2"],
                          listeners=2).start()
        try:
            query = dns.message.make_query("geo.test.", "DNSKEY", want_dnssec=True)
            for _ in range(30):  # a new TCP connection each: the kernel spreads them
                reply = dns.query.tcp(query, b.host, port=b.port, timeout=5)
                assert reply.find_rrset(reply.answer, fleet_keys.name, dns.rdataclass.IN,
                                        dns.rdatatype.DNSKEY) == fleet_keys
        finally:
            b.stop()
        assert (tmp_path / "keys-b" / "geo.test.csk.pem").read_bytes() == (
            tmp_path / "keys-a" / "geo.test.csk.pem").read_bytes()
    finally:
        a.stop()


def test_a_node_without_a_key_policy_signs_as_the_fleets_policy_says(
        pg: PostgresServer, tmp_path: Path) -> None:
    """Node A splits its zone into a KSK and ZSKs (`key-policy.yaml`); node B starts with
    an empty key directory. B takes the policy and the keys from the store, publishes A's
    DNSKEY set (KSK and ZSK, not a CSK of its own) and signs with A's ZSK, so a validator
    that mixes the two nodes' answers finds every signature's key."""
    url = pg.create_database()
    keys_a = tmp_path / "keys-a"
    keys_a.mkdir(mode=0o700)
    (keys_a / "key-policy.yaml").write_text("split: true\nzsk_lifetime: 30d\n")
    a = node(tmp_path, "node-a", url, "--dnssec-keys", str(keys_a))
    try:
        fleet_keys = dnskeys(a)
        assert len(fleet_keys) == 2
        b = node(tmp_path, "node-b", url, "--dnssec-keys", str(tmp_path / "keys-b"))
        try:
            assert dnskeys(b) == fleet_keys
            validated_by(b, fleet_keys)
            assert (tmp_path / "keys-b" / "key-policy.yaml").read_bytes() == (
                keys_a / "key-policy.yaml").read_bytes()
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_node_with_another_key_refuses_to_start(pg: PostgresServer, tmp_path: Path) -> None:
    """A node whose key directory holds a different key for a zone than the fleet's store
    does not start (it would publish another DNSKEY set): it names the zone and the file,
    and leaves both keys as they were."""
    url = pg.create_database()
    a = node(tmp_path, "node-a", url, "--dnssec-keys", str(tmp_path / "keys-a"))
    a.stop()
    theirs = (tmp_path / "keys-a" / "geo.test.csk.pem").read_bytes()
    keys = tmp_path / "keys-c"
    keys.mkdir(mode=0o700)
    (keys / "geo.test.csk.pem").write_bytes(new_private_key())
    mine = (keys / "geo.test.csk.pem").read_bytes()
    zones = tmp_path / "node-c"
    shutil.copytree(GEO, zones)
    done = subprocess.run([sys.executable, "-m", "shadowdns", "serve", "--zones", str(zones),
                           "--listen", "127.0.0.1:0", "--store", url, "--node-id", "node-c",
                           "--dnssec-keys", str(keys)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0, done.stderr
    assert f"{keys / 'geo.test.csk.pem'}: zone geo.test.: this key file differs" in done.stderr
    assert (keys / "geo.test.csk.pem").read_bytes() == mine
    assert (tmp_path / "keys-a" / "geo.test.csk.pem").read_bytes() == theirs


def readiness(server: ServerProcess, port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        body: dict[str, object] = json.loads(response.read())
    return body


def publish_txt(server: ServerProcess, zones: Path, label: str) -> None:
    """Add a TXT record to a node's zone file and reload it, so the store carries it."""
    zone = zones / "geo.test.zone"
    zone.write_text(zone.read_text() + f'{label} 60 IN TXT "{label}"\n')
    server.signal(signal.SIGHUP)


def test_a_key_conflict_after_start_degrades_the_node_until_it_is_gone(
        pg: PostgresServer, tmp_path: Path) -> None:
    """A node whose key file is replaced while it runs keeps signing with it, takes the
    fleet's zone changes, reports the conflict once (not at every sync) and names the
    file in /readyz "degraded"; restoring the file clears it at the next sync."""
    url = pg.create_database()
    keys_a, keys_b = tmp_path / "keys-a", tmp_path / "keys-b"
    a = node(tmp_path, "node-a", url, "--dnssec-keys", str(keys_a))
    b = node(tmp_path, "node-b", url, "--dnssec-keys", str(keys_b), "--api", "127.0.0.1:0")
    try:
        port = api_port(b)
        assert readiness(b, port)["degraded"] == {}
        key = keys_b / "geo.test.csk.pem"
        fleet_key = key.read_bytes()
        key.write_bytes(new_private_key())
        for label in ("first", "second"):
            publish_txt(a, tmp_path / "node-a", label)
            wait_txt(b, f"{label}.geo.test.", 10.0)
        degraded = readiness(b, port)["degraded"]
        assert isinstance(degraded, dict), degraded
        assert "geo.test.csk.pem" in degraded["dnssec_key_conflict"], degraded
        reports = [line for line in b.log if "DNSSEC keys differ from the fleet" in line]
        assert len(reports) == 1, "".join(b.log)
        assert key.read_bytes() != fleet_key  # the node kept its own

        key.write_bytes(fleet_key)
        publish_txt(a, tmp_path / "node-a", "third")
        wait_txt(b, "third.geo.test.", 10.0)
        b.wait_log("DNSSEC keys agree with the fleet store again")
        assert readiness(b, port)["degraded"] == {}
    finally:
        a.stop()
        b.stop()


def wait_txt(server: ServerProcess, name: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answer(server, name, "TXT"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} TXT not answered within {seconds}s:\n" + "".join(server.log))
