"""The policy model: locations, resources, destination identifiers (DIs) and their knobs.

These frozen values are what the policy file (`<origin>.policy.yaml`), the store and the API
all turn into; the compiler of answers and the allocator read only these. Validation of a
file (with file and line for every problem) lives in `zones.policy_file`; the constructors here
check only what makes a value meaningless on its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import dns.name

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


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything one policy file declares for one zone."""

    origin: dns.name.Name
    locations: Mapping[str, Location]
    regions: Regions
    resources: Mapping[str, Resource]
    dis: Mapping[dns.name.Name, DI]
    source: str = "<memory>"
