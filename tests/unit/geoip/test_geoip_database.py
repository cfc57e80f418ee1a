"""Reading MaxMind databases: the four facts per record, prefix lengths, bad files."""

from __future__ import annotations

import importlib.util
from ipaddress import ip_address
from pathlib import Path

import pytest

from shadowdns.errors import ConfigError
from shadowdns.geoip import GeoDatabase, GeoInfo, bundled_path
from shadowdns.geoip import database as database_module

DATA = Path(__file__).resolve().parents[2] / "data" / "geoip"
MAXMIND = DATA / "maxmind-test"

CITY_CASES = [
    # address, country, continent, lat, lon, prefix_len
    ("81.2.69.142", "GB", "EU", 51.5142, -0.0931, 31),
    ("2.125.160.216", "GB", "EU", 51.75, -1.25, 29),
    ("89.160.20.112", "SE", "EU", 58.4167, 15.6167, 28),
    ("216.160.83.56", "US", "NA", 47.2513, -122.3149, 29),
    ("175.16.199.5", "CN", "AS", 43.88, 125.3228, 24),
    ("67.43.156.1", "BT", "AS", 27.5, 90.5, 24),
    ("202.196.224.1", "PH", "AS", 13.0, 122.0, 20),
    ("214.0.0.1", "SG", "AS", 1.336, 103.7716, 24),
    ("214.0.1.1", "AU", "OC", -37.8159, 144.9669, 24),
    ("2.3.3.1", None, "EU", None, None, 24),  # continent only
    ("2001:218::1", "JP", "AS", 35.68536, 139.75309, 32),
    ("2a02:e220::1", "SA", "AS", 25.0, 45.0, 30),  # Saudi Arabia, not South America
    ("2a02:d180::1", "DE", "EU", 51.5, 10.5, 29),
    ("::ffff:81.2.69.142", "GB", "EU", 51.5142, -0.0931, 127),  # IPv4-mapped, in IPv6 bits
    ("2002:5102:458e::1", "GB", "EU", 51.5142, -0.0931, 47),  # 6to4 of 81.2.69.142
]


@pytest.mark.parametrize(("address", "country", "continent", "lat", "lon", "prefix"), CITY_CASES)
def test_city_lookup(
    city_db: GeoDatabase,
    address: str,
    country: str | None,
    continent: str | None,
    lat: float | None,
    lon: float | None,
    prefix: int,
) -> None:
    """The City test database yields country, continent, coordinates and network length."""
    assert city_db.lookup(ip_address(address)) == GeoInfo(country, continent, lat, lon, prefix)


@pytest.mark.parametrize(
    ("address", "country", "continent", "prefix"),
    [
        ("81.2.69.142", "GB", "EU", 31),
        ("89.160.20.112", "SE", "EU", 28),
        ("216.160.83.56", "US", "NA", 29),
        ("50.114.0.1", "US", "NA", 22),
        ("2001:218::1", "JP", "AS", 32),
        ("2a02:d180::1", "DE", "EU", 29),
    ],
)
def test_country_lookup_has_codes_but_no_coordinates(
    country_db: GeoDatabase, address: str, country: str, continent: str, prefix: int
) -> None:
    """The Country schema carries codes only: lat and lon stay None."""
    assert country_db.lookup(ip_address(address)) == GeoInfo(country, continent, None, None, prefix)


@pytest.mark.parametrize(
    ("address", "prefix"),
    [("127.0.0.1", 8), ("10.1.2.3", 8), ("214.1.1.1", 24), ("2001:480::1", 44), ("::1", 104)],
)
def test_network_without_record_is_empty_with_its_prefix(
    city_db: GeoDatabase, address: str, prefix: int
) -> None:
    """Loopback, private and unlisted networks: no facts, but the network's length is known."""
    info = city_db.lookup(ip_address(address))
    assert info == GeoInfo(None, None, None, None, prefix)
    assert info is not None and info.empty


def test_geolite_city_test_database() -> None:
    """The GeoLite2 flavour of the City layout reads the same way."""
    with GeoDatabase.open(MAXMIND / "GeoLite2-City-Test.mmdb") as db:
        assert db.database_type == "GeoLite2-City"
        assert db.lookup(ip_address("2001:480::1")) == GeoInfo("US", "NA", 32.7203, -117.1552, 43)


def test_ipv6_in_ipv4_only_database_is_none() -> None:
    """An IPv4-only database cannot speak for IPv6 addresses: lookup says None."""
    with GeoDatabase.open(MAXMIND / "MaxMind-DB-test-ipv4-24.mmdb") as db:
        assert db.ip_version == 4
        assert db.lookup(ip_address("2001:218::1")) is None
        info = db.lookup(ip_address("1.1.1.3"))
        assert info is not None and info.empty and info.prefix_len == 31


def test_corrupt_record_is_none_and_counted() -> None:
    """A record the reader cannot decode is "no data", never an exception on the query path."""
    with GeoDatabase.open(MAXMIND / "GeoIP2-City-Test-Broken-Double-Format.mmdb") as db:
        assert db.lookup(ip_address("81.2.69.142")) is None
        assert db.lookup(ip_address("2001:218::1")) is None
        assert db.lookup_errors == 2
        info = db.lookup(ip_address("1.1.1.1"))  # the search tree itself is fine
        assert info is not None and info.empty


@pytest.mark.parametrize(
    "path",
    [
        MAXMIND / "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        DATA / "README.md",
        DATA / "does-not-exist.mmdb",
    ],
    ids=["invalid-node-count", "not-a-database", "missing"],
)
def test_bad_file_is_a_config_error_naming_it(path: Path) -> None:
    """Opening a missing or invalid database raises ConfigError with the file name."""
    with pytest.raises(ConfigError) as caught:
        GeoDatabase.open(path)
    (problem,) = caught.value.problems
    assert problem.file == str(path)
    assert "cannot open GeoIP database" in problem.reason


def test_default_is_the_bundled_geolite2_city() -> None:
    """default() opens the GeoLite2-City shipped by maxminddb-geolite2."""
    path = bundled_path()
    assert path is not None and path.name == "GeoLite2-City.mmdb"
    db = GeoDatabase.default()
    assert db is not None
    with db:
        assert db.database_type == "GeoLite2-City"
        assert db.path == str(path)
        assert "GeoLite2-City" in db.describe()
        info = db.lookup(ip_address("127.0.0.1"))
        assert info is not None and info.empty


def test_default_without_the_bundled_package_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without maxminddb-geolite2 there is no default database, and that is not an error."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        if name == database_module.BUNDLED_PACKAGE:
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert bundled_path() is None
    assert GeoDatabase.default() is None


def test_closed_database_refuses_lookups() -> None:
    """After close() a lookup fails loudly instead of pretending there is no data."""
    db = GeoDatabase.open(MAXMIND / "GeoIP2-City-Test.mmdb")
    db.close()
    with pytest.raises(ValueError):
        db.lookup(ip_address("81.2.69.142"))
