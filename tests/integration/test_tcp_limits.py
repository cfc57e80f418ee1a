"""TCP under abuse: slow-drip and never-reading clients cannot pin the real server.

Each test starts `shadowdns serve` with the limits under test and plays the attacker over
real sockets: a message declared large and dripped a byte at a time, hundreds of such
clients at once, pipelined queries for a large RRset whose answers are never read, one
network opening connection after connection. Legitimate use must keep working meanwhile:
pipelining with reads, zone transfers that outlast the connection lifetime. Clients come
from several loopback networks (all of 127/8 is local on Linux) so the per-/24 limit can
be told apart from the global cap.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.dnsclient import recv_exact, tcp_read_message
from tests.serverproc import ServerProcess

BIG_RRSET = 100  # TXT records of 200 bytes at big.tcp.test.: a ~21 KB answer
ZONE_RECORDS = 20_000  # TXT records of 200 bytes: a ~4.5 MB AXFR
TCP_ESTABLISHED = 1


def write_zone(directory: Path, records: int) -> Path:
    text = "x" * 200
    lines = ["$ORIGIN tcp.test.", "$TTL 300",
             "@ SOA ns1 hostmaster 1 3600 600 86400 60", "@ NS ns1", "ns1 A 192.0.2.1",
             "www A 192.0.2.80"]
    lines += [f'big TXT "{i:04d}{text}"' for i in range(BIG_RRSET)]
    lines += [f't{i} TXT "{text}"' for i in range(records)]
    (directory / "tcp.test.zone").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_zone(tmp_path_factory.mktemp("zones"), 0)


@pytest.fixture(scope="module")
def big_zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same zone with ZONE_RECORDS more records, for a transfer longer than a second."""
    return write_zone(tmp_path_factory.mktemp("big-zones"), ZONE_RECORDS)


def server(zones: Path, *flags: str) -> ServerProcess:
    """`shadowdns serve` on 127.0.0.1 port 0 with these flags, to start with `with`."""
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                          "--state", ":memory:", "--answer-only", *flags])


def framed(qname: str = "www.tcp.test.", qtype: str = "A", qid: int = 1) -> bytes:
    query = dns.message.make_query(qname, qtype)
    query.id = qid
    wire = query.to_wire()
    return struct.pack("!H", len(wire)) + wire


def connect(srv: ServerProcess, source: str = "127.0.0.1", timeout: float = 3.0,
            rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:  # before connecting, so the window starts small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect((srv.host, srv.port))
    except OSError:
        sock.close()
        raise
    return sock


def answered(sock: socket.socket, qid: int = 1) -> bool:
    """Send one query on `sock`; True if its answer comes back."""
    try:
        sock.sendall(framed(qid=qid))
        reply = tcp_read_message(sock)
    except OSError:
        return False
    return reply is not None and reply[:2] == qid.to_bytes(2, "big") \
        and reply[3] & 0xF == dns.rcode.NOERROR


def closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def tcp_state(sock: socket.socket) -> int:
    """The kernel's state of `sock` (TCP_INFO's first byte): readable without reading."""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


# -- a deadline for a whole message, idle only between messages ----------------------------


def test_a_dripped_message_is_cut_one_message_timeout_after_its_first_byte(zones: Path) -> None:
    """A client that declares 100 bytes and sends one every 0.25 s is closed about 1 s after
    its first byte: the bytes do not restart a timer. Between messages the (30 s) idle
    timeout applies instead: a pause of 1.5 s after an answer is fine."""
    with server(zones, "--tcp-message-timeout", "1", "--tcp-idle-timeout", "30") as srv:
        with connect(srv) as sock:
            sock.sendall(b"\x00\x64")  # declares a 100-byte message
            started = time.monotonic()
            sent = 0
            while not closed_by_server(sock, 0.25):
                try:
                    sock.send(b"\x00")
                except OSError:
                    break
                sent += 1
                assert time.monotonic() - started < 10, "dripped message never cut"
            elapsed = time.monotonic() - started
        assert sent < 98 and 0.8 <= elapsed <= 3.5, (sent, elapsed)

        with connect(srv) as sock:
            assert answered(sock, 1)
            time.sleep(1.5)
            assert answered(sock, 2), "the message timeout must not run between messages"


# -- slow-drip clients against the global cap ----------------------------------------------


class Drippers:
    """`count` clients that each declare a 65,535-byte message and send one byte a second,
    reconnecting whenever the server drops them, from 127.1.N.M (30 per /24)."""

    def __init__(self, server: ServerProcess, count: int) -> None:
        self.server = server
        self.sources = [f"127.1.{i // 30}.{i % 30 + 1}" for i in range(count)]
        self.socks: list[socket.socket | None] = [None] * count
        self.stop = threading.Event()
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, index: int) -> None:
        try:
            sock = connect(self.server, self.sources[index], timeout=1.0)
            sock.setblocking(False)
            sock.send(b"\xff\xff\x00")
        except OSError:
            self.socks[index] = None
            return
        self.socks[index] = sock

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for index, sock in enumerate(self.socks):
                if self.stop.is_set():
                    return
                try:
                    if sock is None:
                        raise OSError
                    sock.send(b"\x00")
                except OSError:
                    if sock is not None:
                        sock.close()
                    self.reconnects += 1
                    self._open(index)

    def __enter__(self) -> Drippers:
        for index in range(len(self.socks)):
            self._open(index)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            if sock is not None:
                sock.close()


@pytest.mark.parametrize("flags", [
    pytest.param((), id="defaults"),
    # No message deadline, no lifetime: only the cap's replacement can let the client in.
    pytest.param(("--tcp-message-timeout", "600", "--tcp-lifetime", "0"), id="cap-only"),
])
def test_slow_drip_clients_do_not_lock_out_a_fresh_client(
        zones: Path, flags: tuple[str, ...]) -> None:
    """300 slow-drip clients (more than the 256 slots) that reconnect when dropped; a fresh
    client still gets its answer over TCP within a few seconds, several times over."""
    with server(zones, *flags) as srv, Drippers(srv, 300) as drippers:
        time.sleep(2.5)  # every slot taken, and every dripper older than a second
        for attempt in range(3):
            started = time.monotonic()
            with connect(srv, timeout=5.0) as fresh:
                assert answered(fresh, attempt + 1), f"fresh client locked out ({attempt})"
            assert time.monotonic() - started < 5.0
            time.sleep(0.5)
        assert drippers.reconnects > 0  # the attack kept pressing on the cap meanwhile


# -- output that is never read ------------------------------------------------------------


def test_pipelined_queries_whose_answers_are_never_read_close_the_connection(zones: Path) -> None:
    """A client pipelines thousands of queries for a ~21 KB RRset and never reads: the
    server stops reading it once its output backs up, and closes it when that output has
    not drained for the message timeout (1 s) - instead of buffering every answer."""
    with server(zones, "--tcp-message-timeout", "1") as srv:
        query = framed("big.tcp.test.", "TXT")
        with connect(srv) as sock:
            sock.setblocking(False)
            blob = query * 2000
            sent = 0
            deadline = time.monotonic() + 5
            while sent < 200 * len(blob) and time.monotonic() < deadline:
                try:
                    sent += sock.send(blob)
                except BlockingIOError:
                    time.sleep(0.01)  # the server has stopped reading us
                except OSError:
                    break
            queries = sent // len(query)
            while tcp_state(sock) == TCP_ESTABLISHED and time.monotonic() < deadline + 5:
                time.sleep(0.1)
            assert tcp_state(sock) != TCP_ESTABLISHED, f"still open after {queries} queries"
        assert queries > 200  # more answers than the buffers between us could ever hold


def test_pipelined_queries_with_reads_all_get_answers_in_order(zones: Path) -> None:
    """RFC 7766 pipelining through back-pressure: 400 queries for the ~21 KB RRset sent at
    once (~8 MB of answers, more than the socket buffers) then read - every answer arrives,
    whole and in order."""
    with server(zones) as srv:
        ids = list(range(1, 401))
        with connect(srv, timeout=10) as sock:
            sock.sendall(b"".join(framed("big.tcp.test.", "TXT", qid) for qid in ids))
            got = []
            for _ in ids:
                reply = tcp_read_message(sock)
                assert reply is not None
                message = dns.message.from_wire(reply)
                assert sum(len(rrset) for rrset in message.answer) == BIG_RRSET
                got.append(message.id)
        assert got == ids


# -- per-prefix limit, and the cap replacing stalled connections --------------------------


def test_one_network_holds_at_most_per_prefix_connections(zones: Path) -> None:
    """With --tcp-per-prefix 2, a third connection from 127.0.0.0/24 is refused at once
    while one from 127.0.1.0/24 is served; closing one frees a slot for its network."""
    with server(zones, "--tcp-per-prefix", "2", "--tcp-idle-timeout", "30") as srv:
        held = [connect(srv) for _ in range(2)]
        try:
            assert all(answered(sock, i + 1) for i, sock in enumerate(held))
            with connect(srv) as extra:
                assert not answered(extra, 3), "a third connection from one /24 was served"
            with connect(srv, source="127.0.1.1") as other:
                assert answered(other, 4)
            held.pop().close()
            deadline = time.monotonic() + 3
            while True:
                with connect(srv) as again:
                    if answered(again, 5):
                        break
                assert time.monotonic() < deadline, "the freed slot was not given back"
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()


def test_full_server_replaces_the_connection_longest_without_progress(zones: Path) -> None:
    """At the cap (3), once the held connections have been idle over a second a new client
    is served, and the one idle longest is the one closed (the others keep working)."""
    with server(zones, "--tcp-max-connections", "3", "--tcp-idle-timeout", "30") as srv:
        held = [connect(srv, source=f"127.0.{i}.1") for i in range(3)]
        try:
            for i, sock in enumerate(held):
                assert answered(sock, i + 1)
                time.sleep(0.1)
            assert answered(held[2], 9)  # most recent progress: the last to be replaced
            time.sleep(1.3)
            with connect(srv, source="127.0.9.1") as fresh:
                assert answered(fresh, 4)
                assert closed_by_server(held[0], 2.0)
                assert answered(held[1], 5) and answered(held[2], 6)
        finally:
            for sock in held:
                sock.close()


# -- connection lifetime --------------------------------------------------------------------


def test_lifetime_ends_a_busy_connection_but_not_a_transfer(big_zones: Path) -> None:
    """With --tcp-lifetime 1 a connection querying every 0.2 s is closed after about a
    second, between messages; a slow AXFR of ~4.5 MB that outlasts the lifetime arrives
    whole."""
    with server(big_zones, "--tcp-lifetime", "1", "--transfer-acl", "127.0.0.0/8") as srv:
        with connect(srv) as busy:
            started = time.monotonic()
            qid = 0
            while answered(busy, qid + 1):
                qid += 1
                assert time.monotonic() - started < 10, "lifetime never enforced"
                time.sleep(0.2)
            elapsed = time.monotonic() - started
        assert 0.8 <= elapsed <= 3.5 and qid >= 3, (elapsed, qid)

        records = 0
        soa = 0
        with connect(srv, timeout=10, rcvbuf=65536) as xfr:
            query = dns.message.make_query("tcp.test.", "AXFR").to_wire()
            xfr.sendall(struct.pack("!H", len(query)) + query)
            started = time.monotonic()
            while soa < 2:
                head = recv_exact(xfr, 2)
                assert head is not None, f"transfer cut after {records} records"
                wire = recv_exact(xfr, head[0] << 8 | head[1])
                assert wire is not None, f"transfer cut after {records} records"
                message = dns.message.from_wire(wire, one_rr_per_rrset=True)
                for rrset in message.answer:
                    records += len(rrset)
                    soa += rrset.rdtype == dns.rdatatype.SOA
                time.sleep(0.01)  # a slow secondary
            elapsed = time.monotonic() - started
        assert records == ZONE_RECORDS + BIG_RRSET + 5, records  # + SOA twice, NS, 2 A
        assert elapsed > 1.0, "the transfer did not outlast the lifetime; slow the reader"


def test_bad_limits_are_refused_naming_each_flag(zones: Path) -> None:
    """`serve` with impossible limits exits 1 before listening, naming every bad flag."""
    done = subprocess.run(
        [sys.executable, "-m", "shadowdns", "serve", "--zones", str(zones), "--listen",
         "127.0.0.1:0", "--state", ":memory:", "--tcp-message-timeout", "0",
         "--tcp-per-prefix", "-1"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "--tcp-message-timeout: must be more than 0" in done.stderr
    assert "--tcp-per-prefix: must be 0 (no limit) or more" in done.stderr
    assert "Traceback" not in done.stderr
