"""Fixtures of the store tests: a fresh SQLite store and a small policy to write into it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import dns.name
import pytest

from shadowdns.store.sqlite import SQLiteStore
from shadowdns.zones.policy import DI, Location, Policy, Regions, Resource

ORIGIN = "example.com."


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "state.db") as opened:
        yield opened


def dump(path: Path) -> list[str]:
    """Every statement that recreates the database: equal dumps mean equal contents."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def make_policy(
    origin: str = ORIGIN,
    *,
    locations: dict[str, tuple[float, float]] | None = None,
    resources: dict[str, tuple[str, str, float]] | None = None,
    dis: dict[str, tuple[tuple[str, ...], tuple[str, ...], float | None]] | None = None,
) -> Policy:
    """A policy from compact tables: location -> (lat, lon); resource -> (location, role,
    capacity); DI label -> (primaries, standby, standby_within_km)."""
    locations = locations or {
        "eu-west": (52.37, 4.90),
        "eu-central": (50.11, 8.68),
        "us-east": (38.90, -77.04),
        "ap-east": (35.68, 139.69),
    }
    resources = resources or {
        "web-eu-1": ("eu-west", "primary", 1000.0),
        "web-us-1": ("us-east", "primary", 1000.0),
        "sb-eu-1": ("eu-central", "standby", 300.0),
        "sb-us-1": ("us-east", "standby", 400.0),
        "sb-ap-1": ("ap-east", "standby", 500.0),
    }
    dis = dis or {
        "app": (("web-eu-1", "web-us-1"), ("sb-ap-1", "sb-us-1", "sb-eu-1"), None),
        "api": (("web-eu-1",), (), 1000.0),
    }
    origin_name = dns.name.from_text(origin)
    return Policy(
        origin=origin_name,
        locations={name: Location(name, lat, lon) for name, (lat, lon) in locations.items()},
        regions=Regions(default=next(iter(locations))),
        resources={
            rid: Resource(
                id=rid,
                location=loc,
                role="primary" if role == "primary" else "standby",
                address=f"192.0.2.{i + 1}",
                capacity=capacity,
            )
            for i, (rid, (loc, role, capacity)) in enumerate(resources.items())
        },
        dis={
            dns.name.from_text(label, origin_name): DI(
                name=dns.name.from_text(label, origin_name),
                primaries=primaries,
                standby=standby,
                standby_within_km=within,
            )
            for label, (primaries, standby, within) in dis.items()
        },
    )
