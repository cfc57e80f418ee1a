"""What a reload of the files changes in the answer table, so an edit of a few DIs
recompiles their answers and not the whole table.

Operators change DIs far more often than anything else (the API's policy objects), and a
whole-table recompile leaves the server compiling answers on misses until the prewarm has
caught up again (seconds of CPU at 100,000 DIs). A reload
whose zone files, regions, locations, keys, GeoIP database and identity are as before
differs only in DI entries and resources: the answers that can change are those of the
DIs whose entry changed, that use a changed resource, or whose name appeared or went
away. Anything else (a zone file edit changes the SOA of every negative answer, a region
map moves every client) recompiles everything, as before, and so does any reload above
`TOUCH_LIMIT` DIs (where finding and rebinding the kept entries would cost about as much).
Runs on the reload thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.name
import dns.rdatatype

from shadowdns.geoip.database import GeoDatabase
from shadowdns.resolver.snapshot import TOUCH_LIMIT, Config, LiveState
from shadowdns.zones.di_view import own_nodes
from shadowdns.zones.policy import DI, Policy, ResourceTable
from shadowdns.zones.zone import Node, Zone

# Types whose data names another owner: a CNAME chain, glue or a target can cross into a
# DI, so a DI name appearing where a record points recompiles everything.
_TARGETS = frozenset({int(dns.rdatatype.CNAME), int(dns.rdatatype.DNAME),
                      int(dns.rdatatype.MX), int(dns.rdatatype.NS),
                      int(dns.rdatatype.SRV), int(dns.rdatatype.SVCB),
                      int(dns.rdatatype.HTTPS), int(dns.rdatatype.PTR)})


@dataclass(frozen=True, slots=True)
class ReloadScope:
    """The DIs (canonical text) whose answers may differ after a reload, the resources
    whose entry changed (DIs with a live shadow on one are touched too, see `touched`),
    and the DI names that appeared or went away."""

    dis: frozenset[str]
    resources: frozenset[str]
    names: frozenset[dns.name.Name]

    def touched(self, live: LiveState) -> set[str]:
        out = set(self.dis)
        if self.resources:
            out.update(di for di, chosen in live.shadows.items()
                       if any(s.resource in self.resources for s in chosen))
        return out


@dataclass(frozen=True, slots=True)
class PolicyPart:
    """The entries of one zone's policy a reload changed: what the store rewrites
    (`Store.update_policy`) instead of the whole graph."""

    dis: tuple[dns.name.Name, ...]
    resources: frozenset[str]


def policy_parts(old: Config, new: Config,
                 scope: ReloadScope) -> dict[dns.name.Name, PolicyPart]:
    """`scope` split by the zone whose policy holds (or held) each DI and resource."""
    names = [dns.name.from_text(text) for text in sorted(scope.dis)]
    parts: dict[dns.name.Name, PolicyPart] = {}
    for origin, policy in new.policies.items():
        before = old.policies[origin]
        dis = tuple(name for name in names if name in policy.dis or name in before.dis)
        resources = frozenset(rid for rid in scope.resources
                              if rid in policy.resources or rid in before.resources)
        parts[origin] = PolicyPart(dis, resources)
    return parts


def reload_scope(old: Config, new: Config) -> ReloadScope | None:
    """What the table must recompile when `new` replaces `old`; None: everything."""
    if (old.identity != new.identity or old.keys is not None or new.keys is not None
            or old.zones.keys() != new.zones.keys()
            or old.policies.keys() != new.policies.keys()
            or not _same_geodb(old.geodb, new.geodb)
            or sum(len(p.dis) for p in new.policies.values()) > TOUCH_LIMIT):
        return None
    dis: set[str] = set()
    resources: set[str] = set()
    names: set[dns.name.Name] = set()
    for origin, policy in new.policies.items():
        before = old.policies[origin]
        if before.locations != policy.locations or before.regions != policy.regions:
            return None
        changed = _changed_resources(before, policy)
        resources.update(changed)
        for name in before.dis.keys() | policy.dis.keys():
            was, now = before.dis.get(name), policy.dis.get(name)
            if was is None or now is None:
                names.add(name)
                dis.add(name.to_text())
            elif was.name.labels != now.name.labels:
                # the same name in other letter case: DIs and names compare without case,
                # their text (in answers, in the store) does not
                return None
            elif was != now or _uses(was, changed) or _uses(now, changed):
                dis.add(name.to_text())
    for origin, zone in new.zones.items():
        before_zone = old.zones[origin]
        if own_nodes(before_zone) != own_nodes(zone):
            return None
        appeared = [n for n in names if n.is_subdomain(origin)]
        if appeared and not _names_alone(before_zone, zone, appeared):
            return None
    return ReloadScope(frozenset(dis), frozenset(resources), frozenset(names))


def _same_geodb(a: GeoDatabase | None, b: GeoDatabase | None) -> bool:
    if a is None or b is None:
        return a is b
    # a new build of the database (its epoch) may move clients between regions
    return (a.path, a.build_epoch, a.database_type) == (b.path, b.build_epoch,
                                                         b.database_type)


def _changed_resources(before: Policy, after: Policy) -> set[str]:
    old, new = before.resources, after.resources
    if isinstance(old, ResourceTable) and isinstance(new, ResourceTable):
        # compared row by row: making 50,000 `Resource`s twice took a second
        return {rid for rid in old.keys() | new.keys() if old.row_key(rid) != new.row_key(rid)}
    return {rid for rid in old.keys() | new.keys() if old.get(rid) != new.get(rid)}


def _uses(di: DI, resources: set[str]) -> bool:
    return bool(resources) and any(r in resources for r in (*di.primaries, *di.standby))


def _names_alone(before: Zone, after: Zone, names: Iterable[dns.name.Name]) -> bool:
    """Whether DI names that appeared or went away change no other name's answer: none
    is at or below a cut or DNAME, nor below a wildcard's parent (names under it would
    stop or start being synthesised), every name between them and the apex exists before
    and after (no empty non-terminal comes or goes), and no record of the zone points at
    them."""
    wanted = set(names)
    for zone in (before, after):
        covers = [*zone.cuts, *zone.dnames, *(w.parent() for w in zone.wildcards)]
        if any(name.is_subdomain(owner) and (owner in zone.cuts or owner in zone.dnames
                                              or name != owner)
               for name in wanted for owner in covers):
            return False
    for name in wanted:
        parent = name.parent()
        while parent != after.origin and parent.is_subdomain(after.origin):
            if parent not in before.names or parent not in after.names:
                return False
            parent = parent.parent()
    return not _targets(own_nodes(after)) & wanted


def _targets(nodes: Mapping[dns.name.Name, Node]) -> set[dns.name.Name]:
    """Every owner a record of `nodes` names (CNAME and DNAME targets, exchanges, hosts)."""
    out: set[dns.name.Name] = set()
    for node in nodes.values():
        for (rdtype, _), rrset in node.items():
            if rdtype not in _TARGETS:
                continue
            for rdata in rrset:
                target = getattr(rdata, "target", None) or getattr(rdata, "exchange", None)
                if isinstance(target, dns.name.Name):
                    out.add(target)
    return out
