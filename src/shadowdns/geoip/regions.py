"""Client address to region, with the ECS scope prefix the answer is good for.

A region is the name of a policy location. The client address is the ECS address when the
query carries one, else the packet's source address; the resolver parses the packet and calls
`locate_ecs` or `locate`. Rules, first match wins:

1. cidr       the operator's CIDR maps (`Regions.cidr`, then each `Location.cidrs`), most
              specific prefix first;
2. country    the database's country code in `Regions.codes` or a `Location.countries`;
3. continent  the database's continent code in `Regions.codes` (AF AN AS EU NA OC SA are
              read as continents there; list a country with one of those codes, say Namibia
              "NA", under its location's `countries`). A location's own `continent` field is
              for display and never routes;
4. nearest    the location closest to the database's coordinates (haversine);
5. default    `Regions.default`: no database, no data (loopback, private), nothing matched.

The scope prefix is the widest prefix around the address inside which every address gets the
same region. It starts at the database network's prefix length (or at the matching CIDR's),
gets longer where an operator CIDR mapping to another region lies inside that block, and can
get shorter by merging neighbouring blocks of the same region (the lazy form of gdnsd's merged
table: the real GeoLite2-City has millions of networks, too many to walk at load time). Merging
is opt-in (`merge_lookups`): each extra lookup decodes a full City record (~9 µs), and on
GeoLite2-City a budget of 8 makes a miss ~7x dearer for ~14% more clients per answer. ECS
answers are clamped to the source prefix.

The mapper is built once per configuration snapshot and never changes; the snapshot compiles
its answers per region, so the query path does not call it per packet.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from shadowdns.geoip.database import GeoDatabase
from shadowdns.geoip.distance import nearest_km
from shadowdns.zones.policy import CONTINENTS, IPNetwork, Location, Regions

__all__ = [
    "CONTINENTS",
    "RegionAnswer",
    "RegionMapper",
]

ECS_FAMILY_IPV4 = 1
ECS_FAMILY_IPV6 = 2
DEFAULT_MERGE_LOOKUPS = 0

_V4_MAPPED = 0xFFFF  # the top 96 bits of ::ffff:0:0/96


@dataclass(frozen=True, slots=True)
class RegionAnswer:
    """The region of a client, how wide a prefix shares it, and why (for `shadowdns explain`).

    `rule` is one of "cidr <network>", "country XX", "continent XX", "nearest (N km)",
    "default (no database)", "default (no data)", "default (unmapped XX)".
    """

    region: str
    scope_prefix: int
    rule: str


@dataclass(frozen=True, slots=True)
class _Cidr:
    start: int
    prefixlen: int
    location: str
    text: str


class _CidrTable:
    """The operator CIDRs of one address family.

    `levels` finds the most specific match with one dict lookup per distinct prefix length;
    `starts`/`entries` (sorted) find the CIDRs lying inside a block.
    """

    __slots__ = ("bits", "entries", "levels", "starts")

    def __init__(self, bits: int, cidrs: Iterable[tuple[IPNetwork, str]]) -> None:
        unique: dict[tuple[int, int], _Cidr] = {}
        for network, location in cidrs:
            if network.max_prefixlen != bits:
                continue
            start = int(network.network_address)
            unique.setdefault(
                (start, network.prefixlen), _Cidr(start, network.prefixlen, location, str(network))
            )
        levels: dict[int, dict[int, _Cidr]] = {}
        for cidr in unique.values():
            levels.setdefault(cidr.prefixlen, {})[cidr.start >> (bits - cidr.prefixlen)] = cidr
        self.bits = bits
        self.levels: tuple[tuple[int, dict[int, _Cidr]], ...] = tuple(
            (bits - prefixlen, table) for prefixlen, table in sorted(levels.items(), reverse=True)
        )
        self.entries: tuple[_Cidr, ...] = tuple(
            sorted(unique.values(), key=lambda c: (c.start, c.prefixlen))
        )
        self.starts: tuple[int, ...] = tuple(c.start for c in self.entries)

    def match(self, ip: int) -> _Cidr | None:
        for shift, table in self.levels:
            hit = table.get(ip >> shift)
            if hit is not None:
                return hit
        return None

    def narrow(self, ip: int, scope: int, region: str) -> int:
        """Lengthen `scope` until its block around `ip` holds no CIDR mapping elsewhere.

        Among CIDRs inside the block that do not hold `ip`, the one sharing the longest
        prefix with `ip` decides; in sorted order it is the first one found walking outwards
        from `ip` on each side.
        """
        entries = self.entries
        if not entries:
            return scope
        bits = self.bits
        host = bits - scope
        low = (ip >> host) << host
        high = low + (1 << host) - 1
        starts = self.starts
        first_right = bisect_right(starts, ip)
        result = scope
        i = first_right - 1
        while i >= 0 and starts[i] >= low:
            cidr = entries[i]
            if cidr.prefixlen > scope and cidr.location != region and not self._holds(cidr, ip):
                result = max(result, bits - (ip ^ cidr.start).bit_length() + 1)
                break
            i -= 1
        i = first_right
        while i < len(entries) and starts[i] <= high:
            cidr = entries[i]
            if cidr.prefixlen > scope and cidr.location != region:
                result = max(result, bits - (ip ^ cidr.start).bit_length() + 1)
                break
            i += 1
        return result

    def _holds(self, cidr: _Cidr, ip: int) -> bool:
        shift = self.bits - cidr.prefixlen
        return (ip >> shift) == (cidr.start >> shift)


class RegionMapper:
    """Labels client addresses with regions; immutable, built once per configuration snapshot.

    `merge_lookups` bounds the extra database lookups a miss may spend widening the scope
    prefix over neighbouring networks of the same region (0, the default, turns merging off).
    """

    __slots__ = (
        "_cidr4",
        "_cidr6",
        "_continents",
        "_countries",
        "_db",
        "_default",
        "_locations",
        "_merge_lookups",
        "_regions",
    )

    def __init__(
        self,
        locations: Mapping[str, Location],
        regions: Regions,
        db: GeoDatabase | None,
        *,
        merge_lookups: int = DEFAULT_MERGE_LOOKUPS,
    ) -> None:
        if merge_lookups < 0:
            raise ValueError("merge_lookups must be >= 0")
        self._locations = tuple(locations.values())
        self._regions = regions
        self._db = db
        self._default = regions.default
        self._merge_lookups = merge_lookups
        countries: dict[str, str] = {}
        for location in self._locations:
            for country in location.countries:
                countries.setdefault(country.upper(), location.name)
        continents: dict[str, str] = {}
        for code, name in regions.codes.items():
            key = code.upper()
            if key in CONTINENTS:
                continents[key] = name
            else:
                countries[key] = name
        self._countries = countries
        self._continents = continents
        cidrs = list(regions.cidr)
        for location in self._locations:
            cidrs.extend((network, location.name) for network in location.cidrs)
        self._cidr4 = _CidrTable(32, cidrs)
        self._cidr6 = _CidrTable(128, cidrs)

    @property
    def db(self) -> GeoDatabase | None:
        """The database consulted after the CIDR maps, if any."""
        return self._db

    @property
    def regions(self) -> Regions:
        """The region rules this mapper was built from."""
        return self._regions

    def locate(self, ip: str | IPv4Address | IPv6Address) -> RegionAnswer:
        """Region of a source address; raises ValueError for a string that is no address.

        An IPv4-mapped IPv6 address (what a dual-stack socket reports) is located as IPv4;
        its scope prefix is still counted in IPv6 bits.
        """
        if isinstance(ip, str):
            ip = ip_address(ip)
        if ip.version == 4:
            return self._answer(int(ip), 32)
        value = int(ip)
        if value >> 32 == _V4_MAPPED:
            return self._shifted(self._answer(value & 0xFFFFFFFF, 32), 96, 128)
        return self._answer(value, 128)

    def locate_ecs(self, family: int, source_prefix: int, address: bytes) -> RegionAnswer:
        """Region of an ECS client subnet (RFC 7871 family 1 = IPv4, 2 = IPv6).

        `address` holds the first ceil(source_prefix / 8) bytes (shorter is zero-padded; bits
        past the source prefix are ignored). The scope prefix never exceeds `source_prefix`.
        Raises ValueError for an unknown family, a prefix or an address too long for it.
        """
        if family == ECS_FAMILY_IPV4:
            bits = 32
        elif family == ECS_FAMILY_IPV6:
            bits = 128
        else:
            raise ValueError(f"unknown ECS address family {family}")
        if not 0 <= source_prefix <= bits:
            raise ValueError(f"ECS source prefix {source_prefix} out of range 0..{bits}")
        size = len(address)
        if size > bits // 8:
            raise ValueError(f"ECS address of {size} bytes too long for family {family}")
        host = bits - source_prefix
        value = ((int.from_bytes(address, "big") << (bits - 8 * size)) >> host) << host
        if bits == 128 and source_prefix >= 96 and value >> 32 == _V4_MAPPED:
            answer = self._shifted(self._answer(value & 0xFFFFFFFF, 32), 96, source_prefix)
        else:
            answer = self._answer(value, bits)
        if answer.scope_prefix > source_prefix:
            return RegionAnswer(answer.region, source_prefix, answer.rule)
        return answer

    @staticmethod
    def _shifted(answer: RegionAnswer, offset: int, limit: int) -> RegionAnswer:
        return RegionAnswer(answer.region, min(answer.scope_prefix + offset, limit), answer.rule)

    def _answer(self, ip: int, bits: int) -> RegionAnswer:
        table = self._cidr4 if bits == 32 else self._cidr6
        region, rule, scope, by_cidr = self._classify(ip, bits, table)
        if not by_cidr and self._merge_lookups:
            scope = self._widen(ip, bits, table, region, scope)
        return RegionAnswer(region, scope, rule)

    def _classify(self, ip: int, bits: int, table: _CidrTable) -> tuple[str, str, int, bool]:
        """(region, rule, scope of a block around `ip` that is all `region`, matched a CIDR)."""
        cidr = table.match(ip)
        if cidr is not None:
            region = cidr.location
            return region, f"cidr {cidr.text}", table.narrow(ip, cidr.prefixlen, region), True
        region, rule, scope = self._geo(ip, bits)
        return region, rule, table.narrow(ip, scope, region), False

    def _geo(self, ip: int, bits: int) -> tuple[str, str, int]:
        db = self._db
        if db is None:
            return self._default, "default (no database)", 0
        if bits == 128 and db.ip_version == 4:
            return self._default, "default (no data)", 0
        info = db.lookup(IPv4Address(ip) if bits == 32 else IPv6Address(ip))
        if info is None:  # a corrupt record: claim nothing about the neighbours
            return self._default, "default (no data)", bits
        scope = info.prefix_len
        country = info.country
        if country is not None:
            name = self._countries.get(country)
            if name is not None:
                return name, f"country {country}", scope
        continent = info.continent
        if continent is not None:
            name = self._continents.get(continent)
            if name is not None:
                return name, f"continent {continent}", scope
        if info.lat is not None and info.lon is not None and self._locations:
            name, km = nearest_km(self._locations, info.lat, info.lon)
            return name, f"nearest ({km:.0f} km)", scope
        if country is None and continent is None:
            return self._default, "default (no data)", scope
        return self._default, f"default (unmapped {country or continent})", scope

    def _widen(self, ip: int, bits: int, table: _CidrTable, region: str, scope: int) -> int:
        """Shorten `scope` while the sibling block is all `region`, within the lookup budget."""
        budget = self._merge_lookups
        while scope > 0:
            host = bits - scope
            address = ((ip >> host) ^ 1) << host
            end = address + (1 << host)
            while address < end:
                if budget == 0:
                    return scope
                budget -= 1
                other, _, other_scope, _ = self._classify(address, bits, table)
                if other != region:
                    return scope
                other_host = bits - other_scope
                address = ((address >> other_host) + 1) << other_host
            scope -= 1
        return scope
