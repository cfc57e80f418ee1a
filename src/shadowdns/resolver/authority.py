"""The authoritative algorithm (RFC 1034 §4.3.2, RFC 4592 wildcards, RFC 6672 DNAME).

Given the served zones and a question, decide what an authoritative server must answer:
rcode, AA, and the three sections as RRsets. It runs when an answer is compiled or on a
table miss, never per packet, so it favours clarity over speed. Rendering to wire bytes is
the job of `resolver.render`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shadowdns.zones.zone import Zone, negative_soa_of

# CNAME/DNAME redirections followed within one answer; Knot's CNAME_CHAIN_MAX is also 5.
MAX_CHAIN = 5

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
SVCB = int(dns.rdatatype.SVCB)
HTTPS = int(dns.rdatatype.HTTPS)

_NONE = int(dns.rdatatype.NONE)
# Types whose targets get A/AAAA in the additional section (as Knot does).
_ADDITIONAL_TARGET = {NS, MX, SRV, SVCB, HTTPS}
# Types a CNAME does not redirect: the CNAME itself, the DNSSEC records that live beside it
# (RFC 4035 §2.5), and ANY (answered from the node as it is).
_NO_REDIRECT = {CNAME, RRSIG, NSEC, ANY}
# Extended DNS Error (RFC 8914 §4.21) for questions outside every zone served.
EDE_NOT_AUTHORITATIVE = 20


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
    # An Extended DNS Error code (RFC 8914) to add when the query has EDNS.
    ede: int | None = None


class ZoneSet:
    """The zones served, with the longest-match lookup of the zone for a name."""

    __slots__ = ("zones",)

    def __init__(self, zones: Mapping[dns.name.Name, Zone]) -> None:
        self.zones: dict[dns.name.Name, Zone] = dict(zones)

    def find(self, qname: dns.name.Name, qtype: int = 0) -> Zone | None:
        """The zone with the longest origin containing qname.

        A DS question for the apex of a served zone is answered from its parent zone when
        that is served too: the DS set belongs to the parent (RFC 4035 §3.1.4.1).
        """
        labels = qname.labels
        for i in range(len(labels)):
            zone = self.zones.get(dns.name.Name(labels[i:]))
            if zone is not None:
                if i == 0 and qtype == DS and len(labels) > 1:
                    parent = self.find(dns.name.Name(labels[1:]))
                    if parent is not None:
                        return parent
                return zone
        return None

    def __len__(self) -> int:
        return len(self.zones)


def negative_soa(zone: Zone) -> dns.rrset.RRset:
    """The SOA for the authority section of negative answers, TTL per RFC 2308 §3: the
    one made with the zone (`Zone.negative`), the same object for every answer."""
    if zone.negative is not None:
        return zone.negative
    return negative_soa_of(zone.soa)  # raises for a zone without an SOA, as it did


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


def _put(section: list[dns.rrset.RRset], rrset: dns.rrset.RRset) -> bool:
    """Append an RRset unless the same one is there already; True if it was added.

    "It is meaningless for two records to ever have label, class, type and data all
    equal - servers should suppress such duplicates if encountered" (RFC 2181 §5).
    """
    if rrset in section:  # RRset equality: owner, class, type and the set of rdatas
        return False
    section.append(rrset)
    return True


def _referral(zone: Zone, result: Result, cut: dns.name.Name) -> Result:
    """NS of the delegation in the authority section, glue in the additional section.

    The DS set stays out: the zones are unsigned, so there is no DNSSEC referral to make
    (RFC 4035 §3.1.4 adds DS with its RRSIGs only for signed zones and DO queries). A DS
    question at the delegation point is answered from the parent data instead.
    """
    ns = zone.nodes[cut][(NS, _NONE)]
    if not result.answer:
        result.aa = False
    result.referral = True
    result.authority.append(ns)
    _add_additional(zone, result, ns, glue=True)
    return result


def _answer_node(
    zone: Zone,
    result: Result,
    node: Mapping[tuple[int, int], dns.rrset.RRset],
    owner: dns.name.Name,
    qtype: int,
    wildcard: bool,
) -> dns.rrset.RRset | None:
    """Answer from one node; returns the CNAME RRset to follow, if any."""
    if qtype == ANY:
        # RFC 8482 §4.1: answer ANY with one RRset rather than all of them.
        rrsets = [rr for (t, _c), rr in node.items() if t not in (RRSIG, NSEC)]
        if rrsets:
            chosen = min(rrsets, key=lambda r: int(r.rdtype))
            _put(result.answer, _synthesize(chosen, owner) if wildcard else chosen)
            if int(chosen.rdtype) in _ADDITIONAL_TARGET:
                _add_additional(zone, result, chosen, glue=False)
            return None
    rr = node.get((qtype, _NONE))
    if rr is not None:
        _put(result.answer, _synthesize(rr, owner) if wildcard else rr)
        if qtype in _ADDITIONAL_TARGET:
            _add_additional(zone, result, rr, glue=False)
        return None
    cname = node.get((CNAME, _NONE))
    if cname is not None and qtype not in _NO_REDIRECT:
        return _synthesize(cname, owner) if wildcard else cname
    result.authority.append(negative_soa(zone))
    return None


def _dname_cname(dname: dns.rrset.RRset, owner: dns.name.Name,
                 name: dns.name.Name) -> dns.rrset.RRset | None:
    """The CNAME a DNAME synthesises for `name` (RFC 6672 §3.1), None if too long.

    The target is built from the lowercased query name: answers are cached per question
    whatever its case (0x20), so no byte outside the echoed question may depend on it.
    """
    target: dns.name.Name = dname[0].target
    try:
        new_name = name.canonicalize().relativize(owner).derelativize(target)
    except dns.name.NameTooLong:
        return None
    return dns.rrset.from_rdata(
        name, dname.ttl,
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, new_name.to_text()),
    )


def resolve(zones: ZoneSet, qname: dns.name.Name, qtype: int) -> Result:
    """Answer (qname, qtype, class IN) from the served zones (RFC 1034 §4.3.2).

    CNAME and DNAME redirections are followed inside the zone, at most MAX_CHAIN of them;
    a chain that loops or leaves the zone ends with what has been found so far, NOERROR
    and no SOA, as Knot does. Names outside every zone get REFUSED.
    """
    zone = zones.find(qname, qtype)
    result = Result(zone=zone)
    if zone is None:
        result.rcode = dns.rcode.REFUSED
        result.aa = False
        result.ede = EDE_NOT_AUTHORITATIVE
        return result
    name = qname
    redirects = 0
    while True:
        result.final_name = name
        cut = _find_cut(zone, name)
        if cut is not None and not (cut == name and qtype == DS):
            return _referral(zone, result, cut)
        dname_owner = _find_dname(zone, name)
        redirect: dns.rrset.RRset | None
        if dname_owner is not None:
            redirects += 1
            if redirects > MAX_CHAIN:
                return result
            dname = zone.nodes[dname_owner][(DNAME, _NONE)]
            _put(result.answer, dname)
            redirect = _dname_cname(dname, dname_owner, name)
            if redirect is None:
                result.rcode = dns.rcode.YXDOMAIN
                return result
            result.answer.append(redirect)
            if qtype == CNAME:
                return result  # the synthesised CNAME is the answer
        else:
            node = zone.nodes.get(name)
            if node is not None:
                redirect = _answer_node(zone, result, node, name, qtype, wildcard=False)
            elif name in zone.names:
                result.authority.append(negative_soa(zone))
                return result
            else:
                encloser = _closest_encloser(zone, name)
                wild_name = dns.name.Name((b"*", *encloser.labels))
                wild = zone.nodes.get(wild_name)
                if wild is None and wild_name in zone.names:
                    # RFC 4592 §4.9: a wildcard that is an empty non-terminal still
                    # matches, and has no data: NODATA
                    result.authority.append(negative_soa(zone))
                    return result
                if wild is None:
                    result.rcode = dns.rcode.NXDOMAIN
                    result.authority.append(negative_soa(zone))
                    return result
                redirect = _answer_node(zone, result, wild, name, qtype, wildcard=True)
            if redirect is None:
                return result
            redirects += 1
            if redirects > MAX_CHAIN or not _put(result.answer, redirect):
                return result  # too long, or a loop: the CNAME is there already
        target: dns.name.Name = redirect[0].target
        if not target.is_subdomain(zone.origin):
            return result
        name = target
