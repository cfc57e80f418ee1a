"""Property tests of the wire handling: no input takes the server down or draws a bad
reply, and the hand-written fast path answers byte for byte like the dnspython slow path.

1. Random bytes and mutated valid queries (bit flips, truncation, insertion, overwrites)
   go to a running `shadowdns serve` over UDP in batches; every reply must parse with
   dnspython and with dnslib and carry the ID of a message it answers; after each batch
   the process is alive and answers a valid query correctly.
2. In process, `QueryEngine.respond` (fast path, answer table) and `QueryEngine._slow`
   (dnspython parse, no table) get the same generated valid queries and must return
   identical bytes, for the static test zones and for the geo-routed demo zone.
"""

from __future__ import annotations

import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowdns.resolver.authority import ZoneSet
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.render import Identity
from shadowdns.resolver.signing import Signer
from shadowdns.resolver.snapshot import Snapshot, build_snapshot, load_config
from shadowdns.zones.keys import load_keys, publish
from shadowdns.zones.loader import load_zone_dir
from tests.serverproc import ServerProcess, serve

ZONES_DIR = Path(__file__).resolve().parent.parent / "data" / "zones" / "diff"
DEMO_DIR = Path(__file__).resolve().parents[2] / "src" / "shadowdns" / "data" / "demo"
PROBE_ID = 0xFFFF
BATCH = 25

NAMES = [
    "diff.test.", "www.diff.test.", "alias.diff.test.", "chain1.diff.test.", "nx.diff.test.",
    "foo.wild.diff.test.", "*.wild.diff.test.", "x.cw.diff.test.", "ent.diff.test.",
    "c.ent.diff.test.", "host.deleg.diff.test.", "deleg.diff.test.", "sub.diff.test.",
    "www.sub.diff.test.", "x.dn.diff.test.", "x.dnloop.diff.test.", "big.diff.test.",
    "bigmx.diff.test.", "bigdeleg.diff.test.", "loop1.diff.test.", "example.net.",
    "app.demo.shadowdns.test.", "shop.demo.shadowdns.test.", "demo.shadowdns.test.",
    "nx.demo.shadowdns.test.",
]
QTYPES = ["A", "AAAA", "NS", "SOA", "MX", "TXT", "SRV", "CNAME", "DS", "DNAME", "ANY",
          "HTTPS", "TYPE65280", "RRSIG", "PTR"]


def query_wire(name: str, qtype: str, qid: int = 0, *, payload: int | None = None,
               do: bool = False, nsid: bool = False, ecs: str | None = None,
               rd: bool = True, cd: bool = False) -> bytes:
    options: list[dns.edns.Option] = []
    if nsid:
        options.append(dns.edns.GenericOption(dns.edns.NSID, b""))
    if ecs is not None:
        address, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix), 0))
    msg = dns.message.make_query(
        name, dns.rdatatype.from_text(qtype), use_edns=0 if payload is not None else False,
        payload=payload or 0, want_dnssec=do, options=options,
    )
    msg.flags = (dns.flags.RD if rd else 0) | (dns.flags.CD if cd else 0)
    msg.id = qid
    return msg.to_wire()


# -- strategies ----------------------------------------------------------------------------


@st.composite
def valid_queries(draw: st.DrawFn, names: list[str] = NAMES) -> bytes:
    """A well-formed query: known or random name, 0x20 case, qtype and EDNS shape."""
    if draw(st.booleans()):
        name = draw(st.sampled_from(names))
    else:
        labels = draw(st.lists(st.from_regex(r"[a-z0-9*-]{1,12}", fullmatch=True),
                               min_size=0, max_size=3))
        suffix = draw(st.sampled_from(["diff.test.", "sub.diff.test.",
                                       "demo.shadowdns.test.", "example.org.", ""]))
        name = ".".join([*labels, suffix]) if labels else suffix or "."
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))
    edns = draw(st.booleans())
    ecs = draw(st.one_of(st.none(), st.sampled_from(
        ["192.0.2.0/24", "198.51.100.0/22", "0.0.0.0/0", "2001:db8::/48", "203.0.113.7/32"])))
    return query_wire(
        name, draw(st.sampled_from(QTYPES)), draw(st.integers(0, 0xFFFE)),
        payload=draw(st.sampled_from([0, 512, 1000, 1232, 4096])) if edns else None,
        do=edns and draw(st.booleans()), nsid=edns and draw(st.booleans()),
        ecs=ecs if edns else None, rd=draw(st.booleans()), cd=draw(st.booleans()),
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid query damaged by bit flips, truncation, insertion or overwriting."""
    data = bytearray(draw(valid_queries()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "overwrite"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at] = draw(st.integers(0, 255))
    return bytes(data)


packets = st.one_of(st.binary(max_size=600), mutated(), mutated(), valid_queries())


# -- against the running server ------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = serve(ZONES_DIR, "--state", ":memory:")
    try:
        yield proc
    finally:
        proc.stop()


def _utf8(label: bytes) -> bool:
    try:
        label.decode()
    except UnicodeDecodeError:
        return False
    return True


def _check_reply(reply: bytes, sent: dict[int, bytes]) -> None:
    qid = reply[0] << 8 | reply[1]
    assert qid in sent, f"reply with an ID no message carried: {reply[:32].hex()}"
    assert reply[2] & 0x80, "a reply must have QR set"
    wire = reply
    if (reply[2] >> 3) & 0xF == 5:
        # dnspython reads an UPDATE message's question as a zone section and insists on
        # type SOA; our NOTIMP echoes whatever was asked, so check the structure as QUERY.
        wire = reply[:2] + bytes([reply[2] & 0x87]) + reply[3:]
    try:
        ref = dns.message.from_wire(wire)
    except dns.exception.DNSException as exc:
        raise AssertionError(f"dnspython cannot parse {reply.hex()}: {exc!r}") from None
    if not all(_utf8(label) for q in ref.question for label in q.name.labels):
        # dnslib only decodes UTF-8 labels; DNS allows any octets ("any binary string
        # whatever can be used as the label", RFC 2181 §11), so its check ends here.
        return
    try:
        alt = dnslib.DNSRecord.parse(reply)
    except Exception as exc:  # dnslib raises several unrelated types
        raise AssertionError(f"dnslib cannot parse {reply.hex()}: {exc!r}") from None
    counts = struct.unpack_from("!HHHH", reply, 4)
    assert (alt.header.id, alt.header.rcode) == (ref.id, ref.rcode() & 0xF)
    assert (len(alt.questions), len(alt.rr), len(alt.auth), len(alt.ar)) == counts


@settings(max_examples=160, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(batch=st.lists(packets, min_size=BATCH, max_size=BATCH))
def test_garbage_never_breaks_the_server(server: ServerProcess, batch: list[bytes]) -> None:
    """No sequence of packets kills the server or draws a reply that does not parse (with
    dnspython and dnslib) or carries an ID no packet had; a valid query is then answered."""
    sent: dict[int, bytes] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(3)
        sock.connect((server.host, server.port))
        for index, packet in enumerate(batch):
            if len(packet) >= 2:  # give each message its own ID to match replies
                packet = struct.pack("!H", index + 1) + packet[2:]
                sent[index + 1] = packet
            sock.send(packet)
        probe = query_wire("www.diff.test.", "A", PROBE_ID)
        sock.send(probe)
        while True:  # replies come in order: everything before the probe's is the batch's
            reply = sock.recv(65535)
            if reply[:2] == probe[:2]:
                break
            _check_reply(reply, sent)
    assert server.proc is not None and server.proc.poll() is None, "server died"
    answer = dns.message.from_wire(reply)
    assert answer.rcode() == 0 and len(answer.answer) == 1 and len(answer.answer[0]) == 2


# -- fast path against slow path, in process -----------------------------------------------

_ENGINES: dict[str, QueryEngine] = {}


def engine(kind: str) -> QueryEngine:
    """One engine per kind for the whole session, so its answer table fills up as it would
    in a server (hits and misses both get compared)."""
    if kind not in _ENGINES:
        identity = Identity(nsid=b"fuzz", server_id="fuzz", version="fuzz")
        keys_dir = Path(tempfile.mkdtemp(prefix="fuzz-keys-"))
        if kind == "static":
            snapshot = Snapshot(zones=ZoneSet(load_zone_dir(ZONES_DIR)), identity=identity)
        elif kind == "static-signed":
            zones = load_zone_dir(ZONES_DIR)
            keys = load_keys(keys_dir, zones)
            snapshot = Snapshot(zones=ZoneSet({o: publish(z, keys[o]) for o, z in zones.items()}),
                                identity=identity, signer=Signer(keys))
        elif kind == "geo-signed":
            snapshot = build_snapshot(load_config(DEMO_DIR, identity=identity,
                                                  keys_dir=keys_dir))
        else:
            snapshot = build_snapshot(load_config(DEMO_DIR, identity=identity))
        _ENGINES[kind] = QueryEngine(snapshot)
    return _ENGINES[kind]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=valid_queries(),
       kind=st.sampled_from(["static", "geo", "static-signed", "geo-signed"]), tcp=st.booleans(),
       source=st.sampled_from(["127.0.0.1", "192.0.2.55", "203.0.113.9", "2001:db8::1"]))
def test_fast_path_matches_slow_path(wire: bytes, kind: str, tcp: bool, source: str) -> None:
    """For any valid query, the fast path (answer table) returns exactly the bytes the
    dnspython slow path returns, over UDP and TCP, from any source address; signed zones
    too (DO queries get the signed entries)."""
    eng = engine(kind)
    addr = (source, 5353)
    fast = eng.respond(wire, addr, tcp=tcp)
    slow = eng._slow(wire, tcp, addr)
    assert fast == slow, (
        f"query {wire.hex()}\nfast {fast.hex() if fast else None}\n"
        f"slow {slow.hex() if slow else None}"
    )


@pytest.mark.parametrize("names", [
    ("X.Dn.diff.test.", "x.dn.diff.test."),  # DNAME: the CNAME target repeats the qname
    ("A.X.dnloop.DIFF.test.", "a.x.dnloop.diff.test."),
    ("FOO.wild.diff.test.", "foo.WILD.diff.test."),  # wildcard: the owner is the qname
    ("X.CW.diff.test.", "x.cw.diff.test."),
])
def test_cached_answer_does_not_keep_the_first_askers_case(names: tuple[str, str]) -> None:
    """An answer cached for one spelling of a name (0x20) is right for every other
    spelling: the fast path's bytes equal the slow path's for each, asked in turn."""
    eng = QueryEngine(Snapshot(zones=ZoneSet(load_zone_dir(ZONES_DIR))))
    for name in names:
        query = query_wire(name, "A", 9, payload=1232)
        assert eng.respond(query) == eng._slow(query, False), name


@pytest.mark.parametrize("payload", [512, 600])
def test_fast_path_honours_configured_payload(payload: int) -> None:
    """With --edns-payload other than 1232, fast and slow path still agree: the fast path
    must not send a UDP reply larger than the server's own payload limit."""
    identity = Identity(nsid=b"fuzz", payload=payload)
    eng = QueryEngine(Snapshot(zones=ZoneSet(load_zone_dir(ZONES_DIR)), identity=identity))
    query = query_wire("mid.diff.test.", "A", 7, payload=4096)  # a ~700-byte answer
    assert eng.respond(query) == eng._slow(query, False)


@pytest.mark.parametrize(("name", "uniform"), [("shop.demo.shadowdns.test.", True),
                                               ("app.demo.shadowdns.test.", False)])
@pytest.mark.parametrize("subnet", ["192.0.2.0/24", "81.2.69.0/24", "175.16.199.0/24"])
def test_ecs_scope_is_zero_only_when_every_region_gets_the_answer(
        name: str, uniform: bool, subnet: str) -> None:
    """A DI answered alike in every region echoes ECS scope 0 (valid for any client); one
    whose answer depends on the region echoes the matched prefix. Both paths agree."""
    address, prefix = subnet.split("/")
    wire = dns.message.make_query(name, "A", use_edns=0, options=[
        dns.edns.ECSOption(address, int(prefix))]).to_wire()
    eng = engine("geo")
    fast = eng.respond(wire, ("127.0.0.1", 5353))
    slow = eng._slow(wire, False, ("127.0.0.1", 5353))
    assert fast is not None and fast == slow
    [option] = [o for o in dns.message.from_wire(fast).options
                if isinstance(o, dns.edns.ECSOption)]
    assert (option.scopelen == 0) == uniform
