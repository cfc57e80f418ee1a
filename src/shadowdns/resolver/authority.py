"""The authoritative algorithm (RFC 1034 §4.3.2, RFC 4592 wildcards, RFC 6672 DNAME).

Given the served zones and a question, decide what an authoritative server must answer:
rcode, AA, and the three sections as RRsets. It runs when an answer is compiled or on a
table miss, never per packet, so it favours clarity over speed. Rendering to wire bytes is
the job of `resolver.answers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.rrset

from shadowdns.zones.zone import Zone

MAX_CHAIN = 16

A = int(dns.rdatatype.A)
AAAA = int(dns.rdatatype.AAAA)
NS = int(dns.rdatatype.NS)
SOA = int(dns.rdatatype.SOA)
CNAME = int(dns.rdatatype.CNAME)
DNAME = int(dns.rdatatype.DNAME)
DS = int(dns.rdatatype.DS)
MX = int(dns.rdatatype.MX)
SRV = int(dns.rdatatype.SRV)
ANY = int(dns.rdatatype.ANY)
RRSIG = int(dns.rdatatype.RRSIG)
NSEC = int(dns.rdatatype.NSEC)

_NONE = int(dns.rdatatype.NONE)
# Types whose targets get A/AAAA in the additional section (as Knot does).
_ADDITIONAL_TARGET = {NS, MX, SRV}


@dataclass(slots=True)
class Result:
    """What to answer; sections are lists of RRsets in order."""

    rcode: int = dns.rcode.NOERROR
    aa: bool = True
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    zone: Zone | None = None
    # The name whose data answered (after CNAME/wildcard processing), for callers that
    # replace the data of dynamic names.
    final_name: dns.name.Name | None = None
    referral: bool = False


class ZoneSet:
    """The zones served, with the longest-match lookup of the zone for a name."""

    __slots__ = ("zones",)

    def __init__(self, zones: Mapping[dns.name.Name, Zone]) -> None:
        self.zones: dict[dns.name.Name, Zone] = dict(zones)

    def find(self, qname: dns.name.Name) -> Zone | None:
        labels = qname.labels
        for i in range(len(labels)):
            zone = self.zones.get(dns.name.Name(labels[i:]))
            if zone is not None:
                return zone
        return None

    def __len__(self) -> int:
        return len(self.zones)


def negative_soa(zone: Zone) -> dns.rrset.RRset:
    """The SOA for the authority section of negative answers, TTL per RFC 2308 §3."""
    soa = zone.soa
    rdata: dns.rdtypes.ANY.SOA.SOA = soa[0]
    ttl = min(soa.ttl, rdata.minimum)
    rrset = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
    rrset.update_ttl(ttl)
    rrset.add(rdata, ttl)
    return rrset


def _synthesize(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    out = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype, rrset.covers)
    out.update(rrset)  # type: ignore[no-untyped-call]
    return out


def _find_cut(zone: Zone, name: dns.name.Name) -> dns.name.Name | None:
    """The highest delegation point at or above `name` (below the apex), if any."""
    if not zone.cuts:
        return None
    depth = len(zone.origin)
    labels = name.labels
    for i in range(len(labels) - depth - 1, -1, -1):
        candidate = dns.name.Name(labels[i:])
        if candidate in zone.cuts:
            return candidate
    return None


def _find_dname(zone: Zone, name: dns.name.Name) -> dns.name.Name | None:
    """The highest DNAME owner strictly above `name` (at or below the apex), if any."""
    if not zone.dnames:
        return None
    depth = len(zone.origin)
    labels = name.labels
    for i in range(len(labels) - depth, 0, -1):
        candidate = dns.name.Name(labels[i:])
        if candidate in zone.dnames:
            return candidate
    return None


def _closest_encloser(zone: Zone, name: dns.name.Name) -> dns.name.Name:
    n = name
    while n not in zone.names and n != zone.origin:
        n = n.parent()
    return n


def _add_additional(zone: Zone, result: Result, rrset: dns.rrset.RRset, glue: bool) -> None:
    """A/AAAA for in-zone targets of NS/MX/SRV; glue below a cut only for referrals."""
    seen = {(r.name, r.rdtype) for r in result.additional}
    seen.update((r.name, r.rdtype) for r in result.answer)
    for rdata in rrset:
        target: dns.name.Name | None = getattr(rdata, "target", None)
        if target is None:
            target = getattr(rdata, "exchange", None)
        if target is None or not target.is_subdomain(zone.origin):
            continue
        node = zone.nodes.get(target)
        if node is None:
            continue
        if not glue and _find_cut(zone, target) is not None:
            continue
        for rdtype in (A, AAAA):
            rr = node.get((rdtype, _NONE))
            if rr is not None and (rr.name, rr.rdtype) not in seen:
                seen.add((rr.name, rr.rdtype))
                result.additional.append(rr)


def _referral(zone: Zone, result: Result, cut: dns.name.Name) -> Result:
    ns = zone.nodes[cut][(NS, _NONE)]
    if not result.answer:
        result.aa = False
    result.referral = True
    result.authority.append(ns)
    ds = zone.nodes[cut].get((DS, _NONE))
    if ds is not None:
        result.authority.append(ds)
    _add_additional(zone, result, ns, glue=True)
    return result


def _answer_node(
    zone: Zone,
    result: Result,
    node: Mapping[tuple[int, int], dns.rrset.RRset],
    owner: dns.name.Name,
    qtype: int,
    wildcard: bool,
) -> dns.name.Name | None:
    """Answer from one node; returns the CNAME target to follow, if any."""
    if qtype == ANY:
        # RFC 8482: answer ANY with one RRset rather than all of them.
        rrsets = [rr for (t, _c), rr in node.items() if t not in (RRSIG, NSEC)]
        if rrsets:
            rrsets.sort(key=lambda r: int(r.rdtype))
            chosen = rrsets[0]
            result.answer.append(_synthesize(chosen, owner) if wildcard else chosen)
            return None
    rr = node.get((qtype, _NONE))
    if rr is not None:
        result.answer.append(_synthesize(rr, owner) if wildcard else rr)
        if qtype in _ADDITIONAL_TARGET:
            _add_additional(zone, result, rr, glue=False)
        return None
    cname = node.get((CNAME, _NONE))
    if cname is not None:
        result.answer.append(_synthesize(cname, owner) if wildcard else cname)
        target: dns.name.Name = cname[0].target
        return target
    result.authority.append(negative_soa(zone))
    return None


def resolve(zones: ZoneSet, qname: dns.name.Name, qtype: int) -> Result:
    """Answer (qname, qtype, class IN) from the served zones."""
    zone = zones.find(qname)
    result = Result(zone=zone)
    if zone is None:
        result.rcode = dns.rcode.REFUSED
        result.aa = False
        return result
    name = qname
    seen: set[dns.name.Name] = set()
    for _ in range(MAX_CHAIN):
        seen.add(name)
        result.final_name = name
        cut = _find_cut(zone, name)
        if cut is not None and not (cut == name and qtype == DS):
            return _referral(zone, result, cut)
        dname_owner = _find_dname(zone, name)
        if dname_owner is not None:
            dname = zone.nodes[dname_owner][(DNAME, _NONE)]
            result.answer.append(dname)
            dname_target: dns.name.Name = dname[0].target
            try:
                new_name = name.relativize(dname_owner).derelativize(dname_target)
            except dns.name.NameTooLong:
                result.rcode = dns.rcode.YXDOMAIN
                return result
            cname = dns.rrset.from_rdata(
                name,
                dname.ttl,
                dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, new_name.to_text()),
            )
            result.answer.append(cname)
            target: dns.name.Name | None = new_name
        else:
            node = zone.nodes.get(name)
            if node is not None:
                target = _answer_node(zone, result, node, name, qtype, wildcard=False)
            elif name in zone.names:
                result.authority.append(negative_soa(zone))
                return result
            else:
                encloser = _closest_encloser(zone, name)
                wild = zone.nodes.get(dns.name.Name((b"*", *encloser.labels)))
                if wild is None:
                    result.rcode = dns.rcode.NXDOMAIN
                    result.authority.append(negative_soa(zone))
                    return result
                target = _answer_node(zone, result, wild, name, qtype, wildcard=True)
        if target is None:
            return result
        if target in seen or not target.is_subdomain(zone.origin):
            return result
        name = target
    return result
