"""Flatten a `Policy` into the rows of the policy graph tables, the same for every backend.

The graph is what SQL queries need to pick shadows near demand: locations with their
pairwise great-circle distances, resources, DIs and which resources serve each DI. A policy
can hold a million DIs (six million rows), so rows are tuples made as they are written,
and the JSON of allocation settings shared by many DIs is made once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Iterator
from typing import Any

import dns.name

from shadowdns.geoip.distance import haversine_km
from shadowdns.zones.policy import DI, AllocationPolicy, Policy, Resource, ResourceTable

Table = tuple[str, tuple[str, ...], Iterator[tuple[Any, ...]]]
"""(table name, its columns, the rows as tuples in column order)."""


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def policy_rows(origin: str, policy: Policy) -> list[Table]:
    """The tables' rows that stand for `policy` in zone `origin` (absolute text)."""
    locations = list(policy.locations.values())
    table = policy.resources
    # A ResourceTable's rows are read as they are, not made into millions of Resources.
    fields = table.field_rows() if isinstance(table, ResourceTable) else (
        _fields(r) for r in table.values())
    return [
        ("locations", ("zone", "name", "lat", "lon", "continent"),
         iter([(origin, loc.name, loc.lat, loc.lon, loc.continent) for loc in locations])),
        ("location_distances", ("zone", "a", "b", "km"),
         iter([(origin, a.name, b.name, haversine_km(a.lat, a.lon, b.lat, b.lon))
               for a in locations for b in locations])),
        *part_rows(origin, fields, policy.dis.values()),
    ]


def policy_part_rows(origin: str, policy: Policy, dis: Iterable[dns.name.Name],
                     resources: Iterable[str]) -> list[Table]:
    """The rows of just these DIs and resources of `policy` (those it still has): what an
    edit of a few entries rewrites (`Store.update_policy`)."""
    made = (policy.resources.get(rid) for rid in resources)
    entries = (policy.dis.get(name) for name in dis)
    return part_rows(origin, (_fields(r) for r in made if r is not None),
                     [di for di in entries if di is not None])


def part_rows(origin: str, resources: Iterable[tuple[Any, ...]],
              dis: Iterable[DI]) -> list[Table]:
    """The resources, dis and di_resources tables' rows of resources (as `Resource`
    fields) and DIs."""
    # Two passes over the DIs, each making the name's text again: a million names held
    # as text between the two tables would cost ~70 MB more at the peak.
    chosen = dis if isinstance(dis, Collection) else list(dis)

    def resource_rows() -> Iterator[tuple[Any, ...]]:
        for rid, location, role, address, address6, capacity, cost, warmup, check, override \
                in resources:
            yield (origin, rid, address, address6, location, role, capacity, cost, warmup,
                   None if check is None else _json(dataclasses.asdict(check)), override)

    def di_rows() -> Iterator[tuple[Any, ...]]:
        shown: dict[AllocationPolicy, str] = {}
        for di in chosen:
            text = shown.get(di.policy)
            if text is None:
                text = shown[di.policy] = _json(dataclasses.asdict(di.policy))
            yield (di.name.to_text(), origin, di.ttl, di.answers, di.all_down,
                   di.standby_within_km, text)

    def di_resources() -> Iterator[tuple[Any, ...]]:
        for di in chosen:
            name = di.name.to_text()
            for position, resource in enumerate(di.primaries):
                yield (name, resource, "primary", position)
            for position, resource in enumerate(di.standby):
                yield (name, resource, "standby", position)

    return [
        ("resources", ("zone", "id", "address", "address6", "location", "role", "capacity",
                       "cost", "warmup", "check_json", "override"), resource_rows()),
        ("dis", ("name", "zone", "ttl", "answers", "all_down", "standby_within_km",
                 "policy_json"), di_rows()),
        ("di_resources", ("di", "resource", "role", "position"), di_resources()),
    ]


def _fields(resource: Resource) -> tuple[Any, ...]:
    return tuple(getattr(resource, name) for name in Resource.__slots__)
