"""Generate `loopback-city.mmdb`: a tiny GeoIP2-City-shaped database for loopback tests.

Loopback tests cannot come from real places, so (like Knot DNS's geoip tests, which map
`127.255.N.0/24` to countries) this database gives parts of 127.0.0.0/8 and of the ULA range
fd00::/8 a country, a continent and coordinates. A resolver bound to 127.0.0.1 can then be
queried from 127.N.0.1 (Linux routes all of 127.0.0.0/8 to lo) and route by source address.

Run from the repository root with the test extra installed (mmdb-writer):

    .venv/bin/python tests/data/geoip/make_loopback_mmdb.py

The output is deterministic and committed next to this script.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MMDBWriter
from netaddr import IPSet

OUT = Path(__file__).with_name("loopback-city.mmdb")
BUILD_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z, fixed so the output is reproducible

# network -> (country, continent, latitude, longitude)
NETWORKS: dict[str, tuple[str, str, float, float]] = {
    "127.1.0.0/16": ("DE", "EU", 52.5, 13.4),
    "127.2.0.0/16": ("US", "NA", 38.9, -77.0),
    "127.3.0.0/16": ("JP", "AS", 35.7, 139.7),
    "127.4.0.0/16": ("BR", "SA", -23.5, -46.6),
    "127.5.0.0/16": ("AU", "OC", -33.9, 151.2),
    "fd00:1::/32": ("DE", "EU", 52.5, 13.4),
    "fd00:2::/32": ("US", "NA", 38.9, -77.0),
    "fd00:3::/32": ("JP", "AS", 35.7, 139.7),
}


def record(country: str, continent: str, lat: float, lon: float) -> dict[str, Any]:
    """A record in the GeoIP2-City layout (only the fields shadowdns reads)."""
    return {
        "country": {"iso_code": country},
        "continent": {"code": continent},
        "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
    }


class _Writer(MMDBWriter):
    """mmdb-writer stamps the current time into the metadata; pin it instead."""

    def _build_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def build(out: Path = OUT) -> Path:
    """Write the database to `out` and return its path."""
    writer = _Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type="shadowdns-Loopback-City",
        languages=["en"],
        description="shadowdns loopback test database (127.N.0.0/16, fd00:N::/32)",
    )
    for network, (country, continent, lat, lon) in NETWORKS.items():
        writer.insert_network(IPSet([network]), record(country, continent, lat, lon))
    writer.to_db_file(str(out))
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
