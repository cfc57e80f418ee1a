"""Property test of the compact form of DI answers: for any DI (its primaries' locations,
IPv4 and IPv6 addresses or none, answers per query, TTL, resources down), every answer
the fast path joins from a `Compact` entry — header, question, the region's records cut
from the DI's blob, OPT — is byte for byte the dnspython slow path's, for every query
shape (RD, EDNS, ECS of each region, no ECS) and both families.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowdns.resolver.engine import Compact, QueryEngine
from shadowdns.resolver.snapshot import LiveState, build_snapshot, load_config

ZONE = """\
$ORIGIN cp.test.
$TTL 300
@ SOA ns hostmaster 1 3600 600 86400 60
@ NS ns
ns A 192.0.2.53
"""
HEAD = """\
locations:
  eu: {lat: 52.37, lon: 4.9, continent: EU}
  na: {lat: 38.9, lon: -77.04, continent: NA}
  ap: {lat: 35.68, lon: 139.69, continent: AS}
regions:
  cidr: {"10.1.0.0/16": eu, "10.2.0.0/16": na, "10.3.0.0/16": ap}
  default: eu
resources:
"""
LOCATIONS = ["eu", "na", "ap"]
SUBNETS = [None, "10.1.7.0/24", "10.2.7.0/24", "10.3.7.0/24"]

primary = st.tuples(st.sampled_from(LOCATIONS), st.booleans(), st.booleans()).filter(
    lambda p: p[1] or p[2])  # (location, has IPv4, has IPv6): at least one address
di_spec = st.tuples(st.lists(primary, min_size=1, max_size=4),
                    st.integers(1, 3),  # answers
                    st.integers(1, 86400),  # ttl
                    st.sampled_from(["primaries", "nodata"]),
                    st.sets(st.integers(0, 3)))  # positions of primaries down


def _queries() -> list[bytes]:
    out = []
    for qtype in ("A", "AAAA"):
        for subnet in SUBNETS:
            options = [] if subnet is None else [
                dns.edns.ECSOption(subnet.split("/")[0], int(subnet.split("/")[1]))]
            for rd in (True, False):
                query = dns.message.make_query("App.cp.test.", qtype, use_edns=0,
                                               options=options)
                if not rd:
                    query.flags &= ~dns.flags.RD
                out.append(query.to_wire())
        out.append(dns.message.make_query("app.cp.test.", qtype, use_edns=False).to_wire())
    return out


QUERIES = _queries()


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compact")
    (path / "cp.test.zone").write_text(ZONE)
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=di_spec)
def test_compact_answers_equal_the_slow_path(
        zones: Path, spec: tuple[list[tuple[str, bool, bool]], int, int, str, set[int]]
) -> None:
    """Whatever the DI's resources, the compact entry answers as dnspython renders."""
    primaries, answers, ttl, all_down, down = spec
    lines = [HEAD]
    for i, (location, v4, v6) in enumerate(primaries):
        fields = [f"location: {location}", "role: primary"]
        if v4:
            fields.append(f"address: 192.0.2.{10 + i}")
        if v6:
            fields.append(f'address6: "2001:db8::{10 + i:x}"')
        lines.append(f"  p{i}: {{{', '.join(fields)}}}\n")
    ids = ", ".join(f"p{i}" for i in range(len(primaries)))
    lines.append(f"dis:\n  app: {{primaries: [{ids}], ttl: {ttl}, answers: {answers}, "
                 f"all_down: {all_down}}}\n")
    (zones / "cp.test.policy.yaml").write_text("".join(lines))
    config = load_config(zones)
    live = replace(LiveState(), down=frozenset(f"p{i}" for i in down
                                                if i < len(primaries)))
    engine = QueryEngine(build_snapshot(config, live))
    addr = ("10.9.0.1", 5353)
    for _ in range(2):  # compiled on the first pass, from the table on the second
        for wire in QUERIES:
            got = engine.respond(wire, addr)
            assert got == engine._slow(wire, False, addr), dns.message.from_wire(wire)
    assert [type(e) for e in engine.table.compact.values()] == [Compact]
