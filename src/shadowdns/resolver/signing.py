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

import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.util
import dns.rrset
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from shadowdns.resolver.authority import Result, negative_soa
from shadowdns.zones.di_view import node_types
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
_IN = int(dns.rdataclass.IN)
# RFC 6979 deterministic ECDSA, as dns.dnssec.sign makes: the same RRset signs to the same
# bytes (the fast and slow paths agree, and equal variants are interned once).
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
_POINTER_QNAME = b"\xc0\x0c"  # owner = the question's name

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

    __slots__ = ("_clock", "_memo", "denial_heads", "keys", "window")

    def __init__(self, keys: Mapping[dns.name.Name, ZoneKey],
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self._clock = clock
        self.window = Window.starting(clock())
        # id(rrset) -> (rrset, its RRSIGs): zone RRsets are the same objects in every
        # answer (the SOA of each negative one); keeping the rrset makes the id safe.
        self._memo: dict[int, tuple[dns.rrset.RRset, dns.rrset.RRset]] = {}
        # (id of a zone's negative SOA RRset, apex offset in the question) -> (that RRset,
        # the rendered SOA and its RRSIG): the part of every denial that does not depend
        # on the name, made once per zone, apex offset and window (the engine fills it).
        self.denial_heads: dict[tuple[int, int], tuple[dns.rrset.RRset, bytes]] = {}

    def refresh(self) -> bool:
        """Start a new validity window when the current one is half spent; True if so
        (signed answers compiled before must then be compiled again)."""
        now = self._clock()
        if not self.window.due(now):
            return False
        self.window = Window.starting(now)
        self._memo.clear()
        self.denial_heads.clear()
        return True

    def rrsig_rdata(self, key: ZoneKey, owner: bytes, rdtype: int, ttl: int,
                    rdatas: Iterable[bytes]) -> bytes:
        """The RRSIG RDATA over the RRset of `owner` (canonical wire: lowercase, no
        compression), `rdtype` and these RDATAs, made by hand.

        Hand-written on purpose: it is what every signed DI variant and every denial
        costs; `dns.dnssec.sign` takes ~1 ms through dnspython's objects where the ECDSA
        step itself is ~20 µs. The signed data is RFC 4034 §3.1.8.1 (the RDATA without
        its signature, then each RR in canonical form and order, §6.2-6.3), the
        signature RFC 6605 §4 (r || s, 32 octets each); tests check it with
        `dns.dnssec.validate` and through Unbound.
        """
        signer = key.signer
        window = self.window
        labels = _label_count(owner)
        head = struct.pack("!HBBIIIH", rdtype, int(key.dnskey.algorithm), labels, ttl,
                           window.expiration, window.inception, key.key_tag) + signer
        rr_head = owner + struct.pack("!HHI", rdtype, _IN, ttl)
        signed = head + b"".join([rr_head + struct.pack("!H", len(r)) + r
                                  for r in sorted(set(rdatas))])
        r, s = decode_dss_signature(key.private.sign(signed, _ECDSA_SHA256))
        return head + r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def rrsig(self, rrset: dns.rrset.RRset, key: ZoneKey) -> dns.rrset.RRset:
        """The RRSIG RRset over `rrset` (memoised: a zone's SOA signs once a window)."""
        known = self._memo.get(id(rrset))
        if known is not None and known[0] is rrset:
            return known[1]
        owner = rrset.name.canonicalize().to_wire()
        assert owner is not None
        rdatas = [rdata.to_digestable(key.origin) for rdata in rrset]
        sigs = []
        # the DNSKEY set (and CDS/CDNSKEY) by the KSK(s), the rest by the data signer
        for signer in key.signers_for(int(rrset.rdtype)):
            wire = self.rrsig_rdata(signer, owner, int(rrset.rdtype), rrset.ttl, rdatas)
            sigs.append(dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, wire, 0,
                                            len(wire)))
        out = dns.rrset.from_rdata_list(rrset.name, rrset.ttl, sigs)
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
                nsec = self._nsec(zone, cut, types_at(zone, cut), negative_soa(zone).ttl)
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
                    types = types_at(zone, name)
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


def rr_wire(owner: bytes, rdtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record on the wire (`owner` already encoded: a pointer or a name)."""
    return owner + struct.pack("!HHIH", rdtype, _IN, ttl, len(rdata)) + rdata


def signed_rrset_wire(signer: Signer, key: ZoneKey, owner: bytes, rdtype: int, ttl: int,
                      rdatas: list[bytes]) -> bytes:
    """The RRset of the question's own name (owner a pointer to it; `owner` is that name
    as canonical wire, for the signature) followed by its RRSIG, in the order given."""
    sig = signer.rrsig_rdata(key, owner, rdtype, ttl, rdatas)
    return (b"".join([rr_wire(_POINTER_QNAME, rdtype, ttl, r) for r in rdatas])
            + rr_wire(_POINTER_QNAME, RRSIG, ttl, sig))


def denial_nsec_wire(signer: Signer, key: ZoneKey, owner: bytes, types: Iterable[int],
                     ttl: int) -> bytes:
    """The compact-denial NSEC at the question's name (RFC 9824 §3, as `Signer._nsec`
    makes it) and its RRSIG, by hand; `owner` is the name as canonical wire."""
    nxt = b"\x01\x00" + owner if len(owner) + 2 <= 255 else owner
    rdata = nxt + type_bitmap({*types, RRSIG, NSEC})
    return signed_rrset_wire(signer, key, owner, NSEC, ttl, [rdata])


def type_bitmap(types: Iterable[int]) -> bytes:
    """The NSEC type bit maps field (RFC 4034 §4.1.2): per window, the octets up to the
    last one with a bit set."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        bits = windows.setdefault(t >> 8, bytearray(32))
        bits[(t & 0xFF) >> 3] |= 0x80 >> (t & 7)
    out = bytearray()
    for window, bits in sorted(windows.items()):
        used = bits.rstrip(b"\x00")
        out += bytes([window, len(used)]) + used
    return bytes(out)


def _label_count(owner: bytes) -> int:
    """The RRSIG Labels field of a wire name: its labels, root and a leading `*` not
    counted (RFC 4034 §3.1.3)."""
    count = 0
    i = 0
    while owner[i]:
        count += 1
        i += owner[i] + 1
    return count - 1 if owner[:2] == b"\x01*" else count


def types_at(zone: Zone, name: dns.name.Name) -> set[int]:
    """The types at `name`: its own node, an empty non-terminal's none, else those of the
    wildcard it was synthesised from."""
    types = node_types(zone.nodes, name)
    if types is None and name not in zone.names and name.is_subdomain(zone.origin):
        n = name.parent()
        while n not in zone.names and n != zone.origin:
            n = n.parent()
        types = node_types(zone.nodes, dns.name.Name((b"*", *n.labels)))
    if types is None:
        return set()
    return {t for t in types if t not in (RRSIG, NSEC)}
