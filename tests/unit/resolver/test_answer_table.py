"""The answer table: DIs routed alike share answer bytes yet each answer carries its own
name; a full table starts afresh and still answers right."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.name
import dns.rdatatype

from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.snapshot import build_snapshot, load_config

ZONE = """\
$ORIGIN t.example.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 60
@ NS ns1
ns1 A 192.0.2.53
alias CNAME a
"""
POLICY = """\
locations:
  eu: {lat: 52.37, lon: 4.9, continent: EU}
  na: {lat: 38.9, lon: -77.04, continent: NA}
regions:
  map: {EU: eu, NA: na}
  default: eu
resources:
  p-eu: {address: 192.0.2.10, location: eu, role: primary}
  p-na: {address: 198.51.100.10, address6: '2001:db8::10', location: na, role: primary}
dis:
  a: {primaries: [p-eu, p-na], ttl: 60}
  bbbbbbbb: {primaries: [p-eu, p-na], ttl: 60}
  c.deeper: {primaries: [p-eu, p-na], ttl: 60}
  d: {primaries: [p-na], ttl: 60}
"""
EU = dns.edns.ECSOption("193.0.0.0", 24)
NA = dns.edns.ECSOption("8.8.8.0", 24)


def engine(tmp_path: Path, max_cached: int = 1_000_000) -> QueryEngine:
    (tmp_path / "t.example.zone").write_text(ZONE)
    (tmp_path / "t.example.policy.yaml").write_text(POLICY)
    return QueryEngine(build_snapshot(load_config(tmp_path)), max_cached=max_cached)


def ask(eng: QueryEngine, name: str, ecs: dns.edns.ECSOption, qtype: str = "A"
        ) -> dns.message.Message:
    query = dns.message.make_query(name, qtype, use_edns=0, options=[ecs])
    wire = eng.respond(query.to_wire(), ("127.0.0.1", 5300))
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id
    return reply


def answer(reply: dns.message.Message) -> list[tuple[str, str, int, list[str]]]:
    return [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype), rr.ttl,
             sorted(r.to_text() for r in rr)) for rr in reply.answer]


def expected(name: str, region: str) -> list[tuple[str, str, int, list[str]]]:
    address = "192.0.2.10" if region == "eu" else "198.51.100.10"
    return [(name, "A", 60, [address])]


def test_dis_routed_alike_share_bytes_but_answer_with_their_own_names(tmp_path: Path) -> None:
    eng = engine(tmp_path)
    for _ in range(2):  # compiled, then from the table
        for name in ("a.t.example.", "bbbbbbbb.t.example.", "c.deeper.t.example.",
                     "BbBbBbBb.T.Example."):
            for ecs, region in ((EU, "eu"), (NA, "na")):
                reply = ask(eng, name, ecs)
                assert answer(reply) == expected(name, region), (name, region)
                assert reply.question[0].name.to_text() == name
    # the three DIs routed alike share their records and layout: one compact entry each
    # holding the same bytes
    alike = [eng.table.compact[dns.name.from_text(n).to_wire()]
             for n in ("a.t.example.", "bbbbbbbb.t.example.", "c.deeper.t.example.")]
    assert len({id(c.a_blob) for c in alike}) == 1
    assert len({id(c.a) for c in alike}) == 1
    # d is routed elsewhere, and AAAA without addresses is NODATA with the SOA
    assert answer(ask(eng, "d.t.example.", EU)) == expected("d.t.example.", "na")
    nodata = ask(eng, "a.t.example.", EU, "AAAA")
    assert nodata.answer == [] and nodata.authority[0].rdtype == dns.rdatatype.SOA
    assert nodata.authority[0].name == dns.name.from_text("t.example.")


def test_a_full_table_starts_afresh_and_answers_stay_right(tmp_path: Path) -> None:
    eng = engine(tmp_path, max_cached=3)
    names = ["a.t.example.", "bbbbbbbb.t.example.", "c.deeper.t.example.", "d.t.example."]
    tables = set()
    for _ in range(3):
        for name in names:
            reply = ask(eng, name, NA)
            assert answer(reply) == expected(name, "na")
            tables.add(id(eng.table))
            assert eng.table.size <= 3
    assert len(tables) > 1
    alias = ask(eng, "alias.t.example.", EU)
    assert [a[1] for a in answer(alias)] == ["CNAME", "A"]
    assert answer(alias)[1] == ("a.t.example.", "A", 60, ["192.0.2.10"])
