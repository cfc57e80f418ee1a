"""The policy model: locations, resources, destination identifiers (DIs) and their knobs.

These frozen values are what the policy file (`<origin>.policy.yaml`), the store and the API
all turn into; the compiler of answers and the allocator read only these. Validation of a
file (with file and line for every problem) lives in `zones.policy_file`; the constructors here
check only what makes a value meaningless on its own.
"""

from __future__ import annotations

import ipaddress
import socket
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import dns.name
import numpy as np

Role = Literal["primary", "standby"]
AllDown = Literal["primaries", "nodata"]
Override = Literal["obey", "up", "down"]
CheckType = Literal["tcp", "http", "https", "dns", "command"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
"""MaxMind continent codes; in `Regions.codes` these keys mean continents, not countries."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where resources live; coordinates drive "nearest"."""

    name: str
    lat: float
    lon: float
    continent: str | None = None
    countries: tuple[str, ...] = ()
    cidrs: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ValueError(f"latitude {self.lat} out of range -90..90")
        if not -180.0 <= self.lon <= 180.0:
            raise ValueError(f"longitude {self.lon} out of range -180..180")


@dataclass(frozen=True, slots=True)
class Regions:
    """Client to location mapping: CIDR overrides, then country/continent codes, then default.

    `cidr` keeps file order (first match wins, but the most specific prefix is tried first
    by the geoip part); `codes` maps an ISO country code or a continent code to a location.
    """

    default: str
    cidr: tuple[tuple[IPNetwork, str], ...] = ()
    codes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How a resource is probed; used by the health part."""

    type: CheckType
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    url: str | None = None  # http(s)
    host: str | None = None  # address to probe when different from the served address
    port: int | None = None  # tcp / dns
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None
    host_header: str | None = None
    qname: str | None = None  # dns
    command: tuple[str, ...] = ()  # command


@dataclass(frozen=True, slots=True)
class Resource:
    """A place a DI can be served from: a primary, or a standby that may become a shadow."""

    id: str
    location: str
    role: Role
    address: str | None = None
    address6: str | None = None
    capacity: float = 1000.0
    cost: float = 1.0
    warmup: float = 0.0
    check: HealthCheck | None = None
    override: Override = "obey"

    def __post_init__(self) -> None:
        if self.address is None and self.address6 is None:
            raise ValueError(f"resource {self.id} has neither address nor address6")
        if self.address is not None:
            ipaddress.IPv4Address(self.address)
        if self.address6 is not None:
            ipaddress.IPv6Address(self.address6)


@dataclass(frozen=True, slots=True)
class AllocationPolicy:
    """Per-DI knobs of prediction and allocation."""

    model: str = "auto"
    threshold: float = 100.0
    lead_time: float = 900.0
    max_shadows: int = 3
    min_hold: float = 1800.0
    quantile: float = 0.9


@dataclass(frozen=True, slots=True)
class DI:
    """A destination identifier: a name whose answer is chosen per client region."""

    name: dns.name.Name  # absolute
    primaries: tuple[str, ...]
    standby: tuple[str, ...] = ()
    standby_within_km: float | None = None  # selector instead of (or besides) explicit ids
    ttl: int = 30
    answers: int = 1
    all_down: AllDown = "primaries"
    policy: AllocationPolicy = field(default_factory=AllocationPolicy)


@dataclass(frozen=True, slots=True, weakref_slot=True)  # kept weakly by `load_policy`
class Policy:
    """Everything one policy file declares for one zone."""

    origin: dns.name.Name
    locations: Mapping[str, Location]
    regions: Regions
    resources: Mapping[str, Resource]
    dis: Mapping[dns.name.Name, DI]
    source: str = "<memory>"
    # SHA-256 (hex) of the file bytes it was read from, None if not from a file: what the
    # store records, so a graph is never stored under the digest of a later edit
    digest: str | None = field(default=None, compare=False)


_FIELDS = tuple(getattr(Resource, name) for name in Resource.__slots__)
_ID_AT = Resource.__slots__.index("id")
_ADDRESS_AT = Resource.__slots__.index("address")


class ResourceTable(Mapping[str, Resource]):
    """Resources by id, compact enough for millions of them (a million DIs, each with its
    own five primaries).

    A `Resource` with its address text costs ~240 bytes; here a resource that differs from
    a *shape* (another resource's fields) only in its id and IPv4 address costs its id, a
    row number and the packed address, and is made into a `Resource` when looked up.
    Other resources are kept whole. Iteration follows the order of `add`/`add_shaped`; the
    ids handed out (`id_of`) are the table's own strings, so DIs can share them.
    """

    __slots__ = ("_address", "_ids", "_made", "_rest", "_rows", "_shape", "_values")

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._shape = array("i")  # per row: index into _made; -1 - index for a whole one
        self._address = array("I")  # per row: IPv4 address as an integer (shaped rows)
        self._made: list[Resource] = []  # shapes and whole resources
        self._values: dict[int, list[Any]] = {}  # shape -> its fields, read once
        self._rest: dict[int, tuple[Any, ...]] = {}  # shape -> its fields but id, address

    def shape(self, resource: Resource) -> int:
        """Register `resource`'s fields as a shape for `add_shaped`; its index."""
        self._made.append(resource)
        return len(self._made) - 1

    def add(self, resource: Resource) -> None:
        self._append(resource.id, -1 - self.shape(resource), 0)

    def add_shaped(self, rid: str, shape: int, address: bytes) -> None:
        """`rid` with the fields of `shape` but `address` (4 packed bytes)."""
        self._append(rid, shape, int.from_bytes(address, "big"))

    def _append(self, rid: str, shape: int, address: int) -> None:
        if rid in self._rows:
            raise ValueError(f"resource {rid} added twice")
        self._rows[rid] = len(self._ids)
        self._ids.append(rid)
        self._shape.append(shape)
        self._address.append(address)

    def id_of(self, rid: str) -> str | None:
        row = self._rows.get(rid)
        return None if row is None else self._ids[row]

    def id_if(self, rid: str, role: str) -> str | None:
        """`id_of(rid)` when that resource has `role`, else None (one call per id read)."""
        row = self._rows.get(rid)
        if row is None:
            return None
        shape = self._shape[row]
        made = self._made[shape if shape >= 0 else -1 - shape]
        return self._ids[row] if made.role == role else None

    def ids_if(self, rids: Iterable[str], role: str) -> list[str] | None:
        """`id_if` of each of `rids`, or None if any is not a resource with `role` (a DI's
        primaries read in one call, not one per id: a million DIs at load)."""
        rows, shapes, made, ids = self._rows, self._shape, self._made, self._ids
        out: list[str] = []
        for rid in rids:
            row = rows.get(rid)
            if row is None:
                return None
            shape = shapes[row]
            if made[shape if shape >= 0 else -1 - shape].role != role:
                return None
            out.append(ids[row])
        return out

    def role_of(self, rid: str) -> str | None:
        row = self._rows.get(rid)
        if row is None:
            return None
        shape = self._shape[row]
        return self._made[shape if shape >= 0 else -1 - shape].role

    def _make(self, row: int) -> Resource:
        shape = self._shape[row]
        if shape < 0:
            return self._made[-1 - shape]
        values = self._values.get(shape)
        if values is None:  # (a million DIs' answers are compiled at load: read it once)
            values = self._values[shape] = [slot.__get__(self._made[shape])
                                            for slot in _FIELDS]
        res = object.__new__(Resource)  # checked when the table was filled
        for slot, value in zip(_FIELDS, values, strict=True):
            slot.__set__(res, value)
        _FIELDS[_ID_AT].__set__(res, self._ids[row])
        _FIELDS[_ADDRESS_AT].__set__(
            res, socket.inet_ntoa(self._address[row].to_bytes(4, "big")))
        return res

    def peek(self, rid: str) -> tuple[Resource, str, str | None] | None:
        """(a resource with `rid`'s fields but maybe another's id and IPv4 address, its
        id, its IPv4 address), without making a `Resource`: what answers are compiled
        from, a million DIs times five at load."""
        row = self._rows.get(rid)
        if row is None:
            return None
        shape = self._shape[row]
        if shape < 0:
            made = self._made[-1 - shape]
            return made, made.id, made.address
        return (self._made[shape], self._ids[row],
                socket.inet_ntoa(self._address[row].to_bytes(4, "big")))

    def row_key(self, rid: str) -> Hashable:
        """What `rid`'s resource is, comparable across tables and without making it: two
        tables give equal keys exactly when their resources of that id are equal (None:
        no such resource)."""
        row = self._rows.get(rid)
        if row is None:
            return None
        shape = self._shape[row]
        if shape < 0:
            return self._made[-1 - shape]
        rest = self._rest.get(shape)
        if rest is None:
            made = self._made[shape]
            rest = self._rest[shape] = tuple(slot.__get__(made) for i, slot in enumerate(_FIELDS)
                                             if i not in (_ID_AT, _ADDRESS_AT))
        return (rest, self._address[row])

    def __getitem__(self, rid: str) -> Resource:
        return self._make(self._rows[rid])

    def get(self, rid: str, default: Resource | None = None) -> Resource | None:  # type: ignore[override]
        row = self._rows.get(rid)
        return default if row is None else self._make(row)

    def __contains__(self, rid: object) -> bool:
        return rid in self._rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def matching(self, predicate: Callable[[Resource], bool]) -> Iterator[Resource]:
        """The resources for which `predicate` holds, asked once per shape (a predicate
        on anything but the id and address): finding the few checked or standby resources
        among millions walks an array, not millions of `Resource`s."""
        good = {i for i, res in enumerate(self._made) if predicate(res)}
        if not good:
            return
        for row, shape in enumerate(self._shape):
            if (shape if shape >= 0 else -1 - shape) in good:
                yield self._make(row)

    def tally(self, key: Callable[[Resource], Hashable]) -> dict[Hashable, int]:
        """How many resources have each `key` (a function of anything but the id and the
        address), asked once per shape: counting five million resources by location and
        role is an array count, not five million `Resource`s."""
        shapes, counts = np.unique(np.frombuffer(self._shape, dtype=np.int32),
                                   return_counts=True)
        out: dict[Hashable, int] = {}
        for shape, count in zip(shapes.tolist(), counts.tolist(), strict=True):
            k = key(self._made[shape if shape >= 0 else -1 - shape])
            out[k] = out.get(k, 0) + count
        return out

    def field_rows(self) -> Iterator[tuple[Any, ...]]:
        """Every resource's fields in `Resource.__slots__` order, without making each a
        `Resource` (writing five million rows to the store)."""
        shapes = [[slot.__get__(res) for slot in _FIELDS] for res in self._made]
        inet_ntoa = socket.inet_ntoa
        for rid, shape, address in zip(self._ids, self._shape, self._address, strict=True):
            if shape < 0:
                yield tuple(shapes[-1 - shape])
                continue
            values = shapes[shape]
            values[_ID_AT] = rid
            values[_ADDRESS_AT] = inet_ntoa(address.to_bytes(4, "big"))
            yield tuple(values)


def resources_where(resources: Mapping[str, Resource],
                    predicate: Callable[[Resource], bool]) -> Iterator[Resource]:
    """`resources`' values for which `predicate` (of anything but id and address) holds."""
    if isinstance(resources, ResourceTable):
        return resources.matching(predicate)
    return (res for res in resources.values() if predicate(res))
