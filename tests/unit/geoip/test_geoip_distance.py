"""Great-circle distances and the nearest location."""

from __future__ import annotations

import math

import pytest

from shadowdns.geoip import haversine_km, nearest, nearest_km
from shadowdns.geoip.distance import EARTH_RADIUS_KM
from shadowdns.zones.policy import Location

LONDON = (51.5074, -0.1278)
PARIS = (48.8566, 2.3522)
NEW_YORK = (40.7128, -74.0060)
SYDNEY = (-33.8688, 151.2093)


@pytest.mark.parametrize(
    ("a", "b", "km", "tolerance"),
    [
        (LONDON, LONDON, 0.0, 1e-9),
        (LONDON, PARIS, 343.6, 1.0),
        (LONDON, NEW_YORK, 5570.2, 5.0),
        (NEW_YORK, SYDNEY, 15_989.0, 20.0),
        ((0.0, 179.0), (0.0, -179.0), 2 * math.pi * EARTH_RADIUS_KM / 180, 1e-6),
        ((90.0, 0.0), (-90.0, 0.0), math.pi * EARTH_RADIUS_KM, 1e-6),
        ((0.0, 0.0), (0.0, 180.0), math.pi * EARTH_RADIUS_KM, 1e-6),
    ],
    ids=["same", "london-paris", "london-nyc", "nyc-sydney", "dateline", "poles", "antipodes"],
)
def test_haversine_known_distances(
    a: tuple[float, float], b: tuple[float, float], km: float, tolerance: float
) -> None:
    """Distances match known great-circle values, across the date line and pole to pole."""
    assert haversine_km(*a, *b) == pytest.approx(km, abs=tolerance)
    assert haversine_km(*b, *a) == pytest.approx(km, abs=tolerance)


@pytest.mark.parametrize(
    ("point", "expected"),
    [
        (LONDON, "eu-west"),
        ((59.9, 10.7), "eu-north"),  # Oslo
        (NEW_YORK, "us-east"),
        ((37.77, -122.42), "us-west"),  # San Francisco
        ((37.57, 126.98), "ap-east"),  # Seoul
        (SYDNEY, "ap-south"),
        ((-34.6, -58.4), "sa-east"),  # Buenos Aires
    ],
)
def test_nearest_picks_the_closest_location(
    locations: dict[str, Location], point: tuple[float, float], expected: str
) -> None:
    """nearest() names the location with the smallest great-circle distance."""
    assert nearest(locations.values(), *point) == expected
    assert nearest(locations, *point) == expected  # a Mapping of locations works too


def test_nearest_km_reports_the_distance(locations: dict[str, Location]) -> None:
    """nearest_km() also returns how far the winner is."""
    name, km = nearest_km(locations, *LONDON)
    assert name == "eu-west"
    assert km == pytest.approx(haversine_km(*LONDON, 52.37, 4.90))


def test_nearest_tie_goes_to_the_first_listed() -> None:
    """Equidistant locations: the one listed first wins, so answers are deterministic."""
    east = Location("east", 0.0, 10.0)
    west = Location("west", 0.0, -10.0)
    assert nearest([east, west], 0.0, 0.0) == "east"
    assert nearest([west, east], 0.0, 0.0) == "west"


def test_nearest_without_locations_is_an_error() -> None:
    """There is no nearest of nothing."""
    with pytest.raises(ValueError, match="no locations"):
        nearest([], 0.0, 0.0)
