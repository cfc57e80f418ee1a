"""A zone in which every DI name answers with its primaries, made on access.

The authoritative algorithm, NXDOMAIN/NODATA and zone transfers must see DI names as real
names (the *static view*: the A/AAAA of all the DI's primaries). Copying an RRset into the
zone for each DI costs about a kilobyte and a few microseconds per DI — a gigabyte and
most of a minute for a million DIs — while only the slow path (misses, TCP, AXFR) ever
reads them: the fast path answers DIs from the routing decision. So the view keeps the
policy's DI table as it is and builds a DI's node when it is looked up.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from types import MappingProxyType

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shadowdns.zones.policy import DI, Policy, ResourceTable
from shadowdns.zones.zone import Node, Zone

__all__ = ["node_types", "own_nodes", "static_view"]

_A = int(dns.rdatatype.A)
_AAAA = int(dns.rdatatype.AAAA)


class _Answers:
    """The A/AAAA RRsets of a DI's primaries, one template per (type, TTL, addresses)."""

    __slots__ = ("policy", "templates")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.templates: dict[tuple[int, int, tuple[str, ...]], dns.rrset.RRset] = {}

    def rrsets(self, di: DI) -> list[dns.rrset.RRset]:
        resources = self.policy.resources
        primaries = [resources[p] for p in di.primaries if p in resources]
        out = []
        for rdtype, addrs in ((_A, tuple(r.address for r in primaries if r.address)),
                              (_AAAA, tuple(r.address6 for r in primaries if r.address6))):
            if not addrs:
                continue
            key = (rdtype, di.ttl, addrs)
            template = self.templates.get(key)
            if template is None:
                template = dns.rrset.from_text_list(di.name, di.ttl, dns.rdataclass.IN,
                                                    dns.rdatatype.RdataType(rdtype),
                                                    list(addrs))
                self.templates[key] = template
            rrset = copy.copy(template)
            rrset.name = di.name
            out.append(rrset)
        return out


class _Nodes(Mapping[dns.name.Name, Node]):
    """The zone's own nodes, and each DI's node (its own data plus the static answer)."""

    __slots__ = ("_answers", "_base", "_dis", "_len")
    _len: int | None

    def __init__(self, base: Mapping[dns.name.Name, Node], dis: Mapping[dns.name.Name, DI],
                 answers: _Answers) -> None:
        self._base = base
        self._dis = dis
        self._answers = answers
        self._len = None  # counted when asked: hashing a million names takes a second

    def _node(self, di: DI, base: Node | None) -> Node:
        node = dict(base) if base is not None else {}
        for rrset in self._answers.rrsets(di):
            node[(int(rrset.rdtype), 0)] = rrset
        return MappingProxyType(node)

    def get(self, name: dns.name.Name, default: Node | None = None) -> Node | None:  # type: ignore[override]
        di = self._dis.get(name)
        if di is None:
            return self._base.get(name, default)
        return self._node(di, self._base.get(name))

    def types(self, name: dns.name.Name) -> set[int] | None:
        """The types at `name` (None: no such node), without building a DI's RRsets:
        what a denial's NSEC bitmap needs, for every DI of a signed zone."""
        di = self._dis.get(name)
        base = self._base.get(name)
        if di is None:
            return None if base is None else {t for (t, _c) in base}
        found = {t for (t, _c) in base} if base is not None else set()
        resources = self._answers.policy.resources
        if isinstance(resources, ResourceTable):
            # read without making a `Resource` per primary (every DI's signed NODATA asks)
            facts = [f for f in (resources.peek(p) for p in di.primaries) if f is not None]
            four = any(f[2] for f in facts)
            six = any(f[0].address6 for f in facts)
        else:
            primaries = [resources[p] for p in di.primaries if p in resources]
            four = any(r.address for r in primaries)
            six = any(r.address6 for r in primaries)
        if four:
            found.add(_A)
        if six:
            found.add(_AAAA)
        return found

    def __getitem__(self, name: dns.name.Name) -> Node:
        node = self.get(name)
        if node is None:
            raise KeyError(name)
        return node

    def __contains__(self, name: object) -> bool:
        return name in self._dis or name in self._base

    def __iter__(self) -> Iterator[dns.name.Name]:
        yield from self._base
        yield from (name for name in self._dis if name not in self._base)

    def __len__(self) -> int:
        if self._len is None:
            self._len = len(self._base) + sum(1 for name in self._dis if name not in self._base)
        return self._len


def node_types(nodes: Mapping[dns.name.Name, Node], name: dns.name.Name) -> set[int] | None:
    """The types at `name` in a zone's nodes (None: no node there); cheap for DI names."""
    if isinstance(nodes, _Nodes):
        return nodes.types(name)
    node = nodes.get(name)
    return None if node is None else {t for (t, _c) in node}


class _Names(AbstractSet[dns.name.Name]):
    """Existing names: the zone's, the DIs', and empty non-terminals above DI names."""

    __slots__ = ("_base", "_dis", "_ents", "_len")
    _len: int | None

    def __init__(self, base: AbstractSet[dns.name.Name], dis: Mapping[dns.name.Name, DI],
                 origin: dns.name.Name) -> None:
        self._base = base
        self._dis = dis
        ents: set[dns.name.Name] = set()
        depth = len(origin) + 1
        for name in dis:
            if len(name) == depth:  # a child of the apex, the common case: no new ENT
                continue
            parent = name.parent()
            while parent not in base and parent not in ents:
                ents.add(parent)
                parent = parent.parent()
        self._ents = frozenset(ents)
        self._len = None

    def __contains__(self, name: object) -> bool:
        return name in self._base or name in self._dis or name in self._ents

    def __iter__(self) -> Iterator[dns.name.Name]:
        yield from self._base
        yield from self._ents
        yield from (name for name in self._dis if name not in self._base)

    def __len__(self) -> int:
        if self._len is None:
            self._len = (len(self._base) + len(self._ents)
                         + sum(1 for name in self._dis if name not in self._base))
        return self._len


def static_view(zone: Zone, policy: Policy) -> Zone:
    """The zone with each DI's name answering with all its primaries (TTL = the DI's)."""
    if not policy.dis:
        return zone
    return dataclasses.replace(zone, nodes=_Nodes(zone.nodes, policy.dis, _Answers(policy)),
                               names=_Names(zone.names, policy.dis, zone.origin))


def own_nodes(zone: Zone) -> Mapping[dns.name.Name, Node]:
    """The nodes the zone's file holds, without the DI nodes a static view adds."""
    nodes = zone.nodes
    return nodes._base if isinstance(nodes, _Nodes) else nodes
