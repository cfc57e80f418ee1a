"""Fixtures of the geoip tests: the committed test databases and a small policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowdns.geoip import GeoDatabase
from shadowdns.zones.policy import Location

DATA = Path(__file__).resolve().parents[2] / "data" / "geoip"
MAXMIND = DATA / "maxmind-test"
CITY = MAXMIND / "GeoIP2-City-Test.mmdb"
GEOLITE_CITY = MAXMIND / "GeoLite2-City-Test.mmdb"
COUNTRY = MAXMIND / "GeoIP2-Country-Test.mmdb"
IPV4_ONLY = MAXMIND / "MaxMind-DB-test-ipv4-24.mmdb"
BROKEN_RECORDS = MAXMIND / "GeoIP2-City-Test-Broken-Double-Format.mmdb"
BROKEN_TREE = MAXMIND / "GeoIP2-City-Test-Invalid-Node-Count.mmdb"
LOOPBACK = DATA / "loopback-city.mmdb"

_LOCATIONS: dict[str, Location] = {
    location.name: location
    for location in (
        Location("eu-west", 52.37, 4.90, continent="EU"),
        Location("eu-north", 59.33, 18.07, continent="EU", countries=("SE",)),
        Location("us-east", 38.90, -77.04, continent="NA"),
        Location("us-west", 47.61, -122.33, continent="NA"),
        Location("ap-east", 35.68, 139.69, continent="AS"),
        Location("ap-south", 1.35, 103.82, continent="AS"),
        Location("sa-east", -23.55, -46.63, continent="SA"),
    )
}


@pytest.fixture(scope="session")
def locations() -> dict[str, Location]:
    """Seven locations on four continents; eu-north also claims Sweden by country."""
    return dict(_LOCATIONS)


def _open(path: Path) -> Iterator[GeoDatabase]:
    db = GeoDatabase.open(path)
    yield db
    db.close()


@pytest.fixture(scope="session")
def city_db() -> Iterator[GeoDatabase]:
    """MaxMind's GeoIP2-City test database."""
    yield from _open(CITY)


@pytest.fixture(scope="session")
def country_db() -> Iterator[GeoDatabase]:
    """MaxMind's GeoIP2-Country test database (no coordinates)."""
    yield from _open(COUNTRY)


@pytest.fixture(scope="session")
def loopback_db() -> Iterator[GeoDatabase]:
    """The generated loopback database (127.N.0.0/16 -> countries)."""
    yield from _open(LOOPBACK)
