"""Geo routing end to end: the real server, real UDP/TCP, dnspython as the client.

Clients are placed by ECS (MaxMind's City test database) or by their source address
(a generated database that maps 127.N.0.0/16 to countries, so loopback tests geolocate).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from shadowdns.store import HealthState, open_store
from tests.serverproc import ServerProcess

DATA = Path(__file__).resolve().parent.parent / "data"
ZONES = DATA / "zones" / "geo"
CITY_TEST = DATA / "geoip" / "maxmind-test" / "GeoIP2-City-Test.mmdb"
LOOPBACK = DATA / "geoip" / "loopback-city.mmdb"

P_EU, P_US, S_JP, S_BR = "192.0.2.10", "198.51.100.10", "203.0.113.30", "203.0.113.40"


def start(geoip: Path, state: Path) -> ServerProcess:
    return ServerProcess(["serve", "--zones", str(ZONES), "--listen", "127.0.0.1:0",
                          "--geoip", str(geoip), "--state", str(state)]).start()


@pytest.fixture
def ecs_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    state = tmp_path / "state.db"
    server = start(CITY_TEST, state)
    try:
        yield server, state
    finally:
        server.stop()


def ask(server: ServerProcess, name: str, rdtype: str = "A", ecs: str | None = None,
        tcp: bool = False, source: str | None = None) -> dns.message.Message:
    options = []
    if ecs is not None:
        addr, prefix = ecs.split("/")
        options.append(dns.edns.ECSOption(addr, int(prefix)))
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=3)
    return dns.query.udp(query, server.host, port=server.port, timeout=3,
                         source=source)


def addresses(msg: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rr in msg.answer
                  if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for r in rr)


def scope(msg: dns.message.Message) -> int | None:
    for option in msg.options:
        if isinstance(option, dns.edns.ECSOption):
            return int(option.scopelen)
    return None


def shadowdns(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "shadowdns", *args], capture_output=True,
                         text=True, check=True)
    return out.stdout


def wait_for(server: ServerProcess, name: str, expect: list[str], ecs: str,
             deadline: float = 2.0) -> float:
    """Poll until the answer equals `expect`; return how long it took."""
    start_t = time.monotonic()
    while True:
        got = addresses(ask(server, name, ecs=ecs))
        elapsed = time.monotonic() - start_t
        if got == expect:
            return elapsed
        if elapsed > deadline:
            raise AssertionError(f"answer still {got}, wanted {expect} after {elapsed:.2f}s")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("subnet", "expected", "why"),
    [
        ("81.2.69.0/24", [P_EU], "GB is mapped to eu by country code"),
        ("89.160.20.112/28", [P_EU], "SE falls to the EU continent map"),
        ("216.160.83.56/29", [P_US], "US is in NA"),
        ("175.16.199.0/24", [P_EU], "CN maps to jp; with no shadow the nearest primary is eu"),
        ("2001:218::/32", [P_EU], "IPv6 subnet in JP; nearest primary again"),
        ("198.18.0.0/24", [P_US], "operator CIDR override to br; nearest primary is us"),
    ],
)
def test_ecs_subnets_from_different_countries_get_their_regions_answer(
    ecs_server: tuple[ServerProcess, Path], subnet: str, expected: list[str], why: str
) -> None:
    """An A query carrying ECS is answered with the primary nearest the subnet's region."""
    server, _ = ecs_server
    msg = ask(server, "app.geo.test", ecs=subnet)
    assert msg.rcode() == dns.rcode.NOERROR, why
    assert addresses(msg) == expected, why
    source = int(subnet.split("/")[1])
    got_scope = scope(msg)
    assert got_scope is not None and 0 < got_scope <= source, why


def test_scope_is_the_database_network_clamped_to_the_source(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """81.2.69.142 sits in a /31 of the test database: a /32 asks gives scope 31, a /24
    gives 24 (never wider than the source)."""
    server, _ = ecs_server
    assert scope(ask(server, "app.geo.test", ecs="81.2.69.142/32")) == 31
    assert scope(ask(server, "app.geo.test", ecs="81.2.69.0/24")) == 24


def test_static_names_answer_with_scope_zero(ecs_server: tuple[ServerProcess, Path]) -> None:
    """An answer that does not depend on location carries ECS scope 0."""
    server, _ = ecs_server
    msg = ask(server, "www.geo.test", ecs="216.160.83.56/29")
    assert addresses(msg) == ["192.0.2.80"]
    assert scope(msg) == 0


def test_source_prefix_zero_answers_for_the_resolver_with_scope_zero(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """ECS /0 means no client information: the resolver's address (loopback → default eu)."""
    server, _ = ecs_server
    msg = ask(server, "app.geo.test", ecs="0.0.0.0/0")
    assert addresses(msg) == [P_EU]
    assert scope(msg) == 0


@pytest.mark.parametrize(
    "option",
    [
        dns.edns.GenericOption(dns.edns.OptionType.ECS, bytes([0, 3, 24, 0, 1, 2, 3])),
        dns.edns.GenericOption(dns.edns.OptionType.ECS, bytes([0, 1, 33, 0, 1, 2, 3, 4, 5])),
        dns.edns.GenericOption(dns.edns.OptionType.ECS, bytes([0, 1, 24, 0, 1, 2, 3, 4])),
        dns.edns.GenericOption(dns.edns.OptionType.ECS, bytes([0, 1, 24, 8, 1, 2, 3])),
    ],
    ids=["family-3", "prefix-longer-than-ipv4", "address-too-long", "scope-set-in-query"],
)
def test_bad_ecs_gets_formerr(ecs_server: tuple[ServerProcess, Path],
                              option: dns.edns.Option) -> None:
    """RFC 7871 §7.1.2: a malformed ECS option is answered with FORMERR, for DI and static names."""
    server, _ = ecs_server
    for name in ("app.geo.test", "www.geo.test"):
        query = dns.message.make_query(name, "A", use_edns=0, options=[option])
        reply = dns.query.udp(query, server.host, port=server.port, timeout=3)
        assert reply.rcode() == dns.rcode.FORMERR, name


def test_aaaa_follows_the_same_choice_and_is_nodata_without_ipv6(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """AAAA uses the same resource as A; a chosen resource without IPv6 gives NODATA + SOA."""
    server, state = ecs_server
    assert addresses(ask(server, "app.geo.test", "AAAA", ecs="216.160.83.56/29")) == \
        ["2001:db8:a::10"]
    shadowdns("shadow", "add", "app.geo.test.", "s-jp", "--region", "jp", "--state", str(state))
    wait_for(server, "app.geo.test", [S_JP], "175.16.199.0/24")
    msg = ask(server, "app.geo.test", "AAAA", ecs="175.16.199.0/24")
    assert msg.rcode() == dns.rcode.NOERROR
    assert msg.answer == []
    assert [rr.rdtype for rr in msg.authority] == [dns.rdatatype.SOA]


def test_hand_made_shadow_changes_answers_within_a_second(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """`shadowdns shadow add` reaches the running server's answers without a restart; remove
    takes it back; clients of other regions are not moved."""
    server, state = ecs_server
    jp = "175.16.199.0/24"
    assert addresses(ask(server, "app.geo.test", ecs=jp)) == [P_EU]
    out = shadowdns("shadow", "add", "app.geo.test.", "s-jp", "--region", "jp",
                    "--state", str(state))
    assert "s-jp" in out
    took = wait_for(server, "app.geo.test", [S_JP], jp, deadline=2.0)
    assert took < 2.0
    assert addresses(ask(server, "app.geo.test", ecs="216.160.83.56/29")) == [P_US]
    assert addresses(ask(server, "alias.geo.test", ecs=jp, tcp=True)) == [S_JP]
    listed = shadowdns("shadow", "list", "--json", "--state", str(state))
    assert '"resource": "s-jp"' in listed
    shadowdns("shadow", "remove", "app.geo.test.", "s-jp", "--region", "jp",
              "--state", str(state))
    wait_for(server, "app.geo.test", [P_EU], jp, deadline=2.0)


def test_a_shadow_of_another_region_serves_when_nearer_than_every_primary(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """A jp client with no local shadow gets br's shadow only if it is nearer than the
    primaries; São Paulo is farther from Tokyo than Frankfurt, so eu stays."""
    server, state = ecs_server
    shadowdns("shadow", "add", "app.geo.test.", "s-br", "--region", "br", "--state", str(state))
    wait_for(server, "app.geo.test", [S_BR], "198.18.0.0/24")
    assert addresses(ask(server, "app.geo.test", ecs="175.16.199.0/24")) == [P_EU]


def test_down_primary_is_skipped_and_all_down_follows_the_policy(
    ecs_server: tuple[ServerProcess, Path],
) -> None:
    """A primary marked down is not answered; when all are down `app` fails open to every
    primary and `solo` (all_down: nodata) answers NODATA."""
    server, state = ecs_server
    us = "216.160.83.56/29"
    store = open_store(state)
    try:
        store.set_health_state(HealthState("p-us", "down", time.time(), "test"))
        wait_for(server, "app.geo.test", [P_EU], us)
        store.set_health_state(HealthState("p-eu", "down", time.time(), "test"))
        wait_for(server, "app.geo.test", sorted([P_EU, P_US]), us)
        msg = ask(server, "solo.geo.test", ecs=us)
        assert msg.rcode() == dns.rcode.NOERROR and msg.answer == []
        store.set_health_state(HealthState("p-us", "up", time.time(), "test"))
        wait_for(server, "solo.geo.test", [P_US], us)
    finally:
        store.close()


def test_counters_reach_the_store(tmp_path: Path) -> None:
    """Answers are counted per (DI, region, kind) and flushed to the store's minute table."""
    state = tmp_path / "state.db"
    server = start(CITY_TEST, state)
    try:
        for _ in range(5):
            ask(server, "app.geo.test", ecs="216.160.83.56/29")
        for _ in range(3):
            ask(server, "app.geo.test", ecs="81.2.69.0/24")
        ask(server, "www.geo.test", ecs="81.2.69.0/24")
    finally:
        assert server.stop() == 0
    store = open_store(state)
    try:
        now = time.time()
        series = store.demand_series("minute", now - 600, now + 60)
    finally:
        store.close()
    totals = {key: sum(v for _, v in points) for key, points in series.items()}
    assert totals == {("app.geo.test.", "us"): 5, ("app.geo.test.", "eu"): 3}


def _loopback_source_works() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.2.0.9", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _loopback_source_works(), reason="cannot bind 127.2.0.9 here")
@pytest.mark.parametrize(
    ("source", "expected"),
    [("127.1.0.9", P_EU), ("127.2.0.9", P_US), ("127.3.0.9", P_EU), ("127.0.0.1", P_EU)],
    ids=["DE", "US", "JP-nearest-primary", "no-data-default"],
)
def test_source_address_routing_on_loopback(tmp_path: Path, source: str, expected: str) -> None:
    """Without ECS the packet's source address is located (127.N maps to countries)."""
    server = start(LOOPBACK, tmp_path / "state.db")
    try:
        msg = ask(server, "app.geo.test", source=source, ecs=None)
        assert addresses(msg) == [expected]
        assert scope(msg) is None
    finally:
        server.stop()


def test_explain_prints_region_answer_scope_and_reason(tmp_path: Path) -> None:
    """`shadowdns explain --json` gives the same answer the server gives, with the reason."""
    import json

    out = shadowdns("explain", "app.geo.test", "--client", "216.160.83.56/29", "--zones",
                    str(ZONES), "--geoip", str(CITY_TEST), "--state", str(tmp_path / "s.db"),
                    "--create", "--json")
    report = json.loads(out)
    assert report["qname"] == "app.geo.test."
    assert report["qtype"] == "A"
    assert report["region"] == "us"
    assert report["answers"] == [P_US]
    assert report["scope_prefix"] == 29
    assert "p-us" in report["reason"]
