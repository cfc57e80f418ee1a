"""The static view: DI names exist in their zone with their primaries' addresses."""

from __future__ import annotations

import dns.name
import dns.rdatatype
import dns.rrset

from shadowdns.zones.di_view import static_view
from shadowdns.zones.loader import zones_from_text
from shadowdns.zones.policy import DI, Location, Policy, Regions, Resource
from shadowdns.zones.zone import Zone

ORIGIN = dns.name.from_text("example.com.")
ZONE = """\
$ORIGIN example.com.
$TTL 300
@ SOA ns1 hostmaster 1 3600 600 86400 300
@ NS ns1
ns1 A 192.0.2.53
www TXT "kept"
www A 192.0.2.99
"""


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, ORIGIN)


def view() -> tuple[Zone, Policy]:
    zone = zones_from_text([("example.com.", ZONE)])[ORIGIN]
    resources = {
        "p4": Resource("p4", "eu", "primary", address="198.51.100.1"),
        "p6": Resource("p6", "eu", "primary", address="198.51.100.2", address6="2001:db8::2"),
    }
    dis = {n: DI(n, primaries) for n, primaries in (
        (name("www"), ("p4",)),
        (name("app.svc.deep"), ("p4", "p6")),
        (name("api"), ("p6",)),
    )}
    policy = Policy(ORIGIN, {"eu": Location("eu", 50.0, 8.0)}, Regions(default="eu"),
                    resources, dis)
    return static_view(zone, policy), policy


def rdata(rrset: dns.rrset.RRset) -> list[str]:
    return sorted(r.to_text() for r in rrset)


def test_a_di_answers_with_all_its_primaries() -> None:
    zone, _ = view()
    node = zone.nodes[name("app.svc.deep")]
    a = node[(dns.rdatatype.A, 0)]
    assert rdata(a) == ["198.51.100.1", "198.51.100.2"]
    assert a.name == name("app.svc.deep") and a.ttl == 30
    assert rdata(node[(dns.rdatatype.AAAA, 0)]) == ["2001:db8::2"]


def test_a_di_on_an_existing_name_keeps_its_other_data_and_replaces_the_address() -> None:
    zone, _ = view()
    node = zone.nodes[name("www")]
    assert rdata(node[(dns.rdatatype.TXT, 0)]) == ['"kept"']
    assert rdata(node[(dns.rdatatype.A, 0)]) == ["198.51.100.1"]
    assert (dns.rdatatype.AAAA, 0) not in node


def test_names_above_a_di_exist_as_empty_non_terminals() -> None:
    zone, _ = view()
    names = zone.names
    for text in ("svc.deep", "deep", "app.svc.deep", "api", "www", "ns1"):
        assert name(text) in names, text
    assert name("other") not in names
    assert name("svc.deep") not in zone.nodes
    assert zone.nodes.get(name("other")) is None


def test_iteration_and_length_agree() -> None:
    zone, _ = view()
    nodes = zone.nodes
    assert len(list(nodes)) == len(nodes) == len(set(nodes))
    assert set(nodes) == {name(t) for t in ("@", "ns1", "www", "app.svc.deep", "api")}
    names = zone.names
    assert len(list(names)) == len(names) == len(set(names))
    owners = sorted((rr.name.to_text(), rr.rdtype) for rr in zone.rrsets())
    assert ("api.example.com.", dns.rdatatype.AAAA) in owners
    assert ("www.example.com.", dns.rdatatype.TXT) in owners
    assert sum(1 for o in owners if o == ("www.example.com.", dns.rdatatype.A)) == 1
