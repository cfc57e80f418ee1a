"""The cached mapper: same answers as the mapper, bounded, one lookup per hit."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address

import pytest

from shadowdns.geoip import CachedRegionMapper, GeoDatabase, Locator, RegionMapper
from shadowdns.zones.policy import Location, Regions

RULES = Regions("eu-west", codes={"EU": "eu-west", "NA": "us-east", "AS": "ap-east"})

SOURCES: list[str | IPv4Address] = [
    "81.2.69.142",
    "216.160.83.56",
    "2001:218::1",
    "127.0.0.1",
    IPv4Address("214.0.1.1"),
]
SUBNETS = [
    (1, 24, bytes([81, 2, 69])),
    (1, 32, bytes([216, 160, 83, 56])),
    (2, 56, ip_address("2001:218::").packed[:7]),
    (2, 120, ip_address("::ffff:81.2.69.142").packed[:15]),
]


@pytest.fixture
def mapper(locations: dict[str, Location], city_db: GeoDatabase) -> RegionMapper:
    """A plain mapper over the City test database."""
    return RegionMapper(locations, RULES, city_db)


def test_cached_answers_equal_uncached(mapper: RegionMapper) -> None:
    """Every answer through the cache is the mapper's answer, and a repeat is the same object."""
    cached = CachedRegionMapper(mapper)
    for source in SOURCES:
        first = cached.locate(source)
        assert first == mapper.locate(source)
        assert cached.locate(source) is first
    for family, prefix, address in SUBNETS:
        first = cached.locate_ecs(family, prefix, address)
        assert first == mapper.locate_ecs(family, prefix, address)
        assert cached.locate_ecs(family, prefix, address) is first


def test_hits_and_misses_are_counted(mapper: RegionMapper) -> None:
    """Statistics say how often the cache answered."""
    cached = CachedRegionMapper(mapper, maxsize=10)
    for _ in range(3):
        cached.locate("81.2.69.142")
        cached.locate_ecs(1, 24, bytes([81, 2, 69]))
    stats = cached.cache_info()
    assert (stats.hits, stats.misses, stats.size, stats.maxsize) == (4, 2, 2, 20)


@pytest.mark.parametrize("maxsize", [1, 4, 16])
def test_cache_is_bounded(mapper: RegionMapper, maxsize: int) -> None:
    """However many distinct clients arrive, each cache keeps at most maxsize entries."""
    cached = CachedRegionMapper(mapper, maxsize=maxsize)
    for n in range(100):
        cached.locate(IPv4Address(0x51024500 + n))
        cached.locate_ecs(1, 24, bytes([81, 2, n]))
    assert cached.cache_info().size == 2 * maxsize
    # the most recent entries survive and still answer correctly
    assert cached.locate_ecs(1, 24, bytes([81, 2, 99])) == mapper.locate_ecs(1, 24, b"\x51\x02\x63")
    assert cached.cache_info().hits == 1


def test_least_recently_used_goes_first(mapper: RegionMapper) -> None:
    """A client asked again stays cached while an idle one is evicted."""
    cached = CachedRegionMapper(mapper, maxsize=2)
    cached.locate("81.2.69.142")
    cached.locate("216.160.83.56")
    cached.locate("81.2.69.142")  # refresh
    cached.locate("2001:218::1")  # evicts 216.160.83.56
    before = cached.cache_info().hits
    cached.locate("81.2.69.142")
    assert cached.cache_info().hits == before + 1
    cached.locate("216.160.83.56")
    assert cached.cache_info().hits == before + 1


def test_errors_are_not_cached(mapper: RegionMapper) -> None:
    """Bad input raises every time and takes no cache slot."""
    cached = CachedRegionMapper(mapper, maxsize=4)
    for _ in range(2):
        with pytest.raises(ValueError):
            cached.locate("not-an-address")
        with pytest.raises(ValueError):
            cached.locate_ecs(3, 8, b"\x01")
    assert cached.cache_info().size == 0


def test_both_mappers_are_locators(mapper: RegionMapper) -> None:
    """The resolver can hold either behind the Locator protocol."""
    locators: list[Locator] = [mapper, CachedRegionMapper(mapper)]
    answers = {locator.locate("81.2.69.142") for locator in locators}
    assert len(answers) == 1


def test_negative_size_is_an_error(mapper: RegionMapper) -> None:
    """A cache cannot hold fewer than zero entries."""
    with pytest.raises(ValueError):
        CachedRegionMapper(mapper, maxsize=-1)
