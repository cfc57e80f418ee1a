"""DNSSEC for answers: RRSIGs on what an answer says, compact denial for what it does not.

Geo and shadow answers differ per region and change with every generation, so the zone
cannot be signed ahead as a whole; each answer is signed when it is compiled into the
answer table (once per variant, not per query), the way large geo-DNS operators sign
online. Denial follows RFC 9824 (compact denial of existence, "black lies"): a name
that does not exist gets NOERROR with one NSEC at the name itself whose next name is
`\\000.<name>` and whose bitmap holds NXNAME; NODATA gets the same NSEC listing the types
at the name. Nothing is enumerable and one signature proves each negative answer, where
precomputed NSEC would need the whole zone sorted and re-signed on every change.

Names synthesised from a wildcard (and CNAMEs synthesised from a DNAME) are signed as
if they existed: with online signing the validator needs no wildcard proof.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.util
import dns.rrset

from shadowdns.resolver.authority import Result, negative_soa
from shadowdns.zones.keys import ZoneKey
from shadowdns.zones.zone import Zone

# Signatures are valid this long and renewed when less than half remains; inception is
# backdated an hour for clocks that lag.
VALIDITY = 14 * 86400
REFRESH_AFTER = VALIDITY // 2
BACKDATE = 3600
MAX_MEMO = 20_000  # RRSIG sets kept for reuse (the SOA of every denial, shared RRsets)

NSEC = int(dns.rdatatype.NSEC)
RRSIG = int(dns.rdatatype.RRSIG)
DS = int(dns.rdatatype.DS)
NS = int(dns.rdatatype.NS)
SOA = int(dns.rdatatype.SOA)
NXNAME = 128  # RFC 9824 §2: a name that does not exist
_NONE = int(dns.rdatatype.NONE)



@dataclass(frozen=True, slots=True)
class Window:
    """The validity every signature made in one refresh period carries."""

    inception: int
    expiration: int

    @classmethod
    def starting(cls, now: float) -> Window:
        start = int(now)
        return cls(start - BACKDATE, start + VALIDITY)

    def due(self, now: float) -> bool:
        return now >= self.inception + BACKDATE + REFRESH_AFTER


class Signer:
    """Signs answers of the zones it has keys for; one validity window at a time."""

    __slots__ = ("_clock", "_memo", "keys", "window")

    def __init__(self, keys: Mapping[dns.name.Name, ZoneKey],
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self._clock = clock
        self.window = Window.starting(clock())
        # id(rrset) -> (rrset, its RRSIGs): zone RRsets are the same objects in every
        # answer (the SOA of each negative one); keeping the rrset makes the id safe.
        self._memo: dict[int, tuple[dns.rrset.RRset, dns.rrset.RRset]] = {}

    def refresh(self) -> bool:
        """Start a new validity window when the current one is half spent; True if so
        (signed answers compiled before must then be compiled again)."""
        now = self._clock()
        if not self.window.due(now):
            return False
        self.window = Window.starting(now)
        self._memo.clear()
        return True

    def rrsig(self, rrset: dns.rrset.RRset, key: ZoneKey) -> dns.rrset.RRset:
        """The RRSIG RRset over `rrset` (memoised: a zone's SOA signs once a window)."""
        known = self._memo.get(id(rrset))
        if known is not None and known[0] is rrset:
            return known[1]
        window = self.window
        sig = dns.dnssec.sign(rrset, key.private, key.origin, key.dnskey,
                              inception=window.inception, expiration=window.expiration)
        out = dns.rrset.from_rdata(rrset.name, rrset.ttl, sig)
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[id(rrset)] = (rrset, out)
        return out

    def sign(self, result: Result, qname: dns.name.Name, qtype: int) -> Result:
        """`result` with RRSIGs after each authoritative RRset and the denial it needs."""
        zone = result.zone
        key = self.keys.get(zone.origin) if zone is not None else None
        if zone is None or key is None or result.rcode not in (dns.rcode.NOERROR,
                                                               dns.rcode.NXDOMAIN):
            return result
        answer: list[dns.rrset.RRset] = []
        for rrset in result.answer:
            answer.append(rrset)
            if rrset.name.is_subdomain(zone.origin):
                answer.append(self.rrsig(rrset, key))
        authority: list[dns.rrset.RRset] = []
        rcode = result.rcode
        if result.referral:
            authority.extend(result.authority)  # the NS of a cut: not ours to sign
            cut = next(rr.name for rr in result.authority if rr.rdtype == NS)
            ds = zone.nodes[cut].get((DS, _NONE))
            if ds is not None:
                authority += [ds, self.rrsig(ds, key)]
            else:  # RFC 4035 §3.1.4: prove there is no DS
                nsec = self._nsec(zone, cut, _types(zone, cut), negative_soa(zone).ttl)
                authority += [nsec, self.rrsig(nsec, key)]
        else:
            soa_present = False
            for rrset in result.authority:
                authority.append(rrset)
                if rrset.rdtype == SOA:
                    soa_present = True
                    authority.append(self.rrsig(rrset, key))
            if soa_present:
                name = result.final_name or qname
                if rcode == dns.rcode.NXDOMAIN:
                    rcode = dns.rcode.NOERROR  # RFC 9824 §3: NXDOMAIN becomes NODATA
                    types = {NXNAME}
                else:
                    types = _types(zone, name)
                nsec = self._nsec(zone, name, types, negative_soa(zone).ttl)
                authority += [nsec, self.rrsig(nsec, key)]
        return Result(rcode=rcode, aa=result.aa, answer=answer, authority=authority,
                      additional=list(result.additional), zone=zone,
                      final_name=result.final_name, referral=result.referral,
                      ede=result.ede)

    @staticmethod
    def _nsec(zone: Zone, name: dns.name.Name, types: set[int], ttl: int) -> dns.rrset.RRset:
        """The minimally covering NSEC at `name` (RFC 9824 §3): next = \\000.name."""
        owner = name.canonicalize()
        try:
            nxt = dns.name.Name((b"\x00", *owner.labels))
        except dns.name.NameTooLong:
            nxt = owner
        listed = sorted({*types, RRSIG, NSEC})
        bitmap = dns.rdtypes.util.Bitmap.from_rdtypes(
            [dns.rdatatype.RdataType.make(t) for t in listed])
        rdata = dns.rdtypes.ANY.NSEC.NSEC(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.NSEC, nxt, bitmap.windows)
        return dns.rrset.from_rdata(owner, ttl, rdata)


def _types(zone: Zone, name: dns.name.Name) -> set[int]:
    """The types at `name`: its own node, an empty non-terminal's none, else those of the
    wildcard it was synthesised from."""
    node = zone.nodes.get(name)
    if node is None and name not in zone.names and name.is_subdomain(zone.origin):
        n = name.parent()
        while n not in zone.names and n != zone.origin:
            n = n.parent()
        node = zone.nodes.get(dns.name.Name((b"*", *n.labels)))
    if node is None:
        return set()
    return {t for (t, _c) in node if t not in (RRSIG, NSEC)}
