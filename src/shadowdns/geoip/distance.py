"""Great-circle distance, and the location nearest to a point.

"Nearest" is the last geographic rule before the default region (a client whose country and
continent no map names goes to the closest location), and the allocator's `within_km`
standby selector measures with the same function, so both agree on what "near" means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from shadowdns.zones.policy import Location

__all__ = ["EARTH_RADIUS_KM", "haversine_km", "nearest", "nearest_km"]

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the usual sphere for haversine distances."""


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2.0) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest_km(
    locations: Iterable[Location] | Mapping[str, Location], lat: float, lon: float
) -> tuple[str, float]:
    """The name of the location closest to (lat, lon) and its distance in km.

    Ties go to the location listed first. Raises ValueError when there is no location.
    """
    items = locations.values() if isinstance(locations, Mapping) else locations
    best: str | None = None
    best_km = math.inf
    for location in items:
        km = haversine_km(lat, lon, location.lat, location.lon)
        if km < best_km:
            best, best_km = location.name, km
    if best is None:
        raise ValueError("no locations to choose the nearest from")
    return best, best_km


def nearest(locations: Iterable[Location] | Mapping[str, Location], lat: float, lon: float) -> str:
    """The name of the location closest to (lat, lon); ties go to the one listed first."""
    return nearest_km(locations, lat, lon)[0]
