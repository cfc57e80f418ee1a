"""The allocator's TTL plan reaches the answers: shorter TTLs only where a change is due."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message

from shadowdns.app import merge_ttl_plan
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.snapshot import LiveState, build_snapshot, load_config

DATA = Path(__file__).resolve().parents[2] / "data"
ZONES = DATA / "zones" / "geo"
CITY = DATA / "geoip" / "maxmind-test" / "GeoIP2-City-Test.mmdb"


def ttl_for(engine: QueryEngine, subnet: str, fast: bool = True) -> int:
    addr, prefix = subnet.split("/")
    query = dns.message.make_query("app.geo.test.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(addr, int(prefix))])
    wire = query.to_wire()
    reply = engine.respond(wire, ("127.0.0.1", 53)) if fast else engine._slow(
        wire, False, ("127.0.0.1", 53))
    assert reply is not None
    return int(dns.message.from_wire(reply).answer[0].ttl)


def test_planned_ttl_applies_to_its_region_only() -> None:
    """A (DI, region) in the plan answers with the shortened TTL; other regions keep the
    DI's TTL; fast and slow paths agree."""
    config = load_config(ZONES, CITY)
    plain = QueryEngine(build_snapshot(config, LiveState()))
    assert ttl_for(plain, "216.160.83.56/29") == 30
    planned = QueryEngine(build_snapshot(config, LiveState(ttls={("app.geo.test.", "us"): 5})))
    assert ttl_for(planned, "216.160.83.56/29") == 5
    assert ttl_for(planned, "216.160.83.56/29", fast=False) == 5
    assert ttl_for(planned, "81.2.69.0/24") == 30


def test_a_new_plan_keeps_the_pending_entries_of_earlier_ones() -> None:
    """A later generation's plan does not drop an earlier shadow's cut that is still to
    come; entries already over are dropped."""
    earlier = [{"di": "a.", "region": "us", "from": 570.0, "until": 600.0, "ttl": 5},
               {"di": "b.", "region": "eu", "from": 100.0, "until": 130.0, "ttl": 5}]
    later = [{"di": "c.", "region": "jp", "from": 870.0, "until": 900.0, "ttl": 5}]
    merged = merge_ttl_plan(earlier, later, 300.0)
    assert [(e["di"], e["region"]) for e in merged] == [("a.", "us"), ("c.", "jp")]
