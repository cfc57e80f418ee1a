"""Malformed and unusual messages: the server answers each as the RFCs say, or stays silent,
and keeps answering valid queries afterwards; the TCP listener's framing and limits hold.

Every case runs over UDP and TCP against the real `shadowdns serve`. Expectations are the
rcode (or silence), whether the question is echoed, and whether an OPT comes back. Where
Knot DNS behaves differently the case documents Knot's behaviour and the RFC text for ours,
and `test_knot_behaves_as_documented` checks that documentation against a real knotd (it is
skipped, with a reason, when Knot is not installed).
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import pytest

from tests.dnsclient import Address, recv_exact, tcp_read_message
from tests.knotproc import SKIP_REASON, KnotProcess, knotd_path
from tests.serverproc import ServerProcess, serve

ZONES_DIR = Path(__file__).resolve().parent.parent / "data" / "zones" / "diff"
ZONE_FILES = {"diff.test.": "diff.test.zone", "sub.diff.test.": "sub.diff.test.zone"}
PROBE_ID = 0x5EED

FORMERR = int(dns.rcode.FORMERR)
NOTIMP = int(dns.rcode.NOTIMP)
NOERROR = int(dns.rcode.NOERROR)
REFUSED = int(dns.rcode.REFUSED)
BADVERS = int(dns.rcode.BADVERS)
NOTAUTH = int(dns.rcode.NOTAUTH)


# -- building messages ---------------------------------------------------------------------


def name(text: str) -> bytes:
    labels = [label for label in text.rstrip(".").split(".") if label]
    return b"".join(bytes([len(lb)]) + lb.encode() for lb in labels) + b"\x00"


def header(qid: int = 0x1234, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
           ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = name("www.diff.test") + struct.pack("!HH", 1, 1)
A_RR = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([192, 0, 2, 1])


def opt(payload: int = 1232, version: int = 0, options: bytes = b"",
        owner: bytes = b"\x00") -> bytes:
    return owner + struct.pack("!HHBBHH", 41, payload, 0, version, 0, len(options)) + options


def ecs(family: int, source: int, scope: int, address: bytes) -> bytes:
    return struct.pack("!HHHBB", 8, 4 + len(address), family, source, scope) + address


def edns_query(options: bytes = b"", **kw: int) -> bytes:
    return header(ar=1) + QUESTION + opt(options=options, **kw)


def valid_query(qid: int = PROBE_ID) -> bytes:
    return header(qid=qid) + QUESTION


# -- what a reply looks like ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """What must come back: None for silence; else the rcode (extended included), whether
    the question is echoed and whether an OPT (version 0) is present."""

    rcode: int | None
    question: bool = True
    opt: bool = False

    def __str__(self) -> str:
        if self.rcode is None:
            return "silence"
        text = dns.rcode.to_text(dns.rcode.Rcode(self.rcode))
        return f"{text}{' +question' if self.question else ''}{' +OPT' if self.opt else ''}"


SILENCE = Expect(None)


def observe(packet: bytes, reply: bytes | None) -> Expect:
    """Reduce a reply to an Expect, checking the header invariants on the way."""
    if reply is None:
        return SILENCE
    assert len(reply) >= 12, reply
    assert reply[:2] == packet[:2], "reply must carry the query's ID"
    assert reply[2] & 0x80, "QR must be set"
    assert (reply[2] >> 3) & 0xF == (packet[2] >> 3) & 0xF, "opcode must be copied"
    qd, an, ns, ar = struct.unpack_from("!HHHH", reply, 4)
    qlen = question_length(packet)
    echoed = qd == 1 and bool(qlen) and reply[12:12 + qlen] == packet[12:12 + qlen]
    try:
        msg = dns.message.from_wire(reply)
    except dns.exception.DNSException:
        msg = None  # e.g. an UPDATE reply, or an option dnspython rejects
    if msg is not None:
        if msg.edns >= 0:
            assert msg.edns == 0, "replies carry EDNS version 0"
        return Expect(int(msg.rcode()), echoed, msg.edns >= 0)
    rcode = reply[3] & 0xF
    has_opt = False
    i = 12
    for _ in range(qd):
        i = _skip_name(reply, i) + 4
    for n in range(an + ns + ar):
        i = _skip_name(reply, i)
        rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", reply, i)
        if rtype == 41 and n >= an + ns:
            has_opt = True
            rcode |= (ttl >> 24) << 4
        i += 10 + rdlen
    return Expect(rcode, echoed, has_opt)


def _skip_name(wire: bytes, i: int) -> int:
    while wire[i] and wire[i] < 0xC0:
        i += wire[i] + 1
    return i + (2 if wire[i] else 1)


def question_length(packet: bytes) -> int:
    """Length of the packet's one uncompressed question, 0 if it has none such."""
    if packet[4:6] != b"\x00\x01":
        return 0
    i = 12
    while i < len(packet) and 0 < packet[i] < 64:
        i += packet[i] + 1
    if i >= len(packet) or packet[i] or i + 5 > len(packet) or i - 12 > 254:
        return 0
    return i + 5 - 12


# -- the corpus ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One message, what shadowdns must do with it, and Knot's behaviour if it differs."""

    id: str
    packet: bytes
    expect: Expect
    knot: Expect | None = None  # None: Knot does the same
    why: str = ""


_DROP_WHY = (
    "Knot drops a message whose question it cannot parse; we answer FORMERR without a "
    "question, as RFC 1035 §4.1.1 defines it: 'Format error - The name server was unable to "
    "interpret the query.' The reply is 12 bytes, smaller than the query, so it amplifies "
    "nothing."
)
_ECS_WHY = (
    "RFC 7871 §6: 'A server receiving an ECS option that uses either too few or too many "
    "ADDRESS octets, or that has non-zero ADDRESS bits set beyond SOURCE PREFIX-LENGTH, "
    "SHOULD return FORMERR to reject the packet', and SCOPE PREFIX-LENGTH 'In queries, it "
    "MUST be set to 0.' Knot 3.2 ignores these errors and answers (echoing the option)."
)
_FORMERR_Q = Expect(FORMERR)
_FORMERR_BARE = Expect(FORMERR, question=False)
_FORMERR_OPT = Expect(FORMERR, opt=True)
_ANSWER = Expect(NOERROR)
_ANSWER_OPT = Expect(NOERROR, opt=True)

CASES: list[Case] = [
    Case("empty", b"", SILENCE),
    Case("5 bytes", header()[:5], SILENCE),
    Case("11 bytes", header()[:11], SILENCE),
    Case("QR set (a response)", header(flags=0x8100) + QUESTION, SILENCE),
    Case("QR set, header only", header(flags=0x8000, qd=0), SILENCE),
    Case("QDCOUNT 0, header only", header(qd=0), _FORMERR_BARE),
    Case("QDCOUNT 0 with a question", header(qd=0) + QUESTION, _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("QDCOUNT 2", header(qd=2) + QUESTION + QUESTION, _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("QDCOUNT 2, one question", header(qd=2) + QUESTION, _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("label of 64 octets", header() + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",
         _FORMERR_BARE, knot=SILENCE, why=_DROP_WHY),
    Case("label type 0x80", header() + b"\x80abc\x00\x00\x01\x00\x01", _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("name over 255 octets",
         header() + (b"\x3f" + b"a" * 63) * 4 + b"\x03abc\x00\x00\x01\x00\x01",
         _FORMERR_BARE, knot=SILENCE, why=_DROP_WHY),
    Case("compression loop in the question", header() + b"\xc0\x0c\x00\x01\x00\x01",
         _FORMERR_BARE, knot=SILENCE, why=_DROP_WHY),
    Case("forward pointer in the question",
         header() + b"\x03www\xc0\x14\x00\x01\x00\x01" + name("diff.test"), _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("question without type and class", header() + name("www.diff.test") + b"\x00",
         _FORMERR_BARE, knot=SILENCE, why=_DROP_WHY),
    Case("name without its root label", header() + b"\x03www\x04diff", _FORMERR_BARE,
         knot=SILENCE, why=_DROP_WHY),
    Case("ANCOUNT 1, no record", header(an=1) + QUESTION, _FORMERR_Q),
    Case("ANCOUNT 1 with a record", header(an=1) + QUESTION + A_RR, _FORMERR_Q,
         knot=_ANSWER,
         why="A QUERY carries only a question (RFC 1035 §4.1.1, §7.1: the answer section "
             "is for the response); we reject such a query as malformed, Knot ignores the "
             "record."),
    Case("NSCOUNT 1 with a record", header(ns=1) + QUESTION + A_RR, _FORMERR_Q,
         knot=_ANSWER,
         why="As for ANCOUNT (RFC 1035 §4.1.1): we reject authority records in a QUERY, "
             "Knot ignores them."),
    Case("ARCOUNT 2, one OPT", header(ar=2) + QUESTION + opt(), _FORMERR_Q),
    Case("ARCOUNT 1, no record", header(ar=1) + QUESTION, _FORMERR_Q),
    Case("two OPT records", header(ar=2) + QUESTION + opt() + opt(), _FORMERR_Q),
    Case("OPT not at the root", edns_query(owner=name("www.diff.test")), _FORMERR_Q,
         knot=_ANSWER_OPT,
         why="RFC 6891 §6.1.2: the OPT's NAME 'MUST be 0 (root domain)'; Knot accepts any "
             "owner, we reject the message."),
    Case("option overruns the OPT", edns_query(struct.pack("!HH", 65001, 30) + b"xyz"),
         _FORMERR_Q),
    Case("EDNS version 1", edns_query(version=1), Expect(BADVERS, opt=True)),
    Case("EDNS version 1 with NSID", edns_query(struct.pack("!HH", 3, 0), version=1),
         Expect(BADVERS, opt=True)),
    Case("unknown EDNS option", edns_query(struct.pack("!HH", 65001, 3) + b"xyz"),
         _ANSWER_OPT),
    Case("OPT payload 0", edns_query(payload=0), _ANSWER_OPT),
    Case("ECS valid", edns_query(ecs(1, 24, 0, b"\xc0\x00\x02")), _ANSWER_OPT),
    Case("ECS valid IPv6", edns_query(ecs(2, 56, 0, bytes(7))), _ANSWER_OPT),
    Case("ECS family 3", edns_query(ecs(3, 24, 0, b"\xc0\x00\x02")), _FORMERR_OPT),
    Case("ECS source prefix 33 for IPv4", edns_query(ecs(1, 33, 0, b"\xc0\x00\x02\x01\x01")),
         _FORMERR_OPT),
    Case("ECS non-zero scope in a query", edns_query(ecs(1, 24, 24, b"\xc0\x00\x02")),
         _FORMERR_OPT, knot=_ANSWER_OPT, why=_ECS_WHY),
    Case("ECS address longer than the prefix", edns_query(ecs(1, 16, 0, b"\xc0\x00\x02")),
         _FORMERR_OPT, knot=_ANSWER_OPT, why=_ECS_WHY),
    Case("ECS address shorter than the prefix", edns_query(ecs(1, 24, 0, b"\xc0\x00")),
         _FORMERR_OPT),
    Case("ECS bits set past the prefix", edns_query(ecs(1, 23, 0, b"\xc0\x00\x03")),
         _FORMERR_OPT, knot=_ANSWER_OPT, why=_ECS_WHY),
    Case("ECS option of 2 octets", edns_query(struct.pack("!HH", 8, 2) + b"\x00\x01"),
         _FORMERR_OPT),
    Case("garbage after the message", header() + QUESTION + b"garbage", _FORMERR_Q),
    Case("garbage after the OPT", edns_query() + b"\x00", _FORMERR_Q),
    Case("opcode 3 (unassigned)", header(flags=0x1900) + QUESTION, Expect(NOTIMP)),
    Case("opcode 15", header(flags=0x7900) + QUESTION, Expect(NOTIMP)),
    Case("opcode 3, header only", header(flags=0x1800, qd=0), Expect(NOTIMP, question=False)),
    Case("opcode NOTIFY", header(flags=0x2000) + QUESTION, Expect(NOTIMP),
         knot=Expect(NOTAUTH),
         why="We do not take NOTIFY (we are never a secondary): NOTIMP, 'The name server "
             "does not support the requested kind of query' (RFC 1035 §4.1.1); Knot "
             "supports it and refuses an unlisted sender with NOTAUTH."),
    Case("opcode UPDATE", header(flags=0x2800) + QUESTION, Expect(NOTIMP),
         knot=Expect(FORMERR),
         why="We do not implement UPDATE (RFC 2136): NOTIMP; Knot does, and rejects a zone "
             "section whose type is not SOA with FORMERR (RFC 2136 §3.1.1)."),
    Case("Z bit set", header(flags=0x0140) + QUESTION, _ANSWER),
    Case("AA, TC and RA set in a query", header(flags=0x0780) + QUESTION, _ANSWER),
    Case("QCLASS 0", header() + name("www.diff.test") + b"\x00\x01\x00\x00", Expect(REFUSED)),
    Case("QCLASS NONE", header() + name("www.diff.test") + b"\x00\x01\x00\xfe",
         Expect(REFUSED)),
]

TRANSPORTS = ("udp", "tcp")
PARAMS = [pytest.param(case, tr, id=f"{tr}-{case.id}") for case in CASES for tr in TRANSPORTS]


# -- exchanges -----------------------------------------------------------------------------


def _is_probe_reply(data: bytes | None) -> bool:
    return data is not None and data[:2] == struct.pack("!H", PROBE_ID)


def udp_probe(addr: Address, packet: bytes) -> bytes | None:
    """Send the packet then a valid query; return the reply to the packet, None if silent.

    The server reads one socket in order, so a reply to the packet comes before the reply
    to the valid query: no sleeping is needed to prove silence. (No packet of the corpus
    uses the valid query's ID.)
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect(addr)
        sock.send(packet)
        sock.send(valid_query())
        reply: bytes | None = None
        while True:
            data = sock.recv(65535)
            if _is_probe_reply(data):
                return reply
            reply = data if reply is None else reply


def tcp_probe(addr: Address, packet: bytes) -> bytes | None:
    """Send the packet, then a valid query, on one connection; the packet's reply or None.

    None means the server sent nothing for the packet: it closed the connection or went
    straight on to answer the valid query.
    """
    with socket.create_connection(addr, timeout=3) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        query = valid_query()
        try:
            sock.sendall(struct.pack("!H", len(query)) + query)
            first = tcp_read_message(sock)
        except OSError:
            return None
        return None if first is None or _is_probe_reply(first) else first


def assert_alive(server: ServerProcess) -> None:
    """The process runs and answers a valid query correctly over UDP and TCP."""
    assert server.proc is not None and server.proc.poll() is None, "server process died"
    for tcp in (False, True):
        reply = _exchange_valid((server.host, server.port), tcp)
        assert _is_probe_reply(reply)
        assert reply[3] & 0xF == NOERROR and struct.unpack_from("!H", reply, 6)[0] == 2


def _exchange_valid(addr: Address, tcp: bool) -> bytes:
    query = valid_query()
    if tcp:
        with socket.create_connection(addr, timeout=3) as sock:
            sock.sendall(struct.pack("!H", len(query)) + query)
            reply = tcp_read_message(sock)
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(query, addr)
            reply = sock.recv(65535)
    assert reply is not None
    return reply


def probe(addr: Address, packet: bytes, transport: str) -> bytes | None:
    return (tcp_probe if transport == "tcp" else udp_probe)(addr, packet)


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = serve(ZONES_DIR, "--state", ":memory:")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def knot_server() -> Iterator[KnotProcess]:
    if knotd_path() is None:
        pytest.skip(SKIP_REASON)
    proc = KnotProcess({o: ZONES_DIR / f for o, f in ZONE_FILES.items()}).start()
    try:
        yield proc
    finally:
        proc.stop()


# -- the corpus, against shadowdns and Knot ------------------------------------------------


@pytest.mark.parametrize(("case", "transport"), PARAMS)
def test_malformed_message(server: ServerProcess, case: Case, transport: str) -> None:
    """shadowdns answers the message as `case.expect` says (or stays silent), and still
    answers a valid query afterwards."""
    reply = probe((server.host, server.port), case.packet, transport)
    assert observe(case.packet, reply) == case.expect, (
        f"{case.id} over {transport}: got {observe(case.packet, reply)}, want {case.expect}"
    )
    assert_alive(server)


@pytest.mark.knot
@pytest.mark.parametrize(("case", "transport"), PARAMS)
def test_knot_behaves_as_documented(knot_server: KnotProcess, case: Case,
                                    transport: str) -> None:
    """Knot does what we do, or exactly what the case documents as its difference."""
    reply = probe((knot_server.host, knot_server.port), case.packet, transport)
    want = case.knot if case.knot is not None else case.expect
    got = observe(case.packet, reply)
    assert got == want, f"{case.id} over {transport}: Knot gave {got}, documented {want}"


def test_documented_differences_give_reasons() -> None:
    """Every case where Knot differs says why, citing the RFC."""
    for case in CASES:
        if case.knot is not None:
            assert "RFC" in case.why, case.id


# -- TCP framing and limits ----------------------------------------------------------------


def test_tcp_pipelined_queries_answered_in_order(server: ServerProcess) -> None:
    """Several queries written at once on one connection are all answered, in order
    (RFC 7766 §6.2.1.1 allows pipelining; this server answers in arrival order)."""
    ids = list(range(100, 120))
    blob = b"".join(struct.pack("!H", len(q)) + q for q in (valid_query(i) for i in ids))
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        sock.sendall(blob)
        got = []
        for _ in ids:
            reply = tcp_read_message(sock)
            assert reply is not None
            got.append(struct.unpack_from("!H", reply)[0])
    assert got == ids


def test_tcp_message_split_across_segments(server: ServerProcess) -> None:
    """A message that arrives a few bytes at a time (length prefix split too) is answered."""
    query = valid_query()
    framed = struct.pack("!H", len(query)) + query
    with socket.create_connection((server.host, server.port), timeout=3) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(framed), 3):
            sock.sendall(framed[start:start + 3])
            time.sleep(0.01)
        reply = tcp_read_message(sock)
    assert reply is not None and reply[:2] == query[:2] and reply[3] & 0xF == NOERROR


@pytest.fixture(scope="module")
def limited_server() -> Iterator[ServerProcess]:
    proc = serve(ZONES_DIR, "--state", ":memory:", "--tcp-idle-timeout", "1",
                 "--tcp-max-connections", "3")
    try:
        yield proc
    finally:
        proc.stop()


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_tcp_idle_connection_is_closed(limited_server: ServerProcess) -> None:
    """A connection with no traffic is closed after --tcp-idle-timeout (1 s here), and one
    kept busy is not closed in the meantime."""
    addr = (limited_server.host, limited_server.port)
    with socket.create_connection(addr, timeout=3) as idle, \
            socket.create_connection(addr, timeout=3) as busy:
        started = time.monotonic()
        for _ in range(3):
            time.sleep(0.4)
            query = valid_query()
            busy.sendall(struct.pack("!H", len(query)) + query)
            assert tcp_read_message(busy) is not None
        # The busy one got its answers at 0.4, 0.8 and 1.2 s: its timer was re-armed.
        assert _closed_by_server(idle, 2.0)
        assert 0.8 <= time.monotonic() - started <= 3.5


def test_tcp_connection_cap(limited_server: ServerProcess) -> None:
    """Beyond --tcp-max-connections (3 here) a new connection is dropped at once, and a slot
    freed by a closed connection is usable again."""
    addr = (limited_server.host, limited_server.port)
    held = [socket.create_connection(addr, timeout=3) for _ in range(3)]
    try:
        for sock in held:  # make sure the server has accepted and counted each one
            query = valid_query()
            sock.sendall(struct.pack("!H", len(query)) + query)
            assert tcp_read_message(sock) is not None
        extra = socket.create_connection(addr, timeout=3)
        with extra:
            query = valid_query()
            try:
                extra.sendall(struct.pack("!H", len(query)) + query)
                over = recv_exact(extra, 2)
            except OSError:
                over = None
            assert over is None, "a connection over the cap must not be served"
        held.pop().close()
        deadline = time.monotonic() + 3
        while True:
            try:
                reply = _exchange_valid(addr, tcp=True)
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert reply[3] & 0xF == NOERROR
    finally:
        for sock in held:
            sock.close()
