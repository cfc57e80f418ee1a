"""Client address to region: ECS or source address, MaxMind DB, CIDR maps, nearest location.

Like CoreDNS's geoip plugin this part never answers DNS; it only labels a query with the
client's region (the name of a policy location) and the ECS scope prefix that label holds for.

* `database`  the MaxMind DB reader (bundled GeoLite2-City by default) -> `GeoInfo`
* `distance`  haversine and the nearest location
* `regions`   the rules (cidr > country > continent > nearest > default), the scope prefix,
              and the mapper the snapshot compiles answers with
"""

from shadowdns.geoip.database import GeoDatabase, GeoInfo, bundled_path
from shadowdns.geoip.distance import haversine_km, nearest, nearest_km
from shadowdns.geoip.regions import (
    CONTINENTS,
    RegionAnswer,
    RegionMapper,
)

__all__ = [
    "CONTINENTS",
    "GeoDatabase",
    "GeoInfo",
    "RegionAnswer",
    "RegionMapper",
    "bundled_path",
    "haversine_km",
    "nearest",
    "nearest_km",
]
