"""Which records may share an owner name: RFC 1034 §3.6.2 / RFC 2181 §10.1, and DI names.

The one place these rules live. The zone loader (and so `serve`, reload and `check`) reports
every breach in a file; the API refuses an edit that would breach one, before anything is
written, instead of letting dnspython resolve the clash by deleting data. A DI's name is
answered from its policy (A/AAAA of its resources), so a static A or AAAA there, or a CNAME,
would never be served.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dns.name
import dns.rdatatype

CNAME = int(dns.rdatatype.CNAME)
# Types that may share a name with a CNAME (RFC 4035 §2.5).
CNAME_COMPANIONS = frozenset({int(dns.rdatatype.RRSIG), int(dns.rdatatype.NSEC), CNAME})
# The types a DI's own answer holds at its name.
DI_TYPES = frozenset({int(dns.rdatatype.A), int(dns.rdatatype.AAAA)})


def type_text(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType(rdtype))


@dataclass(frozen=True, slots=True)
class Conflict:
    """One breach at a name: `rdtype` may not stand there beside `others` (or the DI)."""

    rdtype: int
    others: tuple[int, ...]
    reason: str
    di: bool = False  # the name's DI is what is in the way

    def involves(self, rdtype: int) -> bool:
        return rdtype == self.rdtype or rdtype in self.others


def node_conflicts(origin: dns.name.Name, name: dns.name.Name, types: Iterable[int],
                   di: bool = False) -> list[Conflict]:
    """Every rule the set of record `types` at `name` breaks; `di`: `name` is a DI's."""
    present = set(types)
    out: list[Conflict] = []
    if CNAME in present:
        if name == origin:
            out.append(Conflict(CNAME, (), "CNAME at the zone apex"))
        others = tuple(sorted(t for t in present if t not in CNAME_COMPANIONS))
        if others:
            kinds = ", ".join(type_text(t) for t in others)
            out.append(Conflict(CNAME, others, f"CNAME at {name} beside other data ({kinds})"))
        if di:
            out.append(Conflict(CNAME, (), f"CNAME at {name}, a DI's name: the DI answers "
                                "there, so the CNAME would never be served", di=True))
    if di:
        for rdtype in sorted(present & DI_TYPES):
            what = type_text(rdtype)
            out.append(Conflict(rdtype, (), f"static {what} at {name}, a DI's name: the DI "
                                f"answers {what} there, so it would never be served", di=True))
    return out
