"""An immutable, indexed authoritative zone: what the authoritative algorithm reads.

dnspython's `Zone` is built for editing; answering needs different indexes: every existing
name (empty non-terminals included, RFC 4592 §2.2.2), the delegation points, and the SOA
values used for negative answers. Built once per load and never mutated afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from types import MappingProxyType

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# (rdtype, covers) -> RRset, the rdatasets of one owner name.
Node = Mapping[tuple[int, int], dns.rrset.RRset]


@dataclass(frozen=True, slots=True)
class Zone:
    """One loaded zone.

    `nodes` holds the names that own data; `names` holds those plus every empty
    non-terminal between them and the apex; `cuts` holds the delegation points (names
    below the apex that own NS).
    """

    origin: dns.name.Name
    nodes: Mapping[dns.name.Name, Node]
    names: AbstractSet[dns.name.Name]
    cuts: frozenset[dns.name.Name]
    dnames: frozenset[dns.name.Name]
    file: str = "<memory>"
    rdclass: int = dns.rdataclass.IN
    wildcards: frozenset[dns.name.Name] = field(default_factory=frozenset)
    # The SOA of negative answers (`negative_soa_of`), made with the zone: every
    # NXDOMAIN/NODATA compile needs it, and a cache of it beside the zone would keep old
    # versions of an edited zone alive. None for a zone without an SOA.
    negative: dns.rrset.RRset | None = field(default=None, compare=False, repr=False)
    # The labels (lowercase) the names in the SOA data (MNAME, RNAME) have just above the
    # apex: a negative answer to a question with one of them there compresses its SOA
    # against the question, so it cannot be shared by names (`soa_labels_of`).
    soa_labels: frozenset[bytes] = field(default=frozenset(), compare=False, repr=False)

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.nodes[self.origin][(dns.rdatatype.SOA, dns.rdatatype.NONE)]

    @property
    def serial(self) -> int:
        serial: int = self.soa[0].serial
        return serial

    def rrsets(self) -> Iterable[dns.rrset.RRset]:
        for node in self.nodes.values():
            yield from node.values()

    @classmethod
    def build(
        cls,
        origin: dns.name.Name,
        rrsets: Iterable[dns.rrset.RRset],
        file: str = "<memory>",
    ) -> Zone:
        """Index RRsets (already validated) into a zone."""
        nodes: dict[dns.name.Name, dict[tuple[int, int], dns.rrset.RRset]] = {}
        for rrset in rrsets:
            node = nodes.setdefault(rrset.name, {})
            key = (int(rrset.rdtype), int(rrset.covers))
            existing = node.get(key)
            if existing is None:
                node[key] = rrset
            else:
                merged = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers)
                merged.update(existing)  # type: ignore[no-untyped-call]
                merged.update(rrset)  # type: ignore[no-untyped-call]
                node[key] = merged
        names: set[dns.name.Name] = set()
        for name in nodes:
            n = name
            while n not in names:
                names.add(n)
                if n == origin or len(n) <= len(origin):
                    break
                n = n.parent()
        ns_key = (int(dns.rdatatype.NS), 0)
        dname_key = (int(dns.rdatatype.DNAME), 0)
        cuts = frozenset(n for n, node in nodes.items() if n != origin and ns_key in node)
        dnames = frozenset(n for n, node in nodes.items() if dname_key in node)
        wildcards = frozenset(n for n in names if n.is_wild())
        frozen_nodes = {n: MappingProxyType(node) for n, node in nodes.items()}
        soa = nodes.get(origin, {}).get((int(dns.rdatatype.SOA), int(dns.rdatatype.NONE)))
        return cls(
            origin=origin,
            nodes=MappingProxyType(frozen_nodes),
            names=frozenset(names),
            cuts=cuts,
            dnames=dnames,
            file=file,
            wildcards=wildcards,
            negative=None if soa is None else negative_soa_of(soa),
            soa_labels=frozenset() if soa is None else soa_labels_of(soa),
        )


def negative_soa_of(soa: dns.rrset.RRset) -> dns.rrset.RRset:
    """The SOA for the authority section of negative answers: TTL per RFC 2308 §3."""
    rdata = soa[0]
    ttl = min(soa.ttl, rdata.minimum)
    rrset = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    rrset.update_ttl(ttl)
    rrset.add(rdata, ttl)
    return rrset


def soa_labels_of(soa: dns.rrset.RRset) -> frozenset[bytes]:
    """See `Zone.soa_labels`."""
    origin = soa.name
    depth = len(origin)
    return frozenset(n.labels[-depth - 1].lower() for n in (soa[0].mname, soa[0].rname)
                     if len(n) > depth and n.is_subdomain(origin))
