"""The public surface of shadowdns.geoip."""

from __future__ import annotations

import importlib

import pytest

import shadowdns.geoip


@pytest.mark.parametrize(
    "module",
    [
        "shadowdns.geoip",
        "shadowdns.geoip.database",
        "shadowdns.geoip.distance",
        "shadowdns.geoip.regions",
    ],
)
def test_all_names_exist_and_are_sorted(module: str) -> None:
    """Every name in __all__ is defined, listed once, in sorted order."""
    imported = importlib.import_module(module)
    names = imported.__all__
    assert names == sorted(set(names))
    for name in names:
        assert hasattr(imported, name), name


def test_package_exports_the_api() -> None:
    """The names the resolver, the CLI and the API use are importable from the package."""
    for name in (
        "GeoDatabase",
        "GeoInfo",
        "RegionAnswer",
        "RegionMapper",
        "haversine_km",
        "nearest",
    ):
        assert name in shadowdns.geoip.__all__
