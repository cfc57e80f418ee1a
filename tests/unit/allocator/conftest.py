"""A small world for allocator tests: a primary in eu, standbys in jp, kr and br."""

from __future__ import annotations

import dns.name
import pytest

from shadowdns.zones.policy import (
    DI,
    AllocationPolicy,
    HealthCheck,
    Location,
    Policy,
    Regions,
    Resource,
)

APP = "app.example.com."


def make_policy(max_shadows: int = 2, threshold: float = 50.0, min_hold: float = 600.0,
                lead_time: float = 0.0, ttl: int = 30, check_jp: bool = False) -> Policy:
    locations = {
        "eu": Location("eu", 50.1, 8.7),
        "jp": Location("jp", 35.7, 139.7),
        "kr": Location("kr", 37.5, 127.0),
        "br": Location("br", -23.5, -46.6),
    }
    check = HealthCheck("tcp", interval=1, timeout=0.5, port=9) if check_jp else None
    resources = {
        "p-eu": Resource("p-eu", "eu", "primary", address="192.0.2.10"),
        "s-jp": Resource("s-jp", "jp", "standby", address="203.0.113.1", capacity=100,
                         warmup=60, check=check),
        "s-jp2": Resource("s-jp2", "jp", "standby", address="203.0.113.2", capacity=1000,
                          cost=3, warmup=60),
        "s-kr": Resource("s-kr", "kr", "standby", address="203.0.113.3", capacity=1000),
        "s-br": Resource("s-br", "br", "standby", address="203.0.113.4", capacity=1000),
        "s-eu": Resource("s-eu", "eu", "standby", address="192.0.2.20", capacity=1000),
    }
    name = dns.name.from_text(APP)
    di = DI(name, ("p-eu",), ("s-jp", "s-jp2", "s-kr", "s-br", "s-eu"), ttl=ttl,
            policy=AllocationPolicy(threshold=threshold, lead_time=lead_time,
                                    max_shadows=max_shadows, min_hold=min_hold))
    return Policy(dns.name.from_text("example.com."), locations, Regions(default="eu"),
                  resources, {name: di})


@pytest.fixture
def policy() -> Policy:
    return make_policy()
