"""`authority.negative_soa`: the SOA of negative answers, made once per loaded zone, and
no old version of an edited zone kept alive by its cache."""

from __future__ import annotations

import dns.name
import dns.rrset

from shadowdns.resolver import authority
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


def test_reloads_of_one_zone_keep_one_version_in_the_cache() -> None:
    """Each reload of an edited zone is a new `Zone` holding all its records; the cache
    keeps the newest one per origin, not every version it saw."""
    for serial in range(2, 12):
        zone = version(serial)
        negative_soa(zone)
        assert negative_soa(zone)[0].serial == serial
    kept = [z for z, _ in authority._BY_ZONE.values() if z.origin == ORIGIN]
    assert len(kept) == 1 and kept[0].serial == 11
