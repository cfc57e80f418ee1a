"""Signing answers: keys made once and kept private, signatures renewed at half their
validity by dropping only the signed table entries, denial records per RFC 9824."""

from __future__ import annotations

import dataclasses
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.edns
import dns.message
import dns.name
import dns.rdatatype
import dns.rdtypes.util
import dns.rrset
import pytest

from shadowdns.errors import ConfigError
from shadowdns.resolver.engine import QueryEngine, Regional
from shadowdns.resolver.prewarm import Prewarm
from shadowdns.resolver.render import SHAPE_DO, SHAPE_EDNS, SHAPE_RD
from shadowdns.resolver.signing import NXNAME, REFRESH_AFTER, VALIDITY, Signer, type_bitmap
from shadowdns.resolver.snapshot import build_snapshot, load_config
from shadowdns.zones.keys import KeyPolicy, Schedule, load_key

GEO = Path(__file__).resolve().parents[2] / "data" / "zones" / "geo"
ORIGIN = dns.name.from_text("geo.test.")
PLAIN = SHAPE_RD | SHAPE_EDNS  # the shape of make_query(use_edns=0) without DO


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = load_key(tmp_path / "keys", ORIGIN)
    again = load_key(tmp_path / "keys", ORIGIN)
    assert first is not None and again is not None
    assert first.dnskey == again.dnskey, "an existing key is read, never replaced"
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o700
    assert load_key(tmp_path / "none", ORIGIN, create=False) is None


def test_a_broken_key_file_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "geo.test.csk.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match=r"geo\.test\.csk\.pem"):
        load_key(tmp_path, ORIGIN)


def _engine(tmp_path: Path, clock: FakeClock) -> QueryEngine:
    zones = tmp_path / "zones"
    shutil.copytree(GEO, zones)
    config = load_config(zones, keys_dir=tmp_path / "keys")
    assert config.keys is not None
    snapshot = dataclasses.replace(build_snapshot(config), signer=Signer(config.keys, clock))
    return QueryEngine(snapshot)


def _ask(engine: QueryEngine, name: str, do: bool) -> dns.message.Message:
    query = dns.message.make_query(name, "A", use_edns=0, want_dnssec=do)
    reply = engine.respond(query.to_wire(), ("127.0.0.1", 5353))
    assert reply is not None
    return dns.message.from_wire(reply)


def _inception(msg: dns.message.Message) -> int:
    sigs = [rr for rr in msg.answer if rr.rdtype == dns.rdatatype.RRSIG]
    return int(sigs[0][0].inception)


def test_signatures_are_renewed_at_half_validity_without_dropping_unsigned_answers(
    tmp_path: Path,
) -> None:
    clock = FakeClock(1_800_000_000.0)
    engine = _engine(tmp_path, clock)
    plain = _ask(engine, "app.geo.test", do=False)
    signed = _ask(engine, "app.geo.test", do=True)
    assert not any(rr.rdtype == dns.rdatatype.RRSIG for rr in plain.answer)
    first = _inception(signed)
    key = b"\x03app\x03geo\x04test\x00\x00\x01\x00\x01"
    unsigned_entry = engine.table.compact[key[:-4]]  # the DI's own unsigned answers
    assert key in engine.table.tables[PLAIN | SHAPE_DO]

    clock.now += REFRESH_AFTER - 10
    assert not engine.refresh_signatures(), "not yet half spent"
    clock.now += 20
    assert engine.refresh_signatures()
    assert engine.table.compact[key[:-4]] is unsigned_entry, "unsigned entries stay"
    assert key not in engine.table.tables[PLAIN | SHAPE_DO]
    renewed = _ask(engine, "app.geo.test", do=True)
    assert _inception(renewed) == first + REFRESH_AFTER + 10
    sig = next(rr for rr in renewed.answer if rr.rdtype == dns.rdatatype.RRSIG)[0]
    assert sig.expiration - sig.inception == VALIDITY + 3600


def test_signed_variants_are_compiled_once_and_served_from_the_table(tmp_path: Path) -> None:
    """The second DO query is a table hit with the same bytes (signing is not per query)."""
    engine = _engine(tmp_path, FakeClock(1_800_000_000.0))
    query = dns.message.make_query("www.geo.test", "A", use_edns=0, want_dnssec=True)
    first = engine.respond(query.to_wire())
    hits = engine.stats_hits
    second = engine.respond(query.to_wire())
    assert engine.stats_hits == hits + 1 and first == second


@pytest.mark.parametrize(("name", "rdtype", "bitmap"), [
    ("nope.geo.test", "A", "RRSIG NSEC NXNAME"),
    ("www.geo.test", "TXT", "A RRSIG NSEC"),
    ("geo.test", "TXT", "NS SOA RRSIG NSEC DNSKEY CDS CDNSKEY"),
])
def test_denial_nsec_lists_what_the_name_has(tmp_path: Path, name: str, rdtype: str,
                                             bitmap: str) -> None:
    engine = _engine(tmp_path, FakeClock(1_800_000_000.0))
    query = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=True)
    reply = engine.respond(query.to_wire())
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.rcode() == 0 and not msg.answer
    nsec = [r for rr in msg.authority if rr.rdtype == dns.rdatatype.NSEC for r in rr]
    owner = dns.name.from_text(name)
    assert [r.to_text() for r in nsec] == [f"\\000.{owner} {bitmap}"]


def _v4_only_engine(tmp_path: Path) -> QueryEngine:
    """The geo zone plus `v4`, a DI whose one primary has no IPv6 address (its AAAA is a
    NODATA in every region)."""
    zones = tmp_path / "zones"
    shutil.copytree(GEO, zones)
    policy = zones / "geo.test.policy.yaml"
    text = policy.read_text()
    text = text.replace("resources:\n", "resources:\n  p-v4: {address: 192.0.2.99, "
                                        "location: eu, role: primary}\n", 1)
    policy.write_text(text.replace("dis:\n", "dis:\n  v4:\n    primaries: [p-v4]\n", 1))
    with (zones / "geo.test.zone").open("a") as zone:  # static addresses: two, and IPv6
        zone.write("pair A 192.0.2.82\npair A 192.0.2.81\nsix AAAA 2001:db8::6\n")
    config = load_config(zones, keys_dir=tmp_path / "keys")
    return QueryEngine(build_snapshot(config))


def _sans_signatures(msg: dns.message.Message) -> list[tuple[str, int, int, object]]:
    """Every record of a message, an RRSIG without its (randomised) ECDSA signature."""
    out: list[tuple[str, int, int, object]] = []
    for section in (msg.answer, msg.authority, msg.additional):
        for rrset in section:
            for rdata in rrset:
                value: object = rdata.to_text()
                if rrset.rdtype == dns.rdatatype.RRSIG:
                    value = (rdata.type_covered, rdata.algorithm, rdata.labels,
                             rdata.original_ttl, rdata.expiration, rdata.inception,
                             rdata.key_tag, rdata.signer)
                out.append((rrset.name.to_text(), rrset.ttl, rrset.rdtype, value))
    return out


def _validate_all(msg: dns.message.Message, dnskey: dns.rrset.RRset) -> int:
    """Check every RRSIG of the message against the zone's DNSKEY; how many there were."""
    checked = 0
    for section in (msg.answer, msg.authority):
        covered = {(rr.name, rr.rdtype): rr for rr in section
                   if rr.rdtype != dns.rdatatype.RRSIG}
        for rr in section:
            if rr.rdtype == dns.rdatatype.RRSIG:
                dns.dnssec.validate(covered[(rr.name, rr[0].type_covered)], rr,
                                    {dnskey.name: dnskey})
                checked += 1
    return checked


@pytest.mark.parametrize(("name", "rdtype", "ecs", "signatures"), [
    ("app.geo.test", "A", None, 1),
    ("app.geo.test", "A", "203.0.113.0", 1),     # jp: the standby's region
    ("APP.geo.test", "AAAA", "81.2.69.0", 1),    # 0x20 case in the question
    ("v4.geo.test", "A", None, 1),
    ("v4.geo.test", "AAAA", None, 2),            # a DI's NODATA: SOA and NSEC signed
    ("nope.geo.test", "A", None, 2),             # missing: NOERROR, NSEC with NXNAME
    ("x.nope.geo.test", "TXT", None, 2),
    ("www.geo.test", "TXT", None, 2),
    ("geo.test", "TXT", None, 2),                # NODATA at the apex
    ("alias.geo.test", "A", None, 2),            # CNAME to a DI: the dnspython path
    ("www.geo.test", "A", None, 1),              # static addresses: signed by hand too
    ("WwW.geo.test", "A", None, 1),
    ("pair.geo.test", "A", None, 1),
    ("six.geo.test", "AAAA", None, 1),
])
def test_hand_signed_answers_match_the_dnspython_path_and_validate(
    tmp_path: Path, name: str, rdtype: str, ecs: str | None, signatures: int,
) -> None:
    """The table's signed bytes (made by hand for DIs and denials) say what the slow
    path, which signs through dnspython, says, and every RRSIG in them validates."""
    engine = _v4_only_engine(tmp_path)
    origin = ORIGIN
    signer = engine.snapshot.signer
    assert signer is not None
    dnskey = dns.rrset.from_rdata(origin, 3600, signer.keys[origin].dnskey)
    options = [dns.edns.ECSOption(ecs, 24)] if ecs else []
    wire = dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=True,
                                  options=options).to_wire()
    for _ in range(2):  # compiled, then a table hit
        fast = engine.respond(wire, ("127.0.0.1", 5353))
        slow = engine._slow(wire, False, ("127.0.0.1", 5353))
        assert fast is not None and slow is not None
        got, want = dns.message.from_wire(fast), dns.message.from_wire(slow)
        assert (got.rcode(), got.flags, got.ednsflags) == (want.rcode(), want.flags,
                                                          want.ednsflags)
        assert _sans_signatures(got) == _sans_signatures(want)
        assert _validate_all(got, dnskey) == signatures


def test_a_tampered_hand_signed_answer_does_not_validate(tmp_path: Path) -> None:
    """The check above can fail: one flipped address octet breaks the signature."""
    engine = _v4_only_engine(tmp_path)
    signer = engine.snapshot.signer
    assert signer is not None
    dnskey = dns.rrset.from_rdata(ORIGIN, 3600, signer.keys[ORIGIN].dnskey)
    wire = dns.message.make_query("v4.geo.test", "A", use_edns=0, want_dnssec=True).to_wire()
    reply = engine.respond(wire)
    assert reply is not None
    address = bytes([192, 0, 2, 99])
    assert reply.count(address) == 1
    tampered = reply.replace(address, bytes([192, 0, 2, 98]))
    with pytest.raises(dns.dnssec.ValidationFailure):
        _validate_all(dns.message.from_wire(tampered), dnskey)


def test_prewarm_signs_the_di_variants_before_the_first_do_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold signed server has each DI's signed variants in the table before any DO
    query arrives: the first one derives its shape, it signs nothing."""
    engine = _v4_only_engine(tmp_path)
    prewarm = Prewarm(engine)
    prewarm.restart()
    assert prewarm.fill(30.0)
    key = b"\x02v4\x03geo\x04test\x00\x00\x1c\x00\x01"
    assert key in engine.table.signed
    signs = 0
    real = Signer.rrsig_rdata

    def counting(*args: Any) -> bytes:
        nonlocal signs
        signs += 1
        return real(*args)

    monkeypatch.setattr(Signer, "rrsig_rdata", counting)
    wire = dns.message.make_query("v4.geo.test", "AAAA", use_edns=0,
                                  want_dnssec=True).to_wire()
    reply = engine.respond(wire)
    assert reply is not None and signs == 0
    assert any(rr.rdtype == dns.rdatatype.NSEC
               for rr in dns.message.from_wire(reply).authority)


def test_each_distinct_rrset_is_signed_once_and_shared_by_the_regions_that_carry_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold prewarm signs every distinct RRset (owner, type, TTL, RDATA set) once: the
    regions of a DI that get the same addresses share one RRSIG, byte for byte, and
    nothing is signed twice; what it signed validates."""
    engine = _v4_only_engine(tmp_path)
    signer = engine.snapshot.signer
    assert signer is not None
    dnskey = dns.rrset.from_rdata(ORIGIN, 3600, signer.keys[ORIGIN].dnskey)
    calls: Counter[tuple[bytes, int, int, frozenset[bytes]]] = Counter()
    real = Signer.rrsig_rdata

    def counting(self: Signer, key: Any, owner: bytes, rdtype: int, ttl: int,
                 rdatas: Any) -> bytes:
        rdatas = list(rdatas)
        calls[(owner, rdtype, ttl, frozenset(rdatas))] += 1
        return real(self, key, owner, rdtype, ttl, rdatas)

    monkeypatch.setattr(Signer, "rrsig_rdata", counting)
    prewarm = Prewarm(engine)
    prewarm.restart()
    assert prewarm.fill(30.0)
    assert calls and max(calls.values()) == 1, "an RRset was signed twice"

    a = b"\x00\x01\x00\x01"
    for name, shared in ((b"\x04solo\x03geo\x04test\x00", True),
                         (b"\x03app\x03geo\x04test\x00", False)):
        entry = engine.table.signed[name + a]
        assert isinstance(entry, Regional)
        bodies = [variant.body for variant in entry.variants]
        distinct = set(bodies)
        assert len(distinct) < len(bodies), "some regions share an answer"
        assert entry.uniform == shared
        # one signing call per distinct answer of the DI, not one per region
        assert sum(1 for c in calls if c[0] == name and c[1] == dns.rdatatype.A) == len(
            distinct)
        for variant in entry.variants:
            msg = dns.message.from_wire(b"\x00\x00" + variant.hdr + name + a + variant.body)
            assert _validate_all(msg, dnskey) == 1
    # a static name's signed answer, made by hand, is the slow path's to the byte
    wire = dns.message.make_query("pair.geo.test", "A", use_edns=0,
                                  want_dnssec=True).to_wire()
    assert engine.respond(wire) == engine._slow(wire, False)


@pytest.mark.parametrize("types", [
    [dns.rdatatype.A],
    [NXNAME],
    [dns.rdatatype.NS, dns.rdatatype.SOA, dns.rdatatype.DNSKEY, dns.rdatatype.CDNSKEY],
    [dns.rdatatype.CAA, dns.rdatatype.A, 32768, 65534],  # windows 1, 128, 255
])
def test_type_bitmap_is_the_one_dnspython_encodes(types: list[int]) -> None:
    encoded = dns.rdtypes.util.Bitmap.from_rdtypes(
        [dns.rdatatype.RdataType.make(t) for t in types])
    expected = b"".join(bytes([window, len(bits)]) + bits for window, bits in encoded.windows)
    assert type_bitmap(types) == expected


# ZSK schedule: start 1000, lifetime 100, propagation 10, retention 30.
@pytest.mark.parametrize(("now", "published", "signer"), [
    (1000, [1], None),      # ZSK 1 published, the KSK signs until it has propagated
    (1010, [1], 1),
    (1099, [1], 1),
    (1100, [1, 2], 1),      # ZSK 2 pre-published: ZSK 1 still signs
    (1110, [1, 2], 2),      # ZSK 2 signs, ZSK 1 stays for its signatures in caches
    (1139, [1, 2], 2),
    (1140, [2], 2),         # ZSK 1 withdrawn: retention after it stopped signing
    (1200, [2, 3], 2),
])
def test_zsk_schedule_prepublishes_and_retains(now: float, published: list[int],
                                               signer: int | None) -> None:
    schedule = Schedule(1000.0, 100.0, 10.0, 30.0)
    assert schedule.published(now) == published
    assert schedule.signer(now) == signer
    assert schedule.next_change(now) > now


@pytest.mark.parametrize("now", [999.0, 700.0, -1e9])
def test_zsk_schedule_before_its_start_changes_at_the_start(now: float) -> None:
    schedule = Schedule(1000.0, 100.0, 10.0, 30.0)
    assert schedule.published(now) == []
    assert schedule.signer(now) is None
    assert schedule.next_change(now) == 1000.0


def test_a_bad_key_policy_names_every_field(tmp_path: Path) -> None:
    (tmp_path / "key-policy.yaml").write_text("split: yes please\nzsk_lifetime: soon\n"
                                              "margin: 1h\nrolls: 3\n")
    with pytest.raises(ConfigError) as caught:
        KeyPolicy.load(tmp_path)
    text = str(caught.value)
    for field in ("split", "zsk_lifetime", "rolls"):
        assert field in text, field
    assert "key-policy.yaml" in text
