"""The routing decision: which resources answer a DI for clients of one region.

This is the seed's `routeTraffic`. It runs when answers are compiled, once per
(DI, region), never per packet: ready, healthy shadows allocated for the region (nearest
first); else a ready shadow allocated for another region when it is nearer to the client
than every healthy primary; else the nearest healthy primaries; else the DI's all-down
behaviour (all primaries — fail open — or an empty answer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from shadowdns.geoip.distance import haversine_km
from shadowdns.kinds import RoutingKind
from shadowdns.zones.policy import DI, Location, Policy, Resource


@dataclass(frozen=True, slots=True)
class Shadow:
    """A ready shadow allocation as the compiler sees it."""

    di: str
    resource: str
    region: str


def group_shadows(rows: Iterable[tuple[str, str, str]]) -> dict[str, tuple[Shadow, ...]]:
    """(di, resource, region) rows as each DI's shadows, in row order."""
    out: dict[str, list[Shadow]] = {}
    for di, resource, region in rows:
        out.setdefault(di, []).append(Shadow(di, resource, region))
    return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class Decision:
    """Resources chosen for one (DI, region) and why."""

    resources: tuple[Resource, ...]
    kind: RoutingKind
    reason: str

    def addresses(self, family: int) -> list[str]:
        """Addresses of the chosen resources for family 4 or 6 (may be empty: NODATA)."""
        out: list[str] = []
        for res in self.resources:
            addr = res.address if family == 4 else res.address6
            if addr is not None and addr not in out:
                out.append(addr)
        return out


def is_up(resource: Resource, down: Collection[str], rid: str | None = None) -> bool:
    """Operator override wins over the probes' view (`rid`: the resource's id when
    `resource` holds only its other fields, a compact table's shape)."""
    if resource.override == "up":
        return True
    if resource.override == "down":
        return False
    return (resource.id if rid is None else rid) not in down


def decide(
    policy: Policy,
    di: DI,
    region: str,
    shadows: Sequence[Shadow],
    down: Collection[str],
    distance: Callable[[str, str], float] | None = None,
) -> Decision:
    """Choose the resources that answer `di` for clients mapped to `region`."""
    locations = policy.locations
    resources = policy.resources
    dist = distance or _distance_function(locations)
    here = region if region in locations else policy.regions.default

    def km(res: Resource) -> float:
        return dist(here, res.location)

    ready = [
        (s, resources[s.resource]) for s in shadows
        if s.resource in resources and is_up(resources[s.resource], down)
    ]
    local = sorted((r for s, r in ready if s.region == here), key=lambda r: (km(r), r.id))
    if local:
        chosen = tuple(local[: di.answers])
        return Decision(chosen, "shadow", f"shadow {', '.join(r.id for r in chosen)} "
                                          f"allocated for region {here}")
    primaries = [resources[p] for p in di.primaries if p in resources]
    healthy = sorted((r for r in primaries if is_up(r, down)), key=lambda r: (km(r), r.id))
    remote = sorted((r for s, r in ready if s.region != here), key=lambda r: (km(r), r.id))
    if remote and (not healthy or km(remote[0]) < km(healthy[0])):
        chosen = tuple(remote[: di.answers])
        return Decision(chosen, "shadow", f"shadow {chosen[0].id} of another region is "
                                          f"nearest to {here} ({km(chosen[0]):.0f} km)")
    if healthy:
        chosen = tuple(healthy[: di.answers])
        return Decision(chosen, "primary", f"nearest healthy primary {chosen[0].id} "
                                           f"({km(chosen[0]):.0f} km from {here})")
    if di.all_down == "nodata" or not primaries:
        return Decision((), "nodata", "every resource is down: empty answer (all_down: nodata)")
    return Decision(tuple(primaries), "fallback",
                    "every resource is down: all primaries (all_down: primaries, fail open)")


def _distance_function(locations: Mapping[str, Location]) -> Callable[[str, str], float]:
    cache: dict[tuple[str, str], float] = {}

    def dist(a: str, b: str) -> float:
        key = (a, b)
        value = cache.get(key)
        if value is None:
            la, lb = locations.get(a), locations.get(b)
            value = (haversine_km(la.lat, la.lon, lb.lat, lb.lon)
                     if la is not None and lb is not None else math.inf)
            cache[key] = value
        return value

    return dist
