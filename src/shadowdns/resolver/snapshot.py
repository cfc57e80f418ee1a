"""Builds the immutable snapshot the query path reads: zones, DIs, region mappers, shadows.

Two inputs change at different speeds: the configuration (zone and policy files, reloaded
on SIGHUP) and the live state (shadow allocations and health, polled every second). A
snapshot combines both; the control plane builds a new one and swaps it in whole. DI names
are added to their zone as the *static view* (A/AAAA of all primaries), so the
authoritative algorithm, NXDOMAIN/NODATA logic and zone transfers see them as real names.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.errors import ConfigError, Problem, ShadowDNSError
from shadowdns.gcwatch import WATCH
from shadowdns.geoip.database import GeoDatabase
from shadowdns.geoip.distance import haversine_km
from shadowdns.geoip.regions import RegionAnswer, RegionMapper
from shadowdns.kinds import RoutingKind
from shadowdns.resolver.authority import ZoneSet
from shadowdns.resolver.render import Identity
from shadowdns.resolver.routing import Decision, Shadow, decide, group_shadows, is_up
from shadowdns.resolver.signing import Signer
from shadowdns.zones.di_view import static_view
from shadowdns.zones.keys import ZoneKey, load_keys, publish
from shadowdns.zones.loader import (
    ZONE_SUFFIX,
    load_zone_dir,
    load_zone_file,
    record_lines,
    zone_files,
)
from shadowdns.zones.policy import DI, Policy, Resource, ResourceTable
from shadowdns.zones.policy_file import POLICY_SUFFIX, load_policy
from shadowdns.zones.rules import node_conflicts
from shadowdns.zones.zone import Zone

# Per region index: positions among a DI's primaries that answer, and the kind of answer.
Picks = tuple[tuple[tuple[int, ...], RoutingKind], ...]


@dataclass(frozen=True, slots=True)
class Config:
    """What the files say: zones (DI names added as their static view) and their policies."""

    zones: Mapping[dns.name.Name, Zone]
    policies: Mapping[dns.name.Name, Policy]
    geodb: GeoDatabase | None
    identity: Identity = field(default_factory=Identity)
    keys: Mapping[dns.name.Name, ZoneKey] | None = None
    # Built (and so checked) while loading; `build_snapshot` reuses them.
    mappers: Mapping[dns.name.Name, RegionMapper] = field(default_factory=dict)
    allocator: AllocatorSettings = field(default_factory=AllocatorSettings)


@dataclass(frozen=True, slots=True)
class LiveState:
    """What changes while running: ready shadows per DI name, and resources seen down."""

    shadows: Mapping[str, tuple[Shadow, ...]] = field(default_factory=dict)
    down: frozenset[str] = frozenset()
    version: int = 0
    # Shorter answer TTLs per (DI, region) ahead of a planned change of its answer.
    ttls: Mapping[tuple[str, str], int] = field(default_factory=dict)


def policy_path(zone: Zone) -> Path:
    path = Path(zone.file)
    stem = path.name[: -len(ZONE_SUFFIX)] if path.name.endswith(ZONE_SUFFIX) else path.name
    return path.with_name(stem + POLICY_SUFFIX)


def load_config(zones_dir: Path, geoip: Path | None = None,
                identity: Identity | None = None, keys_dir: Path | None = None) -> Config:
    """Load zones, policies, their region maps and `allocator.yaml`: the one loader of
    `serve`, reload and `check`; every problem of every file is reported together.

    With `keys_dir`, every zone is signed: its key is read (or made) there and published
    at the apex."""
    # Loading allocates millions of small acyclic objects for big zones; the cyclic
    # collector would rescan all of them again and again (quadratic time), so pause it.
    with WATCH.paused():
        return _load_config(zones_dir, geoip, identity, keys_dir)


def _load_config(zones_dir: Path, geoip: Path | None,
                 identity: Identity | None, keys_dir: Path | None) -> Config:
    problems: list[Problem] = []
    try:
        zones = load_zone_dir(zones_dir)
    except ConfigError as exc:
        problems.extend(exc.problems)
        zones = _zones_alone(zones_dir)
    keys = None
    if keys_dir is not None and not problems:
        try:
            keys = load_keys(keys_dir, zones, zones)
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            for origin, key in keys.items():
                zones[origin] = publish(zones[origin], key)
    try:
        allocator = AllocatorSettings.load(zones_dir)
    except ConfigError as exc:
        problems.extend(exc.problems)
    policies: dict[dns.name.Name, Policy] = {}
    for origin, zone in zones.items():
        path = policy_path(zone)
        if path.exists():
            try:
                policies[origin] = load_policy(path, origin)
            except ConfigError as exc:
                problems.extend(exc.problems)
    lines: dict[dns.name.Name, dict[tuple[dns.name.Name, int], int]] = {}
    for origin, policy in policies.items():
        for di in policy.dis.values():
            problems.extend(_di_conflicts(zones[origin], di, policy.source, lines))
    geodb: GeoDatabase | None = None
    if geoip is not None:
        try:
            geodb = GeoDatabase.open(geoip)
        except (OSError, ValueError) as exc:
            problems.append(Problem(str(geoip), None, f"cannot open GeoIP database: {exc}"))
    else:
        geodb = GeoDatabase.default()
    mappers: dict[dns.name.Name, RegionMapper] = {}
    for origin, policy in policies.items():
        try:
            mappers[origin] = RegionMapper(policy.locations, policy.regions, geodb)
        except ValueError as exc:
            problems.append(Problem(policy.source, None, f"regions: {exc}"))
    if problems:
        raise ConfigError(problems)
    for origin, policy in policies.items():
        zones[origin] = static_view(zones[origin], policy)
    return Config(zones=zones, policies=policies, geodb=geodb, identity=identity or Identity(),
                  keys=keys, mappers=mappers, allocator=allocator)


def _zones_alone(zones_dir: Path) -> dict[dns.name.Name, Zone]:
    """The zone files that load, when others do not: so that the policies beside them are
    checked too and one run lists every problem."""
    zones: dict[dns.name.Name, Zone] = {}
    try:
        paths = zone_files(zones_dir)
    except ConfigError:
        return zones
    for path in paths:
        try:
            zone = load_zone_file(path)
        except ConfigError:
            continue
        zones.setdefault(zone.origin, zone)
    return zones


def _di_conflicts(zone: Zone, di: DI, source: str,
                  lines: dict[dns.name.Name, dict[tuple[dns.name.Name, int], int]],
                  ) -> list[Problem]:
    """What stops `di` being served from `zone`; a record in its way is reported at its
    line of the zone file (`lines` caches them per zone, read only when needed)."""
    node = zone.nodes.get(di.name)
    if node is None:
        return []
    clashes = node_conflicts(zone.origin, di.name, (t for t, _ in node), di=True)
    if clashes:
        if zone.origin not in lines:
            lines[zone.origin] = record_lines(Path(zone.file), zone.origin)
        at = lines[zone.origin]
        return [Problem(zone.file, at.get((di.name, c.rdtype)), f"{c.reason} (the DI is in "
                        f"{source}); remove the record or the DI") for c in clashes]
    for cut in zone.cuts:
        if di.name.is_subdomain(cut):
            return [Problem(source, None, f"DI {di.name} is below the delegation {cut}")]
    return []


class GeoContext:
    """Per policy: the region mapper, region indexes, and memoised routing decisions.

    Caches belong to the snapshot and are thrown away with it, so they never go stale.
    """

    __slots__ = ("by_signature", "decisions", "distances", "down", "ecs_cache", "index",
                 "ip_cache", "mapper", "policy", "regions", "shadows", "ttls")

    def __init__(self, policy: Policy, mapper: RegionMapper, live: LiveState,
                 previous: GeoContext | None = None) -> None:
        self.policy = policy
        self.mapper = mapper
        self.regions: tuple[str, ...] = tuple(policy.locations)
        self.index = {name: i for i, name in enumerate(self.regions)}
        # Where a client is and how far locations are apart do not depend on the live
        # state: a new snapshot of the same policy keeps what the previous one learnt.
        same = previous is not None and previous.policy is policy
        self.ip_cache: dict[str, int] = previous.ip_cache if same else {}  # type: ignore[union-attr]
        self.ecs_cache: dict[bytes, tuple[int, int]] = (
            previous.ecs_cache if same else {})  # type: ignore[union-attr]
        self.distances: dict[tuple[str, str], float] = (
            previous.distances if same else {})  # type: ignore[union-attr]
        self.decisions: dict[Hashable, Decision] = {}
        self.by_signature: dict[Hashable, Picks] = {}
        self.shadows = live.shadows
        self.down = live.down
        self.ttls = live.ttls

    def ttl(self, di: DI, region: int, text: str | None = None) -> int:
        """The DI's answer TTL for a region, shortened ahead of a planned change (`text`:
        the DI's name as text, when the caller has it)."""
        if not self.ttls:
            return di.ttl
        return self.ttls.get((text or di.name.to_text(), self.regions[region]), di.ttl)

    def region_index(self, answer: RegionAnswer) -> int:
        idx = self.index.get(answer.region)
        if idx is None:
            idx = self.index[self.policy.regions.default]
        return idx

    def locate_ip(self, ip: str) -> int:
        """Region index of a source address (cached)."""
        idx = self.ip_cache.get(ip)
        if idx is None:
            try:
                answer = self.mapper.locate(ip)
            except ValueError:
                return self.index[self.policy.regions.default]
            idx = self.region_index(answer)
            if len(self.ip_cache) < 200_000:
                self.ip_cache[ip] = idx
        return idx

    def locate_ecs(self, ecs: bytes) -> tuple[int, int] | None:
        """(region index, scope prefix) for raw ECS option data; None if invalid."""
        hit = self.ecs_cache.get(ecs)
        if hit is not None:
            return hit
        family = ecs[0] << 8 | ecs[1]
        source = ecs[2]
        try:
            answer = self.mapper.locate_ecs(family, source, ecs[4:])
        except ValueError:
            return None
        hit = (self.region_index(answer), answer.scope_prefix)
        if len(self.ecs_cache) < 200_000:
            self.ecs_cache[ecs] = hit
        return hit

    def decision(self, di: DI, region: int) -> Decision:
        shadows = self.shadows.get(di.name.to_text(), ()) if self.shadows else ()
        # Without shadows the decision depends only on the DI's resources and rules, which
        # most DIs share: one entry per distinct set, not one per DI.
        key: Hashable = ((di.name, region) if shadows
                         else (di.primaries, di.answers, di.all_down, region))
        found = self.decisions.get(key)
        if found is None:
            found = decide(self.policy, di, self.regions[region], shadows, self.down,
                           distance=self._distance)
            self.decisions[key] = found
        return found

    def choices(self, di: DI, text: str | None = None
                ) -> tuple[list[Resource | None], Picks] | None:
        """`di`'s primaries and, per region index, the positions among them that answer
        and the kind of answer, as `decide` makes them; None when the DI has shadows
        (then `decision` decides per region).

        Without shadows a decision depends only on where the DI's primaries are, whether
        each is up, the order of their ids (ties in distance go to the smaller id) and the
        DI's rules: DIs that differ only in their resources share one computation. A
        million DIs with their own primaries then cost a dict hit each, not a million
        routing decisions per region.
        """
        if self.shadows and self.shadows.get(text or di.name.to_text()):
            return None
        resources = self.policy.resources
        primaries = [resources.get(p) for p in di.primaries]
        down = self.down
        where = tuple(None if r is None else (r.location, is_up(r, down)) for r in primaries)
        return primaries, self._picks(di, where, primaries)

    def addresses_of(self, di: DI, text: str | None = None
                     ) -> tuple[list[tuple[str | None, str | None]], Picks] | None:
        """`choices` as the answer compiler needs it: each primary's (IPv4, IPv6) instead
        of the primary, read without making a `Resource` from a compact resource table
        (the table of a million DIs is compiled at load: five lookups per DI)."""
        resources = self.policy.resources
        if not isinstance(resources, ResourceTable):
            chosen = self.choices(di, text)
            if chosen is None:
                return None
            return ([(None, None) if r is None else (r.address, r.address6)
                     for r in chosen[0]], chosen[1])
        if self.shadows and self.shadows.get(text or di.name.to_text()):
            return None
        facts = [resources.peek(p) for p in di.primaries]
        down = self.down
        where = tuple(None if f is None else (f[0].location, is_up(f[0], down, f[1]))
                      for f in facts)
        picks = self._picks(di, where, None)
        return [(None, None) if f is None else (f[2], f[0].address6) for f in facts], picks

    def _picks(self, di: DI, where: tuple[tuple[str, bool] | None, ...],
               primaries: list[Resource | None] | None) -> Picks:
        signature = (where, tuple(sorted(range(len(where)), key=di.primaries.__getitem__)),
                     di.answers, di.all_down)
        picks = self.by_signature.get(signature)
        if picks is None:
            if primaries is None:
                resources = self.policy.resources
                primaries = [resources.get(p) for p in di.primaries]
            made = []
            for region in self.regions:
                decision = decide(self.policy, di, region, (), self.down,
                                  distance=self._distance)
                # by id: a compact resource table makes a new `Resource` on each lookup
                positions = tuple(next(i for i, r in enumerate(primaries)
                                       if r is not None and r.id == res.id)
                                  for res in decision.resources)
                made.append((positions, decision.kind))
            picks = self.by_signature[signature] = tuple(made)
        return picks

    def decisions_for(self, di: DI, text: str | None = None) -> tuple[Decision, ...]:
        """The routing decision of `di` in every region (by region index), for answers;
        the reasons are `decision`'s job (explain)."""
        chosen = self.choices(di, text)
        if chosen is None:
            return tuple(self.decision(di, r) for r in range(len(self.regions)))
        primaries, picks = chosen
        return tuple(Decision(tuple(primaries[i] for i in positions), kind, "")  # type: ignore[misc]
                     for positions, kind in picks)

    def _distance(self, a: str, b: str) -> float:
        km = self.distances.get((a, b))
        if km is None:
            la, lb = self.policy.locations.get(a), self.policy.locations.get(b)
            km = (float("inf") if la is None or lb is None
                  else haversine_km(la.lat, la.lon, lb.lat, lb.lon))
            self.distances[(a, b)] = km
        return km


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the query path reads; replaced whole, never changed."""

    zones: ZoneSet
    identity: Identity = field(default_factory=Identity)
    generation: int = 0
    dis: Mapping[dns.name.Name, tuple[DI, GeoContext]] = field(default_factory=dict)
    # Signs answers to DO queries (None: the zones are served unsigned).
    signer: Signer | None = None


class DITable(Mapping[dns.name.Name, tuple[DI, GeoContext]]):
    """DI name -> (DI, its policy's context), read through the policies' own DI tables.

    A merged dict would cost a tuple and an entry per DI (over 100 MB and two seconds for a
    million DIs); the lookups happen only when an answer is compiled.
    """

    __slots__ = ("_parts",)

    def __init__(self, parts: Sequence[tuple[Mapping[dns.name.Name, DI], GeoContext]]) -> None:
        self._parts = tuple(parts)

    def get(self, name: dns.name.Name,  # type: ignore[override]
            default: tuple[DI, GeoContext] | None = None) -> tuple[DI, GeoContext] | None:
        for dis, ctx in self._parts:
            di = dis.get(name)
            if di is not None:
                return di, ctx
        return default

    def __getitem__(self, name: dns.name.Name) -> tuple[DI, GeoContext]:
        found = self.get(name)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return any(name in dis for dis, _ in self._parts)

    def __iter__(self) -> Iterator[dns.name.Name]:
        for dis, _ in self._parts:
            yield from dis

    def __len__(self) -> int:
        return sum(len(dis) for dis, _ in self._parts)

    def contexts(self) -> list[GeoContext]:
        return [ctx for _, ctx in self._parts]

    def entries(self) -> Iterator[tuple[dns.name.Name, DI, GeoContext]]:
        """Every DI with its context, read off the policies' tables (no lookups)."""
        for dis, ctx in self._parts:
            for name, di in dis.items():
                yield name, di, ctx


def build_snapshot(config: Config, live: LiveState | None = None,
                   generation: int = 0, previous: Snapshot | None = None) -> Snapshot:
    """The snapshot of `config` in `live` state; given the `previous` snapshot, the region
    mappers and lookup caches of policies it shares are carried over."""
    live = live or LiveState()
    before = {id(ctx.policy): ctx for ctx in previous.dis.contexts()} \
        if previous is not None and isinstance(previous.dis, DITable) else {}
    parts: list[tuple[Mapping[dns.name.Name, DI], GeoContext]] = []
    for policy in config.policies.values():
        old = before.get(id(policy))
        if old is not None and old.policy is policy:
            mapper = old.mapper
        elif policy.origin in config.mappers:
            old = None
            mapper = config.mappers[policy.origin]
        else:
            old = None
            try:
                mapper = RegionMapper(policy.locations, policy.regions, config.geodb)
            except ValueError as exc:
                raise ShadowDNSError(f"{policy.source}: {exc}") from None
        parts.append((policy.dis, GeoContext(policy, mapper, live, old)))
    signer = None
    if config.keys is not None:
        signer = previous.signer if previous is not None and previous.signer is not None \
            and previous.signer.keys is config.keys else Signer(config.keys)
    return Snapshot(zones=ZoneSet(config.zones), identity=config.identity, generation=generation,
                    dis=DITable(parts), signer=signer)


def shadows_by_di(rows: Sequence[tuple[str, str, str]],
                  known: Collection[str] | None = None) -> dict[str, tuple[Shadow, ...]]:
    """Group ready (di, resource, region) rows by DI name (canonical text; only `known`)."""
    named = ((dns.name.from_text(di).to_text(), resource, region)
             for di, resource, region in rows)
    return group_shadows(row for row in named if known is None or row[0] in known)


# DIs above which a change recompiles everything instead of working out what it touches
# (the work of finding and rebinding entries would rival the recompile's).
TOUCH_LIMIT = 200_000


class ResourceUsers:
    """Which DIs each resource answers for, to tell what a change of live state touches.

    Built by `prepare` where it costs no answer (at start, on the reload thread: 10,000 DIs
    with their own primaries take ~50 ms), else on the first change that needs it; above
    `limit` DIs a health change recompiles everything instead.
    """

    def __init__(self, config: Config, limit: int = TOUCH_LIMIT) -> None:
        self.config = config
        self.limit = limit
        self._users: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]] | None:
        if self._users is None:
            if sum(len(p.dis) for p in self.config.policies.values()) > self.limit:
                return None
            users: dict[str, list[str]] = {}
            for policy in self.config.policies.values():
                for name, di in policy.dis.items():
                    text = name.to_text()
                    for rid in di.primaries:
                        users.setdefault(rid, []).append(text)
            self._users = users
        return self._users

    def prepare(self) -> ResourceUsers:
        self._index()
        return self

    def touched(self, old: LiveState, new: LiveState) -> set[str] | None:
        """DIs whose answers may differ between two live states of this configuration;
        None when that is not worth working out (recompile everything)."""
        out = {di for di in old.shadows.keys() | new.shadows.keys()
               if old.shadows.get(di) != new.shadows.get(di)}
        out.update(di for di, region in old.ttls.keys() | new.ttls.keys()
                   if old.ttls.get((di, region)) != new.ttls.get((di, region)))
        flipped = old.down ^ new.down
        if flipped:
            users = self._index()
            if users is None:
                return None
            for rid in flipped:
                out.update(users.get(rid, ()))
            for shadows in (old.shadows, new.shadows):
                out.update(di for di, chosen in shadows.items()
                           if any(s.resource in flipped for s in chosen))
        return out
