"""Client address to region: rule order, nearest, scope prefix, ECS, IPv6."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

import pytest

from shadowdns.geoip import GeoDatabase, RegionAnswer, RegionMapper, haversine_km
from shadowdns.zones.policy import IPNetwork, Location, Regions

MAXMIND = Path(__file__).resolve().parents[2] / "data" / "geoip" / "maxmind-test"


def net(text: str) -> IPNetwork:
    return ip_network(text)


RULES = Regions(
    default="eu-west",
    cidr=((net("81.2.69.140/30"), "ap-east"),),
    codes={"gb": "us-east", "EU": "eu-west", "AS": "ap-east", "NA": "us-east"},
)


@pytest.fixture(scope="module")
def mapper(locations: dict[str, Location], city_db: GeoDatabase) -> RegionMapper:
    """The City test database with one rule of each kind (merging off: exact db prefixes)."""
    return RegionMapper(locations, RULES, city_db, merge_lookups=0)


@pytest.mark.parametrize(
    ("address", "region", "rule", "scope"),
    [
        ("81.2.69.142", "ap-east", "cidr 81.2.69.140/30", 30),  # cidr beats country GB
        ("2.125.160.216", "us-east", "country GB", 29),  # country beats continent EU
        ("89.160.20.112", "eu-north", "country SE", 28),  # a Location.countries entry
        ("216.160.83.56", "us-east", "continent NA", 29),
        ("175.16.199.5", "ap-east", "continent AS", 24),
        ("2.3.3.1", "eu-west", "continent EU", 24),  # a record with a continent only
        ("214.1.1.1", "eu-west", "default (no data)", 24),  # an empty record
        ("127.0.0.1", "eu-west", "default (no data)", 8),  # loopback
        ("10.1.2.3", "eu-west", "default (no data)", 8),  # private
        ("2001:218::1", "ap-east", "continent AS", 32),
        ("2a02:d180::1", "eu-west", "continent EU", 29),
    ],
)
def test_rule_order(mapper: RegionMapper, address: str, region: str, rule: str, scope: int) -> None:
    """cidr > country (Regions.codes, Location.countries) > continent > nearest > default."""
    assert mapper.locate(address) == RegionAnswer(region, scope, rule)


def test_nearest_when_no_code_matches(mapper: RegionMapper) -> None:
    """Oceania is in no map, so Melbourne goes to the location nearest its coordinates."""
    answer = mapper.locate("214.0.1.1")  # AU / OC, -37.8159 144.9669
    km = haversine_km(-37.8159, 144.9669, 1.35, 103.82)
    assert answer == RegionAnswer("ap-south", 24, f"nearest ({km:.0f} km)")


@pytest.mark.parametrize(
    ("address", "region"),
    [
        ("81.2.69.142", "eu-west"),  # London -> Amsterdam
        ("89.160.20.112", "eu-north"),  # Linköping -> Stockholm
        ("216.160.83.56", "us-west"),  # Milton WA -> Seattle
        ("175.16.199.5", "ap-east"),  # Changchun -> Tokyo
        ("214.0.0.1", "ap-south"),  # Singapore
        ("2a02:e220::1", "eu-north"),  # Saudi Arabia (25, 45): Stockholm is nearer than Amsterdam
        ("2001:218::1", "ap-east"),  # Tokyo
    ],
)
def test_nearest_by_great_circle(
    locations: dict[str, Location], city_db: GeoDatabase, address: str, region: str
) -> None:
    """With no maps at all, every located client goes to its nearest location."""
    no_maps = {name: Location(loc.name, loc.lat, loc.lon) for name, loc in locations.items()}
    answer = RegionMapper(no_maps, Regions("us-east"), city_db).locate(address)
    assert answer.region == region
    assert answer.rule.startswith("nearest (")


def test_nearest_distance_is_to_the_chosen_location(city_db: GeoDatabase) -> None:
    """The rule names the distance from the client's coordinates to the chosen location."""
    here = {"ams": Location("ams", 52.37, 4.90), "nyc": Location("nyc", 40.71, -74.0)}
    answer = RegionMapper(here, Regions("nyc"), city_db).locate("81.2.69.142")
    assert answer.region == "ams"
    assert answer.rule == f"nearest ({haversine_km(51.5142, -0.0931, 52.37, 4.90):.0f} km)"


@pytest.mark.parametrize(
    ("codes", "countries", "region", "rule"),
    [
        ({"SA": "sa-east", "AS": "ap-east"}, (), "ap-east", "continent AS"),
        ({"SA": "sa-east"}, (), "eu-north", "nearest"),
        ({"SA": "sa-east", "AS": "ap-east"}, ("SA",), "eu-west", "country SA"),
    ],
    ids=["SA-is-a-continent-in-codes", "not-saudi-arabia", "country-via-location"],
)
def test_continent_codes_are_continents_in_codes(
    locations: dict[str, Location],
    city_db: GeoDatabase,
    codes: dict[str, str],
    countries: tuple[str, ...],
    region: str,
    rule: str,
) -> None:
    """In Regions.codes "SA" means South America; Saudi Arabia is named via Location.countries."""
    locs = dict(locations)
    locs["eu-west"] = Location("eu-west", 52.37, 4.90, countries=countries)
    answer = RegionMapper(locs, Regions("us-east", codes=codes), city_db).locate("2a02:e220::1")
    assert answer.region == region
    assert answer.rule.startswith(rule)


def test_regions_codes_win_over_location_countries(
    locations: dict[str, Location], city_db: GeoDatabase
) -> None:
    """A country in both the regions map and a location's list goes where the map says."""
    rules = Regions("eu-west", codes={"SE": "us-east"})
    assert RegionMapper(locations, rules, city_db).locate("89.160.20.112").region == "us-east"


def test_location_continent_field_does_not_route(
    locations: dict[str, Location], country_db: GeoDatabase
) -> None:
    """A location's own continent is display only: an unmapped EU client gets the default."""
    mapper = RegionMapper(locations, Regions("us-east"), country_db, merge_lookups=0)
    assert mapper.locate("81.2.69.142") == RegionAnswer("us-east", 31, "default (unmapped GB)")


@pytest.mark.parametrize(
    ("address", "rule", "scope"),
    [
        ("81.2.69.142", "default (unmapped GB)", 31),  # Country schema: no coordinates
        ("214.1.1.1", "default (no data)", 24),
    ],
)
def test_default_when_nothing_matches(
    locations: dict[str, Location], country_db: GeoDatabase, address: str, rule: str, scope: int
) -> None:
    """No code, no coordinates: the default region, and the reason says which."""
    mapper = RegionMapper(locations, Regions("sa-east"), country_db, merge_lookups=0)
    assert mapper.locate(address) == RegionAnswer("sa-east", scope, rule)


def test_without_database(locations: dict[str, Location]) -> None:
    """No database: CIDR maps still apply, everything else is default, for all of the space."""
    rules = Regions("eu-west", cidr=((net("10.0.0.0/8"), "us-east"),))
    mapper = RegionMapper(locations, rules, None)
    assert mapper.locate("10.1.2.3") == RegionAnswer("us-east", 8, "cidr 10.0.0.0/8")
    assert mapper.locate("2001:db8::1") == RegionAnswer("eu-west", 0, "default (no database)")
    # 11.0.0.0/8 differs from 10.0.0.0/8 in bit 8: the default holds for 11.0.0.0/8 only
    assert mapper.locate("11.0.0.1") == RegionAnswer("eu-west", 8, "default (no database)")
    assert mapper.locate("192.0.2.1") == RegionAnswer("eu-west", 1, "default (no database)")


def test_ipv6_in_ipv4_only_database(locations: dict[str, Location]) -> None:
    """An IPv4-only database says nothing about IPv6: default for the whole IPv6 space."""
    with GeoDatabase.open(MAXMIND / "MaxMind-DB-test-ipv4-24.mmdb") as db:
        answer = RegionMapper(locations, RULES, db).locate("2001:218::1")
    assert answer == RegionAnswer("eu-west", 0, "default (no data)")


def test_corrupt_record_claims_only_its_address(locations: dict[str, Location]) -> None:
    """A record that cannot be decoded gives the default with the longest scope."""
    with GeoDatabase.open(MAXMIND / "GeoIP2-City-Test-Broken-Double-Format.mmdb") as db:
        mapper = RegionMapper(locations, RULES, db, merge_lookups=0)
        assert mapper.locate("2.125.160.216") == RegionAnswer("eu-west", 32, "default (no data)")


CIDR_CASES = [
    # operator CIDRs, address, region, rule, scope
    # an operator CIDR mapping elsewhere inside the database network lengthens the scope
    (["175.16.199.128/25=us-east"], "175.16.199.5", "ap-east", "continent AS", 25),
    (["175.16.199.64/26=us-east"], "175.16.199.5", "ap-east", "continent AS", 26),
    (["175.16.199.64/26=us-east"], "175.16.199.130", "ap-east", "continent AS", 25),
    (["175.16.199.4/32=us-east"], "175.16.199.5", "ap-east", "continent AS", 32),
    # ... but not when it maps to the same region
    (["175.16.199.128/25=ap-east"], "175.16.199.5", "ap-east", "continent AS", 24),
    (["175.16.199.128/25=ap-east"], "175.16.199.200", "ap-east", "cidr 175.16.199.128/25", 25),
    # most specific prefix first, whatever the order in the file
    (["10.0.0.0/8=ap-east", "10.1.2.0/24=us-east"], "10.1.2.3", "us-east", "cidr 10.1.2.0/24", 24),
    (["10.1.2.0/24=us-east", "10.0.0.0/8=ap-east"], "10.1.2.3", "us-east", "cidr 10.1.2.0/24", 24),
    # a CIDR with a more specific CIDR elsewhere inside it: scope avoids the inner one
    (["10.0.0.0/8=ap-east", "10.1.2.0/24=us-east"], "10.9.9.9", "ap-east", "cidr 10.0.0.0/8", 13),
    (["10.0.0.0/8=ap-east", "10.1.2.0/24=us-east"], "10.1.3.1", "ap-east", "cidr 10.0.0.0/8", 24),
    (["10.0.0.0/8=ap-east", "10.1.2.0/24=ap-east"], "10.9.9.9", "ap-east", "cidr 10.0.0.0/8", 8),
    # the CIDR overrides the database, and the first of two identical networks wins
    (
        ["81.2.69.142/32=sa-east", "81.2.69.142/32=us-east"],
        "81.2.69.142",
        "sa-east",
        "cidr 81.2.69.142/32",
        32,
    ),
    # IPv6
    (["2001:218::/48=us-east"], "2001:218:0:1::1", "us-east", "cidr 2001:218::/48", 48),
    (["2001:218::/48=us-east"], "2001:218:1::1", "ap-east", "continent AS", 48),
    (["2001:218::/48=us-east"], "2001:218:8000::1", "ap-east", "continent AS", 33),
    (
        ["2001:db8::/32=ap-east", "2001:db8:1::/48=us-east"],
        "2001:db8::1",
        "ap-east",
        "cidr 2001:db8::/32",
        48,
    ),
]


@pytest.mark.parametrize(("cidrs", "address", "region", "rule", "scope"), CIDR_CASES)
def test_operator_cidrs_and_scope(
    locations: dict[str, Location],
    city_db: GeoDatabase,
    cidrs: list[str],
    address: str,
    region: str,
    rule: str,
    scope: int,
) -> None:
    """CIDR maps override the database, most specific first, and shape the scope prefix."""
    pairs = tuple((net(c.split("=")[0]), c.split("=")[1]) for c in cidrs)
    rules = Regions("eu-west", cidr=pairs, codes={"AS": "ap-east"})
    mapper = RegionMapper(locations, rules, city_db, merge_lookups=0)
    assert mapper.locate(address) == RegionAnswer(region, scope, rule)


def test_location_cidrs_count_as_operator_cidrs(
    locations: dict[str, Location], city_db: GeoDatabase
) -> None:
    """Location.cidrs route like Regions.cidr; Regions.cidr wins for the same network."""
    locs = dict(locations)
    locs["sa-east"] = Location("sa-east", -23.55, -46.63, cidrs=(net("198.51.100.0/24"),))
    locs["us-west"] = Location("us-west", 47.61, -122.33, cidrs=(net("203.0.113.0/24"),))
    rules = Regions("eu-west", cidr=((net("203.0.113.0/24"), "ap-east"),))
    mapper = RegionMapper(locs, rules, city_db)
    assert mapper.locate("198.51.100.7") == RegionAnswer("sa-east", 24, "cidr 198.51.100.0/24")
    assert mapper.locate("203.0.113.7") == RegionAnswer("ap-east", 24, "cidr 203.0.113.0/24")


ECS_CASES = [
    # family, source prefix, address, region, rule, scope
    (1, 32, "81.2.69.142", "ap-east", "cidr 81.2.69.140/30", 30),
    (1, 29, "216.160.83.56", "us-east", "continent NA", 29),  # source /29 = db /29
    (1, 32, "216.160.83.56", "us-east", "continent NA", 29),  # narrower source, db scope
    (1, 24, "175.16.199.0", "ap-east", "continent AS", 24),
    (1, 16, "175.16.0.0", "eu-west", "default (no data)", 16),  # clamped to the source
    (1, 8, "10.0.0.0", "eu-west", "default (no data)", 8),
    (2, 56, "2001:218::", "ap-east", "continent AS", 32),
    (2, 32, "2001:218::", "ap-east", "continent AS", 32),
    (2, 24, "2001:200::", "eu-west", "default (no data)", 24),  # db /28 clamped to /24
    (2, 128, "::ffff:81.2.69.142", "ap-east", "cidr 81.2.69.140/30", 126),  # v4-mapped
    (2, 124, "::ffff:89.160.20.112", "eu-north", "country SE", 124),  # db /28 = /124
    (2, 120, "::ffff:81.2.69.0", "eu-west", "default (no data)", 120),  # db /25 = /121
    (2, 48, "2002:5102:458e::", "us-east", "country GB", 47),  # 6to4, via the database
]


@pytest.mark.parametrize(("family", "source", "address", "region", "rule", "scope"), ECS_CASES)
def test_locate_ecs(
    mapper: RegionMapper,
    family: int,
    source: int,
    address: str,
    region: str,
    rule: str,
    scope: int,
) -> None:
    """The ECS subnet is located like an address; the scope never exceeds the source prefix."""
    wire = ip_address(address).packed[: (source + 7) // 8]
    assert mapper.locate_ecs(family, source, wire) == RegionAnswer(region, scope, rule)


def test_ecs_scope_clamped_when_an_inner_cidr_needs_more_bits(
    locations: dict[str, Location],
) -> None:
    """A /16 query next to an inner CIDR would need /23; the reply carries /16."""
    rules = Regions(
        "eu-west", cidr=((net("10.0.0.0/8"), "ap-east"), (net("10.1.2.0/24"), "us-east"))
    )
    mapper = RegionMapper(locations, rules, None)
    assert mapper.locate("10.1.0.0").scope_prefix == 23
    assert mapper.locate_ecs(1, 16, bytes([10, 1])) == RegionAnswer(
        "ap-east", 16, "cidr 10.0.0.0/8"
    )


@pytest.mark.parametrize(
    ("family", "source", "address"),
    [
        (1, 24, b"\x51\x02\x45\x8e"),  # bits past the source prefix are ignored
        (1, 24, b"\x51\x02\x45"),
        (1, 24, b"\x51\x02\x45\x00"),
    ],
)
def test_ecs_address_is_masked_and_padded(
    mapper: RegionMapper, family: int, source: int, address: bytes
) -> None:
    """Every spelling of 81.2.69.0/24 gives the answer for 81.2.69.0/24."""
    assert mapper.locate_ecs(family, source, address) == mapper.locate_ecs(1, 24, b"\x51\x02\x45")
    assert mapper.locate_ecs(1, 24, b"\x51\x02\x45").scope_prefix <= 24


@pytest.mark.parametrize(
    ("family", "source", "address", "message"),
    [
        (3, 8, b"\x01", "family"),
        (0, 8, b"\x01", "family"),
        (1, 33, b"\x01\x02\x03\x04", "out of range"),
        (2, 129, b"\x20", "out of range"),
        (1, -1, b"", "out of range"),
        (1, 32, b"\x01\x02\x03\x04\x05", "too long"),
    ],
)
def test_ecs_invalid_input(
    mapper: RegionMapper, family: int, source: int, address: bytes, message: str
) -> None:
    """Malformed ECS values raise ValueError (the resolver turns them into FORMERR)."""
    with pytest.raises(ValueError, match=message):
        mapper.locate_ecs(family, source, address)


@pytest.mark.parametrize(
    "address",
    ["81.2.69.142", IPv4Address("81.2.69.142"), "2001:218::1", IPv6Address("2001:218::1")],
)
def test_locate_takes_strings_and_address_objects(
    mapper: RegionMapper, address: str | IPv4Address | IPv6Address
) -> None:
    """A string and the equivalent ipaddress object give the same answer."""
    assert mapper.locate(address) == mapper.locate(ip_address(str(address)))


def test_ipv4_mapped_source_is_located_as_ipv4(mapper: RegionMapper) -> None:
    """A dual-stack socket's ::ffff:a.b.c.d is IPv4: same region, scope counted in IPv6 bits."""
    v4 = mapper.locate("2.125.160.216")
    v6 = mapper.locate("::ffff:2.125.160.216")
    assert (v6.region, v6.rule, v6.scope_prefix) == (v4.region, v4.rule, v4.scope_prefix + 96)


def test_locate_rejects_garbage(mapper: RegionMapper) -> None:
    """A string that is not an address is a ValueError."""
    with pytest.raises(ValueError):
        mapper.locate("not-an-address")


def test_merging_widens_scope_over_same_region_neighbours(
    locations: dict[str, Location], loopback_db: GeoDatabase
) -> None:
    """127.1/16 (DE) and its no-data sibling 127.0/16 both map to eu-west: scope /15."""
    rules = Regions("eu-west", codes={"DE": "eu-west", "US": "us-east"})
    exact = RegionMapper(locations, rules, loopback_db, merge_lookups=0)
    merged = RegionMapper(locations, rules, loopback_db, merge_lookups=8)
    assert exact.locate("127.1.0.1").scope_prefix == 16
    assert merged.locate("127.1.0.1") == RegionAnswer("eu-west", 15, "country DE")
    assert merged.locate("127.0.0.1") == RegionAnswer("eu-west", 15, "default (no data)")
    assert merged.locate("127.2.0.1").scope_prefix == 16  # 127.3/16 is JP, elsewhere
    assert merged.locate("fd00:1::1").scope_prefix == 31  # fd00::/32 has no data: default


def test_merging_stops_at_its_lookup_budget(
    locations: dict[str, Location], city_db: GeoDatabase
) -> None:
    """More budget never narrows the scope, and a budget of 1 widens at most one step."""
    scopes = [
        RegionMapper(locations, RULES, city_db, merge_lookups=budget).locate("2.125.160.216")
        for budget in (0, 1, 8, 64)
    ]
    prefixes = [answer.scope_prefix for answer in scopes]
    assert prefixes == sorted(prefixes, reverse=True)
    assert prefixes[0] == 29 and prefixes[1] >= 28
    assert {answer.region for answer in scopes} == {"us-east"}


def test_negative_merge_budget_is_an_error(locations: dict[str, Location]) -> None:
    """merge_lookups counts lookups; it cannot be negative."""
    with pytest.raises(ValueError):
        RegionMapper(locations, RULES, None, merge_lookups=-1)


def _block(address: str, prefix: int) -> tuple[int, int, int]:
    ip = ip_address(address)
    bits = ip.max_prefixlen
    host = bits - prefix
    low = (int(ip) >> host) << host
    return low, low + (1 << host) - 1, bits


@pytest.mark.parametrize("budget", [0, 8, 64])
def test_every_address_in_the_scope_has_the_same_region(
    locations: dict[str, Location], city_db: GeoDatabase, budget: int
) -> None:
    """The scope prefix is honest: addresses sampled across the block all get the same region."""
    rules = Regions(
        "eu-west",
        cidr=(
            (net("81.2.69.140/30"), "ap-east"),
            (net("175.16.199.64/26"), "us-east"),
            (net("10.0.0.0/8"), "ap-east"),
            (net("10.1.2.0/24"), "us-east"),
            (net("2001:218:8000::/33"), "us-west"),
        ),
        codes={"GB": "us-east", "AS": "ap-east", "NA": "us-east"},
    )
    mapper = RegionMapper(locations, rules, city_db, merge_lookups=budget)
    reference = RegionMapper(locations, rules, city_db, merge_lookups=0)
    rng = random.Random(7871)
    addresses = [address for address, *_ in CITY_ADDRESSES]
    addresses += [str(IPv4Address(rng.getrandbits(32))) for _ in range(40)]
    for address in addresses:
        answer = mapper.locate(address)
        low, high, bits = _block(address, answer.scope_prefix)
        samples = {low, high} | {rng.randint(low, high) for _ in range(24)}
        for sample in samples:
            other = reference.locate(IPv4Address(sample) if bits == 32 else IPv6Address(sample))
            assert other.region == answer.region, (address, answer, sample, other)


CITY_ADDRESSES = [
    ("81.2.69.142",),
    ("81.2.69.139",),
    ("2.125.160.216",),
    ("89.160.20.112",),
    ("216.160.83.56",),
    ("175.16.199.5",),
    ("175.16.199.100",),
    ("67.43.156.1",),
    ("202.196.224.1",),
    ("214.0.1.1",),
    ("10.9.9.9",),
    ("10.1.3.1",),
    ("127.0.0.1",),
    ("2001:218::1",),
    ("2001:218:8000::1",),
    ("2a02:d180::1",),
    ("2a02:e220::1",),
]


def _most_specific(cidrs: list[tuple[IPNetwork, str]], ip: IPv4Address) -> str | None:
    best: tuple[IPNetwork, str] | None = None
    for network, location in cidrs:
        if ip in network and (best is None or network.prefixlen > best[0].prefixlen):
            best = (network, location)
    return None if best is None else best[1]


@pytest.mark.parametrize("use_db", [False, True], ids=["no-db", "loopback-db"])
def test_random_cidr_sets_keep_scopes_honest(loopback_db: GeoDatabase, use_db: bool) -> None:
    """Random nested CIDR maps: the most specific CIDR wins, and every scope block is uniform.

    Each block is checked at its ends, at every CIDR edge inside it, and at random points.
    """
    rng = random.Random(1034)
    locs = {name: Location(name, 0.0, 0.0) for name in "abcd"}
    db = loopback_db if use_db else None
    for _ in range(60):
        cidrs: list[tuple[IPNetwork, str]] = []
        for _ in range(rng.randint(1, 10)):
            prefixlen = rng.randint(8, 30)
            start = ((127 << 24) | rng.getrandbits(24)) >> (32 - prefixlen) << (32 - prefixlen)
            cidrs.append((ip_network((start, prefixlen)), rng.choice("abcd")))
        rules = Regions("a", cidr=tuple(cidrs), codes={"DE": "b", "US": "c", "JP": "a"})
        exact = RegionMapper(locs, rules, db, merge_lookups=0)
        merged = RegionMapper(locs, rules, db, merge_lookups=16)
        for _ in range(10):
            ip = IPv4Address((127 << 24) | rng.getrandbits(24))
            if db is None:
                assert exact.locate(ip).region == (_most_specific(cidrs, ip) or "a")
            for mapper in (exact, merged):
                answer = mapper.locate(ip)
                low, high, _ = _block(str(ip), answer.scope_prefix)
                points = {low, high} | {rng.randint(low, high) for _ in range(16)}
                for network, _ in cidrs:
                    for edge in (int(network.network_address), int(network.broadcast_address)):
                        if low <= edge <= high:
                            points.add(edge)
                for point in points:
                    assert exact.locate(IPv4Address(point)).region == answer.region, (ip, answer)
