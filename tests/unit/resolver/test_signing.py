"""Signing answers: keys made once and kept private, signatures renewed at half their
validity by dropping only the signed table entries, denial records per RFC 9824."""

from __future__ import annotations

import dataclasses
import shutil
import stat
from pathlib import Path

import dns.dnssec
import dns.message
import dns.name
import dns.rdatatype
import pytest

from shadowdns.errors import ConfigError
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.render import SHAPE_DO, SHAPE_EDNS, SHAPE_RD
from shadowdns.resolver.signing import REFRESH_AFTER, VALIDITY, Signer
from shadowdns.resolver.snapshot import build_snapshot, load_config
from shadowdns.zones.keys import load_key

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
