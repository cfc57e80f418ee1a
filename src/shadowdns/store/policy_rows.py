"""Flatten a `Policy` into the rows of the policy graph tables, the same for every backend.

The graph is what SQL queries need to pick shadows near demand: locations with their
pairwise great-circle distances, resources, DIs and which resources serve each DI.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from shadowdns.store.base import great_circle_km
from shadowdns.zones.policy import Policy


@dataclass(frozen=True, slots=True)
class PolicyRows:
    """Rows for one zone; every row carries the zone's origin where the table has it."""

    locations: tuple[dict[str, Any], ...]
    location_distances: tuple[dict[str, Any], ...]
    resources: tuple[dict[str, Any], ...]
    dis: tuple[dict[str, Any], ...]
    di_resources: tuple[dict[str, Any], ...]


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def policy_rows(origin: str, policy: Policy) -> PolicyRows:
    """The rows that stand for `policy` in zone `origin` (absolute text)."""
    locations = tuple(
        {
            "zone": origin,
            "name": loc.name,
            "lat": loc.lat,
            "lon": loc.lon,
            "continent": loc.continent,
        }
        for loc in policy.locations.values()
    )
    distances = tuple(
        {
            "zone": origin,
            "a": a.name,
            "b": b.name,
            "km": great_circle_km(a.lat, a.lon, b.lat, b.lon),
        }
        for a in policy.locations.values()
        for b in policy.locations.values()
    )
    resources = tuple(
        {
            "zone": origin,
            "id": res.id,
            "address": res.address,
            "address6": res.address6,
            "location": res.location,
            "role": res.role,
            "capacity": res.capacity,
            "cost": res.cost,
            "warmup": res.warmup,
            "check_json": None if res.check is None else _json(dataclasses.asdict(res.check)),
            "override": res.override,
        }
        for res in policy.resources.values()
    )
    dis = tuple(
        {
            "name": di.name.to_text(),
            "zone": origin,
            "ttl": di.ttl,
            "answers": di.answers,
            "all_down": di.all_down,
            "standby_within_km": di.standby_within_km,
            "policy_json": _json(dataclasses.asdict(di.policy)),
        }
        for di in policy.dis.values()
    )
    di_resources = tuple(
        {"di": di.name.to_text(), "resource": resource, "role": role, "position": position}
        for di in policy.dis.values()
        for role, ids in (("primary", di.primaries), ("standby", di.standby))
        for position, resource in enumerate(ids)
    )
    return PolicyRows(locations, distances, resources, dis, di_resources)
