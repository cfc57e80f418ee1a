"""`authority.negative_soa`: the SOA of negative answers, made once per loaded zone, and
no old version of an edited zone kept alive by its cache."""

from __future__ import annotations

import dns.name
import dns.rrset

from shadowdns.resolver.authority import negative_soa
from shadowdns.zones.zone import Zone

ORIGIN = dns.name.from_text("example.com.")


def version(serial: int) -> Zone:
    soa = dns.rrset.from_text(ORIGIN, 3600, "IN", "SOA",
                              f"ns1.example.com. host.example.com. {serial} 1 1 1 60")
    ns = dns.rrset.from_text(ORIGIN, 3600, "IN", "NS", "ns1.example.com.")
    return Zone.build(ORIGIN, [soa, ns])


def test_the_negative_soa_has_the_minimum_ttl_and_is_made_once() -> None:
    zone = version(1)
    first = negative_soa(zone)
    assert first.ttl == 60 and first[0].serial == 1
    assert negative_soa(zone) is first


def test_each_version_of_a_zone_has_its_own_negative_soa() -> None:
    """Each reload of an edited zone is a new `Zone`: its negative answers carry its own
    serial, the same object on every call, from the zone itself (no cache beside it that
    would keep old versions alive)."""
    for serial in range(2, 12):
        zone = version(serial)
        first = negative_soa(zone)
        assert first[0].serial == serial and negative_soa(zone) is first
        assert first is zone.negative
