"""Micro-benchmark of client -> region lookups per second, one core.

    .venv/bin/python bench/geoip_lookup.py [--db PATH] [--clients N] [--seconds S]

Clients are random public IPv4 /24 subnets (seeded), asked as ECS options (family 1, source
/24), against the bundled GeoLite2-City unless --db is given. Reports the raw database lookup,
and the mapper (scope merging on and off). The query path does not call the mapper per
packet: answers are compiled per region, so these figures bound compile and cache-miss cost.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from shadowdns.geoip import GeoDatabase, RegionMapper
from shadowdns.zones.policy import Location, Regions

LOCATIONS = {
    location.name: location
    for location in (
        Location("eu-west", 52.37, 4.90, continent="EU"),
        Location("us-east", 38.90, -77.04, continent="NA"),
        Location("us-west", 37.77, -122.42, continent="NA"),
        Location("ap-east", 35.68, 139.69, continent="AS"),
        Location("sa-east", -23.55, -46.63, continent="SA"),
    )
}
REGIONS = Regions("eu-west", codes={"EU": "eu-west", "NA": "us-east", "JP": "ap-east"})


def subnets(count: int, seed: int = 7871) -> list[bytes]:
    """`count` distinct public /24s as 3-byte ECS addresses."""
    rng = random.Random(seed)
    seen: set[bytes] = set()
    while len(seen) < count:
        a = rng.randint(1, 223)
        if a in (10, 100, 127, 169, 172, 192, 198, 203):
            continue
        seen.add(bytes([a, rng.randint(0, 255), rng.randint(0, 255)]))
    return sorted(seen)


def rate(label: str, call: Callable[[bytes], object], keys: list[bytes], seconds: float) -> float:
    """Calls per second of `call` over `keys`, repeated for about `seconds`."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for key in keys:
            call(key)
        done += len(keys)
        now = time.perf_counter()
        if now >= deadline:
            break
    per_second = done / (now - start)
    print(f"{label:<44} {per_second:>12,.0f} /s  {1e6 / per_second:8.2f} µs")
    return per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None, help="MaxMind DB (default: bundled)")
    parser.add_argument("--clients", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    db = GeoDatabase.open(args.db) if args.db else GeoDatabase.default()
    if db is None:
        raise SystemExit("no database: install maxminddb-geolite2 or pass --db")
    print(db.describe())
    keys = subnets(args.clients)
    addresses = {key: IPv4Address(key + b"\0") for key in keys}

    rate("GeoDatabase.lookup", lambda k: db.lookup(addresses[k]), keys, args.seconds)
    for merge in (0, 8):
        mapper = RegionMapper(LOCATIONS, REGIONS, db, merge_lookups=merge)
        rate(
            f"RegionMapper.locate_ecs (merge_lookups={merge})",
            lambda k, m=mapper: m.locate_ecs(1, 24, k),  # type: ignore[misc]
            keys,
            args.seconds,
        )
    db.close()


if __name__ == "__main__":
    main()
