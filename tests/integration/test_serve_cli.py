"""The `shadowdns check` and `shadowdns serve` commands as an operator uses them.

`check` accepts good zones and lists every problem of every bad file as file:line: reason;
`serve` reloads on SIGHUP (keeping the old data when the new files are broken), listens on
IPv6, returns NSID when configured, and answers or refuses the CHAOS identity questions.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.serverproc import ServerProcess, serve

DIFF_ZONES = Path(__file__).resolve().parent.parent / "data" / "zones" / "diff"
NSID_CODE = 3

ZONE = """$ORIGIN cli.test.
$TTL 300
@     IN SOA ns1 hostmaster 1 3600 600 86400 60
@     IN NS  ns1
ns1   IN A   192.0.2.53
www   IN A   {address}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadowdns", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def ask(server: ServerProcess, qname: str, qtype: str = "A", *, rdclass: str = "IN",
        tcp: bool = False, **make: object) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, rdclass, **make)  # type: ignore[arg-type]
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=3)


def a_records(reply: dns.message.Message) -> set[str]:
    return {rd.to_text() for rrset in reply.answer if rrset.rdtype == dns.rdatatype.A
            for rd in rrset}


# -- check ---------------------------------------------------------------------------------


def test_check_accepts_good_zones() -> None:
    """`check` on valid zones exits 0 and reports each zone as ok."""
    done = run_cli("check", str(DIFF_ZONES))
    assert done.returncode == 0, done.stderr
    assert "zone diff.test. serial 2024010101" in done.stdout
    assert "zone sub.diff.test. serial 7" in done.stdout
    assert done.stdout.count(": ok") == 2


def test_check_lists_every_problem_with_file_and_line(tmp_path: Path) -> None:
    """`check` on broken zones exits 1 and prints file:line: reason for every problem in
    every file, not just the first one it meets."""
    (tmp_path / "one.test.zone").write_text(
        "$ORIGIN one.test.\n"
        "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60\n"
        "@ 300 IN NS ns1\n"
        "www 300 IN A 192.0.2.1\n"
        "www 300 IN CNAME elsewhere.test.\n"
    )
    (tmp_path / "two.test.zone").write_text(
        "$ORIGIN two.test.\n"
        "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60\n"
        "@ 300 IN NS ns1\n"
        "bad 300 IN BOGUS 1\n"
        "ns1 300 IN A 192.0.2.1\n"
    )
    (tmp_path / "three.test.zone").write_text(
        "$ORIGIN three.test.\n"
        "www 300 IN A 192.0.2.3\n"
    )
    (tmp_path / "good.test.zone").write_text(ZONE.replace("cli.test.", "good.test.")
                                             .format(address="192.0.2.9"))
    done = run_cli("check", str(tmp_path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    one, two, three = (str(tmp_path / f"{n}.test.zone") for n in ("one", "two", "three"))
    assert any(line.startswith(f"{one}:5: ") and "CNAME" in line for line in lines), lines
    assert any(line.startswith(f"{two}:4: ") for line in lines), lines
    three_lines = [line for line in lines if line.startswith(f"{three}: ")]
    assert any("SOA" in line for line in three_lines), lines
    assert any("NS" in line for line in three_lines), lines
    assert not any("good.test" in line for line in lines)


def test_check_reports_the_line_of_a_bad_address(tmp_path: Path) -> None:
    """A malformed address is reported on its own line, not the next one."""
    (tmp_path / "t.test.zone").write_text(
        "$ORIGIN t.test.\n"
        "@ 300 IN SOA ns1 hostmaster 1 3600 600 86400 60\n"
        "@ 300 IN NS ns1\n"
        "bad 300 IN A 999.0.2.1\n"
        "ns1 300 IN A 192.0.2.1\n"
    )
    done = run_cli("check", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{tmp_path / 't.test.zone'}:4: "), done.stderr


# -- serve: reload -------------------------------------------------------------------------


@pytest.fixture
def reload_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "cli.test.zone").write_text(ZONE.format(address="192.0.2.1"))
    proc = serve(zones, "--state", ":memory:")
    try:
        yield proc, zones / "cli.test.zone"
    finally:
        proc.stop()


def test_sighup_reloads_and_keeps_old_data_on_error(
        reload_server: tuple[ServerProcess, Path]) -> None:
    """SIGHUP picks up a changed zone; a broken zone on the next SIGHUP is logged and the
    last good data stays served."""
    server, zone_file = reload_server
    assert a_records(ask(server, "www.cli.test.")) == {"192.0.2.1"}
    zone_file.write_text(ZONE.format(address="192.0.2.2").replace(" 1 3600", " 2 3600"))
    server.signal(signal.SIGHUP)
    server.wait_log(r"reloaded 1 zone")
    assert a_records(ask(server, "www.cli.test.")) == {"192.0.2.2"}
    zone_file.write_text(ZONE.format(address="192.0.2.3").replace("IN A   192.0.2.3",
                                                                  "IN BOGUS 1"))
    server.signal(signal.SIGHUP)
    server.wait_log(r"reload failed")
    server.wait_log(r"cli\.test\.zone:6: unknown rdatatype")
    assert a_records(ask(server, "www.cli.test.")) == {"192.0.2.2"}
    assert a_records(ask(server, "www.cli.test.", tcp=True)) == {"192.0.2.2"}
    assert server.proc is not None and server.proc.poll() is None


def test_reload_warns_when_a_zone_changed_but_its_serial_did_not(
        reload_server: tuple[ServerProcess, Path]) -> None:
    """A hand edit that keeps the serial is served, with a warning naming the file: the
    secondaries compare serials and would never transfer it."""
    server, zone_file = reload_server
    zone_file.write_text(ZONE.format(address="192.0.2.7"))
    server.signal(signal.SIGHUP)
    line = server.wait_log(r"serial is still 1")
    assert "WARNING" in line and str(zone_file) in line
    server.wait_log(r"reloaded 1 zone")
    assert a_records(ask(server, "www.cli.test.")) == {"192.0.2.7"}
    zone_file.write_text(ZONE.format(address="192.0.2.8").replace(" 1 3600", " 2 3600"))
    mark = len(server.log)
    server.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while a_records(ask(server, "www.cli.test.")) != {"192.0.2.8"}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not any("serial is still" in line for line in server.log[mark:])


# -- serve: IPv6, NSID, CHAOS --------------------------------------------------------------


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_ipv6_listener() -> None:
    """`--listen [::1]:0` binds UDP and TCP on ::1 and answers there."""
    server = ServerProcess(["serve", "--zones", str(DIFF_ZONES), "--listen", "[::1]:0",
                            "--state", ":memory:"]).start()
    try:
        assert server.host == "::1"
        for tcp in (False, True):
            assert a_records(ask(server, "www.diff.test.", tcp=tcp)) == {"192.0.2.80",
                                                                          "192.0.2.81"}
    finally:
        server.stop()


@pytest.mark.parametrize("batch", ["--udp-batch", "--no-udp-batch"])
def test_udp_answers_with_and_without_the_batch_helper(batch: str) -> None:
    """Both UDP paths (recvmmsg/sendmmsg where built, one datagram at a time) answer a
    burst of queries, each to its own id, and the server exits cleanly."""
    server = serve(DIFF_ZONES, "--state", ":memory:", batch)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        try:
            queries = [dns.message.make_query("www.diff.test.", "A") for _ in range(100)]
            for query in queries:
                sock.sendto(query.to_wire(), (server.host, server.port))
            ids = set()
            for _ in queries:
                reply = dns.message.from_wire(sock.recv(65535))
                assert a_records(reply) == {"192.0.2.80", "192.0.2.81"}
                ids.add(reply.id)
        finally:
            sock.close()
        assert ids == {q.id for q in queries}
        assert a_records(ask(server, "www.diff.test.", tcp=True)) == {"192.0.2.80",
                                                                      "192.0.2.81"}
    finally:
        assert server.stop() == 0


@pytest.fixture(scope="module")
def identity_server() -> Iterator[ServerProcess]:
    proc = serve(DIFF_ZONES, "--state", ":memory:", "--nsid", "ns-test-1",
                 "--identity", "node-7", "--server-version", "shadowdns test")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def hidden_server() -> Iterator[ServerProcess]:
    proc = serve(DIFF_ZONES, "--state", ":memory:", "--nsid", "0x6e7331",
                 "--hide-identity", "--hide-version")
    try:
        yield proc
    finally:
        proc.stop()


def _nsid(reply: dns.message.Message) -> bytes | None:
    for option in reply.options:
        if option.otype == NSID_CODE:
            data = option.to_wire()
            return data if data is not None else b""
    return None


def test_nsid_returned_when_asked(identity_server: ServerProcess,
                                  hidden_server: ServerProcess) -> None:
    """With --nsid the NSID option comes back to queries that carry it (RFC 5001), as text
    or as 0x-prefixed hex, and not to queries that do not ask."""
    asked = [dns.edns.GenericOption(NSID_CODE, b"")]
    for tcp in (False, True):
        reply = ask(identity_server, "www.diff.test.", use_edns=0, options=asked, tcp=tcp)
        assert _nsid(reply) == b"ns-test-1"
    assert _nsid(ask(identity_server, "www.diff.test.", use_edns=0)) is None
    assert _nsid(ask(hidden_server, "www.diff.test.", use_edns=0, options=asked)) == b"ns1"


def test_no_nsid_without_the_flag() -> None:
    """Without --nsid no NSID option is returned, even when asked."""
    server = serve(DIFF_ZONES, "--state", ":memory:")
    try:
        reply = ask(server, "www.diff.test.", use_edns=0,
                    options=[dns.edns.GenericOption(NSID_CODE, b"")])
        assert reply.rcode() == dns.rcode.NOERROR and _nsid(reply) is None
    finally:
        server.stop()


@pytest.mark.parametrize(("qname", "text"), [
    ("id.server.", "node-7"), ("hostname.bind.", "node-7"),
    ("version.bind.", "shadowdns test"), ("version.server.", "shadowdns test"),
])
def test_chaos_identity_answered(identity_server: ServerProcess, qname: str,
                                 text: str) -> None:
    """CHAOS TXT id.server / hostname.bind give --identity, version.bind / version.server
    give --server-version (RFC 4892), over UDP and TCP."""
    for tcp in (False, True):
        reply = ask(identity_server, qname, "TXT", rdclass="CH", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert len(reply.answer) == 1
        rrset = reply.answer[0]
        assert rrset.rdclass == dns.rdataclass.CH and rrset.name.to_text() == qname
        assert [s.decode() for s in rrset[0].strings] == [text]


@pytest.mark.parametrize("qname", ["id.server.", "hostname.bind.", "version.bind.",
                                   "version.server."])
def test_chaos_identity_refused_when_hidden(hidden_server: ServerProcess, qname: str) -> None:
    """With --hide-identity / --hide-version those CHAOS questions are REFUSED."""
    reply = ask(hidden_server, qname, "TXT", rdclass="CH")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer


def test_chaos_other_names_and_types_refused(identity_server: ServerProcess) -> None:
    """Other CHAOS names, and non-TXT types for the identity names, are REFUSED (as Knot)."""
    assert ask(identity_server, "authors.bind.", "TXT", rdclass="CH").rcode() == \
        dns.rcode.REFUSED
    assert ask(identity_server, "id.server.", "A", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_server_stops_cleanly_on_sigterm() -> None:
    """SIGTERM stops the server promptly with exit status 0 and a 'stopped' log line."""
    server = serve(DIFF_ZONES, "--state", ":memory:")
    server.wait_log(r"serving \d+ zone")  # signal handlers are installed by then
    started = time.monotonic()
    code = server.stop()
    assert code == 0 and time.monotonic() - started < 10
    assert any("stopped" in line for line in server.log)


def test_answer_only_answers_without_the_control_plane() -> None:
    """`--answer-only` answers like a normal server but starts no allocator; a normal
    server does start it. Combined with `--api` it is refused, naming the flag."""
    normal = serve(DIFF_ZONES, "--state", ":memory:")
    bare = serve(DIFF_ZONES, "--state", ":memory:", "--answer-only")
    try:
        for server in (normal, bare):
            server.wait_log(r"serving \d+ zone")
            assert a_records(ask(server, "www.diff.test.")) == {"192.0.2.80", "192.0.2.81"}
            assert a_records(ask(server, "www.diff.test.", tcp=True)) == {"192.0.2.80",
                                                                          "192.0.2.81"}
        assert any("allocator:" in line for line in normal.log), normal.log
        assert not any("allocator:" in line for line in bare.log), bare.log
    finally:
        normal.stop()
        bare.stop()
    refused = run_cli("serve", "--zones", str(DIFF_ZONES), "--state", ":memory:",
                      "--answer-only", "--api", "127.0.0.1:0")
    assert refused.returncode != 0 and "--answer-only" in refused.stderr
