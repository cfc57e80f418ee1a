"""The generated loopback database: 127.N.0.0/16 and fd00:N::/32 stand for countries."""

from __future__ import annotations

import importlib.util
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType

import pytest

from shadowdns.geoip import GeoDatabase, GeoInfo, RegionAnswer, RegionMapper
from shadowdns.zones.policy import Location, Regions

DATA = Path(__file__).resolve().parents[2] / "data" / "geoip"


@pytest.mark.parametrize(
    ("address", "country", "continent", "lat", "lon", "prefix"),
    [
        ("127.1.0.1", "DE", "EU", 52.5, 13.4, 16),
        ("127.2.0.1", "US", "NA", 38.9, -77.0, 16),
        ("127.3.255.254", "JP", "AS", 35.7, 139.7, 16),
        ("127.4.0.1", "BR", "SA", -23.5, -46.6, 16),
        ("127.5.0.1", "AU", "OC", -33.9, 151.2, 16),
        ("fd00:1::1", "DE", "EU", 52.5, 13.4, 32),
        ("fd00:2::1", "US", "NA", 38.9, -77.0, 32),
        ("fd00:3::1", "JP", "AS", 35.7, 139.7, 32),
        ("127.0.0.1", None, None, None, None, 16),
        ("127.6.0.1", None, None, None, None, 15),
        ("::1", None, None, None, None, 98),
    ],
)
def test_loopback_database_maps_127_n_to_countries(
    loopback_db: GeoDatabase,
    address: str,
    country: str | None,
    continent: str | None,
    lat: float | None,
    lon: float | None,
    prefix: int,
) -> None:
    """Each 127.N.0.0/16 has its country, continent and coordinates; 127.0.0.1 has none."""
    assert loopback_db.lookup(ip_address(address)) == GeoInfo(country, continent, lat, lon, prefix)


@pytest.mark.parametrize(
    ("address", "region", "rule"),
    [
        ("127.1.0.1", "eu", "country DE"),
        ("127.2.0.1", "us", "continent NA"),
        ("127.3.0.1", "ap", "continent AS"),
        ("127.4.0.1", "sa", "country BR"),
        ("127.5.0.1", "ap", "nearest"),  # Sydney: Tokyo is nearer than São Paulo
        ("127.0.0.1", "eu", "default (no data)"),
        ("::1", "eu", "default (no data)"),
        ("fd00:2::53", "us", "continent NA"),
    ],
)
def test_loopback_clients_route_by_source_address(
    loopback_db: GeoDatabase, address: str, region: str, rule: str
) -> None:
    """A server on 127.0.0.1 can tell its loopback test clients apart by 127.N."""
    locations = {
        "eu": Location("eu", 50.1, 8.7),
        "us": Location("us", 39.0, -77.5),
        "ap": Location("ap", 35.7, 139.7),
        "sa": Location("sa", -23.5, -46.6, countries=("BR",)),
    }
    rules = Regions("eu", codes={"DE": "eu", "NA": "us", "AS": "ap"})
    answer = RegionMapper(locations, rules, loopback_db).locate(address)
    assert answer.region == region
    assert answer.rule.startswith(rule)


def test_loopback_ecs(loopback_db: GeoDatabase) -> None:
    """ECS from a loopback test client: the database's /16, clamped to the source prefix."""
    locations = {"eu": Location("eu", 50.1, 8.7), "ap": Location("ap", 35.7, 139.7)}
    mapper = RegionMapper(locations, Regions("eu", codes={"JP": "ap"}), loopback_db)
    assert mapper.locate_ecs(1, 24, bytes([127, 3, 9])) == RegionAnswer("ap", 16, "country JP")
    assert mapper.locate_ecs(1, 12, bytes([127, 3])) == RegionAnswer("eu", 12, "default (no data)")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_loopback_mmdb", DATA / "make_loopback_mmdb.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_database_is_what_the_script_makes(tmp_path: Path) -> None:
    """Regenerating loopback-city.mmdb gives the committed bytes (the script is the source)."""
    pytest.importorskip("mmdb_writer")
    out = _script().build(tmp_path / "loopback-city.mmdb")
    assert out.read_bytes() == (DATA / "loopback-city.mmdb").read_bytes()
