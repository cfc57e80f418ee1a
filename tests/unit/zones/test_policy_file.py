"""The policy file: loading, every kind of problem with its line, round trip, JSON Schema."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.name
import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from shadowdns.errors import PolicyError, Problem
from shadowdns.zones.policy import (
    DI,
    AllocationPolicy,
    HealthCheck,
    Location,
    Policy,
    Regions,
    Resource,
)
from shadowdns.zones.policy_file import (
    adopt_checked,
    entry_to_mapping,
    load_policy,
    policy_from_mapping,
    policy_from_text,
    policy_json_schema,
    policy_to_mapping,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "demo" / "demo.example.policy.yaml"
DATA = ROOT / "tests" / "data" / "policies"
DEMO = dns.name.from_text("demo.example.")
ORIGIN = dns.name.from_text("example.com.")

LOC = """\
locations:
  eu-west: {lat: 52.37, lon: 4.90, continent: EU}
  us-east: {lat: 38.90, lon: -77.04, continent: NA}
"""
REG = """\
regions:
  map: {EU: eu-west, NA: us-east}
  default: eu-west
"""
RES = """\
resources:
  web-eu-1: {address: 192.0.2.10, location: eu-west, role: primary}
  web-us-1: {address: 198.51.100.10, location: us-east, role: primary}
  sb-us-1: {address: 198.51.100.20, location: us-east, role: standby}
"""
DIS = """\
dis:
  app: {primaries: [web-eu-1, web-us-1], standby: [sb-us-1]}
"""


def doc(locations: str = LOC, regions: str = REG, resources: str = RES, dis: str = DIS) -> str:
    """A small valid policy with any section replaced."""
    return locations + regions + resources + dis


def check(body: str) -> str:
    """A resource sb-us-2 whose check is `body`, appended to the default resources."""
    return RES + (
        "  sb-us-2:\n"
        "    address: 198.51.100.30\n"
        "    location: us-east\n"
        "    role: standby\n"
        f"    check: {body}\n"
    )


def marked_lines(text: str) -> list[int]:
    """1-based numbers of the lines marked `#<`: where the test expects a problem."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.rstrip().endswith("#<")]


def load_text(tmp_path: Path, text: str | bytes, origin: dns.name.Name = ORIGIN) -> Policy:
    path = tmp_path / "example.com.policy.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_policy(path, origin)


def problems_of(tmp_path: Path, text: str | bytes) -> tuple[Problem, ...]:
    with pytest.raises(PolicyError) as info:
        load_text(tmp_path, text)
    return info.value.problems


# --- a valid file --------------------------------------------------------------------------


def test_design_example_loads() -> None:
    """The example printed in DESIGN.md loads as it is, with the meanings it states."""
    policy = load_policy(DATA / "design.policy.yaml", ORIGIN)
    app = policy.dis[dns.name.from_text("app.example.com.")]
    assert app.primaries == ("web-eu-1", "web-us-1")
    assert app.standby == ("sb-ap-1",)
    assert policy.regions.codes == {"EU": "eu-west", "NA": "us-east", "JP": "ap-east"}
    assert policy.regions.cidr == ((ipaddress.ip_network("203.0.113.0/24"), "ap-east"),)
    assert policy.resources["sb-ap-1"].check == HealthCheck(
        type="http", url="http://127.0.0.1:8081/health", interval=2, timeout=1, rise=2, fall=3
    )


def _check_of(policy: Policy, rid: str) -> HealthCheck:
    check = policy.resources[rid].check
    assert check is not None
    return check


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, DEMO)


EXPECTED_EXAMPLE: list[tuple[str, Callable[[Policy], object], object]] = [
    ("origin", lambda p: p.origin, DEMO),
    (
        "ap-east",
        lambda p: p.locations["ap-east"],
        Location(
            "ap-east", 35.68, 139.69, "AS", ("JP", "KR"), (ipaddress.ip_network("127.255.3.0/24"),)
        ),
    ),
    ("eu-west", lambda p: p.locations["eu-west"], Location("eu-west", 52.37, 4.90, "EU")),
    ("default region", lambda p: p.regions.default, "eu-west"),
    (
        "first cidr",
        lambda p: p.regions.cidr[0],
        (ipaddress.ip_network("203.0.113.0/24"), "ap-east"),
    ),
    ("cidr count", lambda p: len(p.regions.cidr), 3),
    (
        "codes",
        lambda p: p.regions.codes,
        {"EU": "eu-west", "NA": "us-east", "SA": "us-east", "AS": "ap-east", "OC": "ap-east"},
    ),
    ("address6", lambda p: p.resources["web-us-1"].address6, "2001:db8::10"),
    (
        "expect_status",
        lambda p: _check_of(p, "web-us-1").expect_status,
        (200, 204),
    ),
    (
        "tcp check",
        lambda p: p.resources["web-eu-1"].check,
        HealthCheck(type="tcp", port=80, interval=2, timeout=1),
    ),
    ("warmup", lambda p: p.resources["sb-ap-1"].warmup, 300.0),
    ("role", lambda p: p.resources["sb-ap-1"].role, "standby"),
    ("IPv6-only", lambda p: p.resources["sb-us-2"].address, None),
    ("cost", lambda p: p.resources["sb-us-2"].cost, 0.5),
    (
        "command",
        lambda p: _check_of(p, "sb-us-2").command,
        ("/usr/local/bin/probe", "--fast", "2001:db8:2::20"),
    ),
    ("default knobs", lambda p: p.dis[_name("app")].policy, AllocationPolicy()),
    ("within_km", lambda p: p.dis[_name("api")].standby_within_km, 3000.0),
    ("no standby ids", lambda p: p.dis[_name("api")].standby, ()),
    ("answers", lambda p: p.dis[_name("api")].answers, 2),
    ("all_down", lambda p: p.dis[_name("api")].all_down, "nodata"),
    ("apex", lambda p: p.dis[_name("@")].primaries, ("web-eu-1",)),
    ("DI count", lambda p: len(p.dis), 3),
]


@pytest.mark.parametrize(
    ("read", "expected"), [c[1:] for c in EXPECTED_EXAMPLE], ids=[c[0] for c in EXPECTED_EXAMPLE]
)
def test_example_loads_into_expected_values(
    read: Callable[[Policy], object], expected: object
) -> None:
    """The documented example (examples/demo) loads into exactly the values it describes."""
    assert read(load_policy(EXAMPLE, DEMO)) == expected


def test_documented_example_is_the_example_file() -> None:
    """docs/policy.md shows the example file's content, so the two cannot drift apart."""
    docs = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    body = "".join(
        line + "\n"
        for line in EXAMPLE.read_text(encoding="utf-8").splitlines()
        if not line.startswith("#")
    ).strip()
    assert body in docs


# --- one problem at a time, on the right line --------------------------------------------

CASES: list[tuple[str, str, str]] = [
    # top level and shape
    (
        "unknown top-level key",
        doc() + "resource: {}  #<\n",
        "unknown key 'resource' (did you mean 'resources'?)",
    ),
    (
        "missing locations",
        REG.replace("regions:", "regions:  #<") + RES + DIS,
        "missing required key 'locations'",
    ),
    (
        "section of the wrong type",
        doc(
            locations="locations: [eu-west]  #<\n",
            regions=("regions: {default: eu-west}\n"),
            resources="",
            dis="",
        ),
        "locations: must be a mapping, got a list",
    ),
    ("root is a list", "- a  #<\n- b\n", "the policy must be a mapping, got a list"),
    ("empty file", "#<\n", "the policy is empty"),
    ("YAML syntax error", doc() + "dis2: {a: 1]  #<\n", "YAML syntax error"),
    ("two documents", doc() + "---  #<\nfoo: 1\n", "YAML syntax error"),
    (
        "unknown scalar tag",
        doc(regions="regions:\n  default: !where eu-west  #<\n"),
        "bad YAML value",
    ),
    (
        "collection tag",
        doc(regions="regions: !!set {default: eu-west}  #<\n"),
        "YAML tag tag:yaml.org,2002:set is not allowed",
    ),
    (
        "non-string key",
        doc(regions="regions:\n  map: {[EU]: eu-west}  #<\n  default: eu-west\n"),
        "regions.map: keys must be strings, got a list",
    ),
    # duplicates
    (
        "duplicate top-level key",
        doc() + "dis:  #<\n  www: {primaries: [web-eu-1]}\n",
        "duplicate key 'dis' (first at line 11)",
    ),
    (
        "duplicate nested key",
        doc(
            resources=RES
            + (
                "  sb-us-2:\n    address: 198.51.100.30\n    location: us-east\n    role: standby\n"
                "    location: eu-west  #<\n"
            )
        ),
        "resources.sb-us-2: duplicate key 'location' (first at",
    ),
    (
        "duplicate in a flow mapping",
        doc(
            regions=(
                "regions:\n  map: {EU: eu-west, NA: us-east, EU: us-east}  #<\n  default: eu-west\n"
            )
        ),
        "regions.map: duplicate key 'EU'",
    ),
    # locations
    (
        "unknown location key",
        doc(locations=LOC + "  ap-east: {lat: 1, lon: 2, lattitude: 3}  #<\n"),
        "locations.ap-east: unknown key 'lattitude'",
    ),
    (
        "latitude out of range",
        doc(locations=LOC + "  ap-east: {lat: 91, lon: 0}  #<\n"),
        "locations.ap-east.lat: must be >= -90 and <= 90, got 91",
    ),
    (
        "longitude out of range",
        doc(locations=LOC + "  ap-east: {lat: 0, lon: -180.5}  #<\n"),
        "locations.ap-east.lon: must be >= -180 and <= 180, got -180.5",
    ),
    (
        "latitude not a number",
        doc(locations=LOC + "  ap-east: {lat: north, lon: 0}  #<\n"),
        "locations.ap-east.lat: must be a finite number, got a string 'north'",
    ),
    (
        "latitude infinite",
        doc(locations=LOC + "  ap-east: {lat: .inf, lon: 0}  #<\n"),
        "locations.ap-east.lat: must be a finite number",
    ),
    (
        "missing longitude",
        doc(locations=LOC + "  ap-east:  #<\n    lat: 1\n"),
        "locations.ap-east: missing required key 'lon'",
    ),
    (
        "bad continent",
        doc(locations=LOC + "  ap-east: {lat: 1, lon: 2, continent: ASIA}  #<\n"),
        "locations.ap-east.continent: 'ASIA' is not a continent code",
    ),
    (
        "lower-case continent",
        doc(locations=LOC + "  ap-east: {lat: 1, lon: 2, continent: as}  #<\n"),
        "'as' is not a continent code (AF AN AS EU NA OC SA) (did you mean 'AS'?)",
    ),
    (
        "UK is not a country code",
        doc(locations=LOC + "  gb: {lat: 1, lon: 2, countries: [UK]}  #<\n"),
        "locations.gb.countries: 'UK' is not an ISO 3166-1 alpha-2 country code "
        "(did you mean 'GB'?)",
    ),
    (
        "lower-case country",
        doc(locations=LOC + "  jp: {lat: 1, lon: 2, countries: [jp]}  #<\n"),
        "'jp' is not an ISO 3166-1 alpha-2 country code (did you mean 'JP'?)",
    ),
    (
        "country claimed twice",
        doc(
            locations=(
                "locations:\n  eu-west: {lat: 52.37, lon: 4.90, countries: [NL]}\n"
                "  us-east: {lat: 38.90, lon: -77.04, countries: [US, NL]}  #<\n"
            )
        ),
        "locations.us-east.countries: NL is already listed for location 'eu-west'",
    ),
    (
        "location prefix with host bits",
        doc(locations=LOC + ('  ap-east: {lat: 1, lon: 2, cidrs: ["10.0.0.1/8"]}  #<\n')),
        "locations.ap-east.cidrs: '10.0.0.1/8' has host bits set (did you mean '10.0.0.0/8'?)",
    ),
    (
        "bad location name",
        doc(locations=LOC + '  "ap east": {lat: 1, lon: 2}  #<\n'),
        'locations["ap east"]: a location name must be 1-63 letters',
    ),
    # regions
    (
        "missing default",
        doc(regions="regions:  #<\n  map: {EU: eu-west}\n"),
        "regions: missing required key 'default'",
    ),
    (
        "unknown default",
        doc(regions="regions:\n  default: eu-wset  #<\n"),
        "regions.default: unknown location 'eu-wset' (did you mean 'eu-west'?)",
    ),
    (
        "misspelt regions key",
        doc(regions="regions:\n  default: eu-west\n  maps: {}  #<\n"),
        "regions: unknown key 'maps' (did you mean 'map'?)",
    ),
    (
        "region prefix with host bits",
        doc(regions=('regions:\n  cidr: {"192.0.2.1/24": eu-west}  #<\n  default: eu-west\n')),
        "'192.0.2.1/24' has host bits set (did you mean '192.0.2.0/24'?)",
    ),
    (
        "region prefix not a prefix",
        doc(regions=("regions:\n  cidr:\n    somewhere: eu-west  #<\n  default: eu-west\n")),
        "regions.cidr.somewhere: 'somewhere' is not a valid CIDR prefix",
    ),
    (
        "region prefix to an unknown location",
        doc(regions=("regions:\n  cidr:\n    2001:db8::/32: ap-east  #<\n  default: eu-west\n")),
        "regions.cidr[\"2001:db8::/32\"]: unknown location 'ap-east'",
    ),
    (
        "same prefix written twice",
        doc(
            regions=(
                "regions:\n  cidr:\n    2001:db8::/32: eu-west\n    2001:DB8::/32: eu-west  #<\n"
                "  default: eu-west\n"
            )
        ),
        "2001:db8::/32 is listed twice (first at line 6)",
    ),
    (
        "unknown code",
        doc(regions="regions:\n  map: {EU: eu-west, XY: eu-west}  #<\n  default: eu-west\n"),
        "regions.map.XY: 'XY' is not a continent code (AF AN AS EU NA OC SA) or an ISO 3166-1",
    ),
    (
        "code to an unknown location",
        doc(
            regions=("regions:\n  map:\n    EU: eu-west\n    NA: us-eats  #<\n  default: eu-west\n")
        ),
        "regions.map.NA: unknown location 'us-eats' (did you mean 'us-east'?)",
    ),
    (
        "code contradicting a location's countries",
        doc(
            locations=(
                "locations:\n  eu-west: {lat: 52.37, lon: 4.90, countries: [NL]}\n"
                "  us-east: {lat: 38.90, lon: -77.04}\n"
            ),
            regions=("regions:\n  map: {NL: us-east}  #<\n  default: eu-west\n"),
        ),
        "regions.map.NL: points to 'us-east' but locations.eu-west.countries claims it",
    ),
    (
        "prefix contradicting a location's cidrs",
        doc(
            locations=(
                "locations:\n  eu-west: {lat: 52.37, lon: 4.90, cidrs: [10.0.0.0/8]}\n"
                "  us-east: {lat: 38.90, lon: -77.04}\n"
            ),
            regions=("regions:\n  cidr: {10.0.0.0/8: us-east}  #<\n  default: eu-west\n"),
        ),
        "points to 'us-east' but locations.eu-west.cidrs claims it",
    ),
    # resources
    (
        "IPv6 in address",
        doc(
            resources=check("{type: tcp, port: 80}").replace(
                "address: 198.51.100.30", 'address: "2001:db8::30"  #<'
            )
        ),
        "resources.sb-us-2.address: '2001:db8::30' is an IPv6 address; put it in address6",
    ),
    (
        "IPv4 in address6",
        doc(
            resources=RES + ("  r6: {address6: 192.0.2.66, location: us-east, role: standby}  #<\n")
        ),
        "resources.r6.address6: '192.0.2.66' is an IPv4 address; put it in address",
    ),
    (
        "not an address",
        doc(
            resources=RES + ("  r6: {address: 192.0.2.300, location: us-east, role: standby}  #<\n")
        ),
        "resources.r6.address: '192.0.2.300' is not an IP address",
    ),
    (
        "no address at all",
        doc(resources=RES + "  r6:  #<\n    location: us-east\n    role: standby\n"),
        "resources.r6: needs an address (IPv4) or an address6 (IPv6), or both",
    ),
    (
        "unknown role",
        doc(resources=RES + ("  r6: {address: 192.0.2.66, location: us-east, role: backup}  #<\n")),
        "resources.r6.role: must be one of primary | standby, got 'backup'",
    ),
    (
        "missing role",
        doc(resources=RES + "  r6:  #<\n    address: 192.0.2.66\n    location: us-east\n"),
        "resources.r6: missing required key 'role'",
    ),
    (
        "resource in an unknown location",
        doc(
            resources=RES + ("  r6: {address: 192.0.2.66, location: ap-east, role: standby}  #<\n")
        ),
        "resources.r6.location: unknown location 'ap-east'",
    ),
    (
        "zero capacity",
        doc(
            resources=RES
            + ("  r6: {address: 192.0.2.66, location: us-east, role: standby, capacity: 0}  #<\n")
        ),
        "resources.r6.capacity: must be > 0, got 0",
    ),
    (
        "capacity as text",
        doc(
            resources=RES
            + ('  r6: {address: 192.0.2.66, location: us-east, role: standby, capacity: "9"}  #<\n')
        ),
        "resources.r6.capacity: must be a finite number, got a string '9'",
    ),
    (
        "negative warmup",
        doc(
            resources=RES
            + ("  r6: {address: 192.0.2.66, location: us-east, role: standby, warmup: -5}  #<\n")
        ),
        "resources.r6.warmup: must be >= 0, got -5",
    ),
    (
        "boolean cost",
        doc(
            resources=RES
            + ("  r6: {address: 192.0.2.66, location: us-east, role: standby, cost: yes}  #<\n")
        ),
        "resources.r6.cost: must be a finite number, got a boolean",
    ),
    (
        "unknown override",
        doc(
            resources=RES
            + ("  r6: {address: 192.0.2.66, location: us-east, role: standby, override: off}  #<\n")
        ),
        "resources.r6.override: must be one of obey | up | down, got 'off'",
    ),
    (
        "misspelt resource key",
        doc(
            resources=RES
            + ("  r6: {address: 192.0.2.66, location: us-east, role: standby, capacty: 3}  #<\n")
        ),
        "resources.r6: unknown key 'capacty' (did you mean 'capacity'?)",
    ),
    # checks
    (
        "http check without url",
        doc(resources=check("{type: http}  #<")),
        "resources.sb-us-2.check: missing required key 'url'",
    ),
    (
        "https check with an http url",
        doc(resources=check('{type: https, url: "http://x.test/health"}  #<')),
        "check.url: 'http://x.test/health' must use https:// in https checks",
    ),
    (
        "url without a host",
        doc(resources=check('{type: http, url: "http:///health"}  #<')),
        "check.url: 'http:///health' has no host",
    ),
    (
        "tcp check without port",
        doc(resources=check("{type: tcp}  #<")),
        "resources.sb-us-2.check: missing required key 'port'",
    ),
    (
        "port out of range",
        doc(resources=check("{type: tcp, port: 70000}  #<")),
        "check.port: must be >= 1 and <= 65535, got 70000",
    ),
    (
        "command as a shell string",
        doc(resources=check('{type: command, command: "ping x"}  #<')),
        "check.command: must be a list of arguments, not a shell string",
    ),
    (
        "empty command",
        doc(resources=check("{type: command, command: []}  #<")),
        "check.command: must not be empty",
    ),
    (
        "command with an empty program",
        doc(resources=check('{type: command, command: [""]}  #<')),
        "check.command: the program (first item) must not be empty",
    ),
    (
        "unknown check type",
        doc(resources=check("{type: icmp}  #<")),
        "check.type: must be one of http | https | tcp | dns | command, got 'icmp'",
    ),
    (
        "key that does not apply to the type",
        doc(resources=check('{type: tcp, port: 80, url: "http://x.test/"}  #<')),
        "check.url: does not apply to tcp checks",
    ),
    (
        "rise of zero",
        doc(resources=check("{type: tcp, port: 80, rise: 0}  #<")),
        "check.rise: must be >= 1, got 0",
    ),
    (
        "fractional fall",
        doc(resources=check("{type: tcp, port: 80, fall: 2.5}  #<")),
        "check.fall: must be an integer, got a number 2.5",
    ),
    (
        "zero interval",
        doc(resources=check("{type: tcp, port: 80, interval: 0, timeout: 0.5}  #<")),
        "check.interval: must be > 0, got 0",
    ),
    (
        "timeout above interval",
        doc(resources=check("{type: tcp, port: 80, interval: 1}  #<")),
        "check.timeout: must not exceed the interval (2 > 1)",
    ),
    (
        "bad expected status",
        doc(resources=check('{type: http, url: "http://x.test/", expect_status: [200, 700]}  #<')),
        "check.expect_status: must be >= 100 and <= 599, got 700",
    ),
    (
        "bad dns qname",
        doc(resources=check('{type: dns, qname: "a..b"}  #<')),
        "check.qname: not a valid DNS name",
    ),
    (
        "empty probe host",
        doc(resources=check('{type: tcp, port: 80, host: ""}  #<')),
        "check.host: must not be empty",
    ),
    (
        "merge of a scalar",
        doc(resources=check("{<<: 5, type: tcp, port: 80}  #<")),
        "a YAML merge (<<) needs a mapping",
    ),
    ("control character", doc(regions="regions:\n  default: eu-west\x07  #<\n"), "YAML error"),
    (
        "url with a bad port",
        doc(resources=check('{type: http, url: "http://x.test:99999/"}  #<')),
        "check.url: 'http://x.test:99999/' is not a valid URL",
    ),
    (
        "empty expected statuses",
        doc(resources=check('{type: http, url: "http://x.test/", expect_status: []}  #<')),
        "check.expect_status: must list at least one status code",
    ),
    (
        "country twice in one location",
        doc(locations=LOC + ("  ap-east: {lat: 1, lon: 2, countries: [JP, JP]}  #<\n")),
        "locations.ap-east.countries: JP is already listed for this location",
    ),
    (
        "default as a mapping",
        doc(regions="regions:\n  default: {name: eu-west}  #<\n"),
        "regions.default: must be a string, got a mapping",
    ),
    # dis
    (
        "unknown primary",
        doc(dis="dis:\n  app: {primaries: [web-eu-2]}  #<\n"),
        "dis.app.primaries: unknown resource 'web-eu-2' (did you mean 'web-eu-1'?)",
    ),
    (
        "standby resource as a primary",
        doc(dis="dis:\n  app:\n    primaries:\n      - sb-us-1  #<\n"),
        "dis.app.primaries: sb-us-1 is a standby resource, not a primary",
    ),
    (
        "primary resource as a standby",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    standby: [web-us-1]  #<\n")),
        "dis.app.standby: web-us-1 is a primary resource, not a standby",
    ),
    (
        "primary listed twice",
        doc(dis="dis:\n  app: {primaries: [web-eu-1, web-eu-1]}  #<\n"),
        "dis.app.primaries: web-eu-1 is listed twice",
    ),
    (
        "no primaries",
        doc(dis="dis:\n  app: {primaries: []}  #<\n"),
        "dis.app.primaries: must list at least one primary",
    ),
    (
        "missing primaries",
        doc(dis="dis:\n  app:  #<\n    ttl: 30\n"),
        "dis.app: missing required key 'primaries'",
    ),
    (
        "primaries as a string",
        doc(dis="dis:\n  app: {primaries: web-eu-1}  #<\n"),
        "dis.app.primaries: must be a list, got a string",
    ),
    (
        "name outside the zone",
        doc(dis="dis:\n  www.example.org.: {primaries: [web-eu-1]}  #<\n"),
        'dis["www.example.org."]: www.example.org. is outside the zone example.com.',
    ),
    (
        "relative name that repeats the origin",
        doc(dis=("dis:\n  www.example.com: {primaries: [web-eu-1]}  #<\n")),
        "'www.example.com' is relative, so it means www.example.com.example.com.; "
        "did you mean 'www.example.com.'",
    ),
    (
        "same DI twice",
        doc(
            dis=(
                "dis:\n  app: {primaries: [web-eu-1]}\n"
                "  APP.example.com.: {primaries: [web-us-1]}  #<\n"
            )
        ),
        "APP.example.com. is declared twice (first at line",
    ),
    (
        "wildcard DI",
        doc(dis='dis:\n  "*.app": {primaries: [web-eu-1]}  #<\n'),
        "a wildcard name cannot be a DI",
    ),
    (
        "invalid DNS name",
        doc(dis="dis:\n  a..b: {primaries: [web-eu-1]}  #<\n"),
        "dis[\"a..b\"]: 'a..b' is not a valid DNS name",
    ),
    (
        "empty DI name",
        doc(dis='dis:\n  "": {primaries: [web-eu-1]}  #<\n'),
        "a DI name must not be empty (use '@' for the zone apex)",
    ),
    (
        "ttl too large",
        doc(dis="dis:\n  app:\n    primaries: [web-eu-1]\n    ttl: 2147483648  #<\n"),
        "dis.app.ttl: must be >= 0 and <= 2147483647, got 2147483648",
    ),
    (
        "negative ttl",
        doc(dis="dis:\n  app: {primaries: [web-eu-1], ttl: -1}  #<\n"),
        "dis.app.ttl: must be >= 0 and <= 2147483647, got -1",
    ),
    (
        "fractional ttl",
        doc(dis="dis:\n  app: {primaries: [web-eu-1], ttl: 30.5}  #<\n"),
        "dis.app.ttl: must be an integer, got a number 30.5",
    ),
    (
        "zero answers",
        doc(dis="dis:\n  app: {primaries: [web-eu-1], answers: 0}  #<\n"),
        "dis.app.answers: must be >= 1, got 0",
    ),
    (
        "unknown all_down",
        doc(dis="dis:\n  app: {primaries: [web-eu-1], all_down: servfail}  #<\n"),
        "dis.app.all_down: must be one of primaries | nodata, got 'servfail'",
    ),
    (
        "misspelt DI key",
        doc(dis="dis:\n  app: {primaries: [web-eu-1], tll: 30}  #<\n"),
        "dis.app: unknown key 'tll' (did you mean 'ttl'?)",
    ),
    (
        "misspelt policy key",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    policy:\n      lead_tme: 60  #<\n")),
        "dis.app.policy: unknown key 'lead_tme' (did you mean 'lead_time'?)",
    ),
    (
        "negative max_shadows",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    policy: {max_shadows: -1}  #<\n")),
        "dis.app.policy.max_shadows: must be >= 0, got -1",
    ),
    (
        "quantile of one",
        doc(dis="dis:\n  app:\n    primaries: [web-eu-1]\n    policy: {quantile: 1}  #<\n"),
        "dis.app.policy.quantile: must be > 0 and < 1, got 1",
    ),
    (
        "bad model name",
        doc(
            dis=(
                'dis:\n  app:\n    primaries: [web-eu-1]\n    policy: {model: "holt winters"}  #<\n'
            )
        ),
        "dis.app.policy.model: must be one of snaive | snaive_weekly | ets | sarimax",
    ),
    (
        "model that does not exist",
        doc(dis="dis:\n  app:\n    primaries: [web-eu-1]\n    policy: {model: prophet}  #<\n"),
        "dis.app.policy.model: must be one of snaive | snaive_weekly | ets | sarimax",
    ),
    (
        "zero within_km",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    standby: {within_km: 0}  #<\n")),
        "dis.app.standby.within_km: must be > 0, got 0",
    ),
    (
        "empty standby selector",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    standby: {}  #<\n")),
        "dis.app.standby: needs within_km or ids",
    ),
    (
        "unknown standby selector key",
        doc(
            dis=(
                "dis:\n  app:\n    primaries: [web-eu-1]\n"
                "    standby: {within_km: 5, near: x}  #<\n"
            )
        ),
        "dis.app.standby: unknown key 'near'",
    ),
    (
        "unknown standby id in a selector",
        doc(dis=("dis:\n  app:\n    primaries: [web-eu-1]\n    standby: {ids: [sb-us-9]}  #<\n")),
        "dis.app.standby.ids: unknown resource 'sb-us-9' (did you mean 'sb-us-1'?)",
    ),
]


@pytest.mark.parametrize(("text", "reason"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_reported_alone_on_its_line(tmp_path: Path, text: str, reason: str) -> None:
    """Each mistake yields exactly one problem, on the marked line, with a telling reason."""
    (line,) = marked_lines(text)
    problems = problems_of(tmp_path, text)
    assert [(p.line, reason in p.reason) for p in problems] == [(line, True)], problems
    assert problems[0].file == str(tmp_path / "example.com.policy.yaml")


def test_small_document_is_valid() -> None:
    """The base document the problem cases vary is itself valid."""
    policy = policy_from_mapping(yaml.safe_load(doc()), ORIGIN)
    assert set(policy.resources) == {"web-eu-1", "web-us-1", "sb-us-1"}


def test_several_problems_are_reported_together_sorted_by_line() -> None:
    """One PolicyError lists every problem of a file, in line order, each on its own line."""
    path = DATA / "broken.policy.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(path, ORIGIN)
    problems = info.value.problems
    assert [p.line for p in problems] == marked_lines(path.read_text(encoding="utf-8"))
    assert all(p.file == str(path) for p in problems)
    assert str(info.value).splitlines()[0] == (
        f"{path}:5: locations: duplicate key 'us-east' (first at line 4)"
    )


# --- YAML specifics --------------------------------------------------------------------------


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    """A YAML syntax error becomes a PolicyError with the line YAML stopped at."""
    text = "locations:\n  eu-west: {lat: 1, lon: 2}\nregions:\n  default: [eu-west\n\n"
    (problem,) = problems_of(tmp_path, text)
    assert problem.line == 6
    assert problem.reason.startswith("YAML syntax error:")


def test_invalid_utf8_gives_the_line(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are reported on the line that holds them."""
    (problem,) = problems_of(tmp_path, b"locations:\n  eu-west: {lat: 1, lon: 2}\n# \xff\n")
    assert (problem.line, problem.reason) == (3, "the policy file is not valid UTF-8")


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    """A missing file is a PolicyError naming the file, without a line."""
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "missing.policy.yaml", ORIGIN)
    (problem,) = info.value.problems
    assert problem.line is None and "cannot read policy file" in problem.reason


def test_strings_are_read_as_written(tmp_path: Path) -> None:
    """YAML 1.1 surprises do not leak: NO stays Norway, 1:2:3:4:5:6:7:8 stays an address."""
    policy = load_text(
        tmp_path,
        doc(
            locations=LOC + "  no-1: {lat: 59.9, lon: 10.7, countries: [NO, SE]}\n",
            regions="regions:\n  map: {NO: no-1, FI: no-1}\n  default: eu-west\n",
            resources=RES + "  r6: {address6: 1:2:3:4:5:6:7:8, location: us-east, role: standby}\n",
        ),
    )
    assert policy.regions.codes == {"NO": "no-1", "FI": "no-1"}
    assert policy.locations["no-1"].countries == ("NO", "SE")
    assert policy.resources["r6"].address6 == "1:2:3:4:5:6:7:8"


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    """Aliases and `<<` merges work; a key next to a merge overrides it and is no duplicate."""
    text = doc(
        resources=RES
        + (
            "  sb-us-2:\n"
            "    address: 198.51.100.30\n"
            "    location: us-east\n"
            "    role: standby\n"
            "    check: &probe {type: tcp, port: 80, interval: 3}\n"
            "  sb-us-3:\n"
            "    address: 198.51.100.31\n"
            "    location: us-east\n"
            "    role: standby\n"
            "    check: {<<: *probe, port: 8080}\n"
        )
    )
    policy = load_text(tmp_path, text)
    assert policy.resources["sb-us-2"].check == HealthCheck(type="tcp", port=80, interval=3)
    assert policy.resources["sb-us-3"].check == HealthCheck(type="tcp", port=8080, interval=3)


VARIANTS: list[tuple[str, str, Callable[[Policy], object], object]] = [
    (
        "one expected status",
        doc(resources=check('{type: http, url: "http://x.test/", expect_status: 204}')),
        lambda p: _check_of(p, "sb-us-2").expect_status,
        (204,),
    ),
    (
        "empty sections",
        doc(resources="resources:\n", dis="dis:\n"),
        lambda p: (p.resources, p.dis),
        ({}, {}),
    ),
    (
        "absolute DI name",
        doc(dis="dis:\n  www.example.com.: {primaries: [web-eu-1]}\n"),
        lambda p: list(p.dis),
        [dns.name.from_text("www.example.com.")],
    ),
    ("apex DI", doc(dis='dis:\n  "@": {primaries: [web-eu-1]}\n'), lambda p: list(p.dis), [ORIGIN]),
    (
        "unquoted prefix key",
        doc(regions="regions:\n  cidr: {10.0.0.0/8: us-east}\n  default: eu-west\n"),
        lambda p: p.regions.cidr,
        ((ipaddress.ip_network("10.0.0.0/8"), "us-east"),),
    ),
    (
        "IPv6 written in upper case",
        doc(
            resources=RES + ('  r6: {address6: "2001:DB8::A", location: us-east, role: standby}\n')
        ),
        lambda p: p.resources["r6"].address6,
        "2001:db8::a",
    ),
    (
        "standby by ids and distance",
        doc(
            dis=("dis:\n  app: {primaries: [web-eu-1], standby: {ids: [sb-us-1], within_km: 10}}\n")
        ),
        lambda p: (
            p.dis[dns.name.from_text("app.example.com.")].standby,
            p.dis[dns.name.from_text("app.example.com.")].standby_within_km,
        ),
        (("sb-us-1",), 10.0),
    ),
]


@pytest.mark.parametrize(
    ("text", "read", "expected"), [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS]
)
def test_valid_variants(
    tmp_path: Path, text: str, read: Callable[[Policy], object], expected: object
) -> None:
    """Accepted spellings load into the values they mean."""
    assert read(load_text(tmp_path, text)) == expected


def test_country_not_in_iso_3166(tmp_path: Path) -> None:
    """A two-letter code that is not assigned (here ZZ) is rejected, XK (Kosovo) accepted."""
    text = doc(regions="regions:\n  map: {XK: eu-west, ZZ: eu-west}\n  default: eu-west\n")
    (problem,) = problems_of(tmp_path, text)
    assert "'ZZ' is not" in problem.reason


# --- JSON-like data (API) ------------------------------------------------------------------


def _cyclic() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(doc())
    loop: list[Any] = ["web-eu-1"]
    loop.append(loop)
    data["dis"] = {"app": {"primaries": loop}}
    return data


MAPPING_CASES: list[tuple[str, object, str]] = [
    ("not a mapping", ["locations"], "the policy must be a mapping, got a list"),
    ("None", None, "the policy is empty"),
    (
        "boolean key",
        {**yaml.safe_load(doc()), "regions": {"default": "eu-west", "map": {False: "eu-west"}}},
        "regions.map: keys must be strings, got a boolean",
    ),
    (
        "number where a string belongs",
        {**yaml.safe_load(doc()), "regions": {"default": 7}},
        "regions.default: must be a string, got a number",
    ),
    ("shared and cyclic data", _cyclic(), "dis.app.primaries: must be a string, got a list"),
    (
        "tuple as a list",
        {**yaml.safe_load(doc()), "dis": {"app": {"primaries": ("nope",)}}},
        "dis.app.primaries: unknown resource 'nope'",
    ),
]


@pytest.mark.parametrize(
    ("data", "reason"), [c[1:] for c in MAPPING_CASES], ids=[c[0] for c in MAPPING_CASES]
)
def test_mapping_problems_have_no_line(data: object, reason: str) -> None:
    """Data from the API is checked the same way; problems name the source, not a line."""
    with pytest.raises(PolicyError) as info:
        policy_from_mapping(data, ORIGIN, source="api:PUT /zones/example.com./policy")
    (problem,) = info.value.problems
    assert problem.file == "api:PUT /zones/example.com./policy"
    assert reason in problem.reason


def test_mapping_and_file_give_the_same_policy() -> None:
    """policy_from_mapping on the parsed file equals load_policy on the file."""
    from_file = load_policy(EXAMPLE, DEMO)
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert policy_from_mapping(data, DEMO, source=str(EXAMPLE)) == from_file


# --- round trip ------------------------------------------------------------------------------

CHECK_ALL = HealthCheck(
    type="https",
    interval=1.5,
    timeout=0.5,
    rise=1,
    fall=5,
    url="https://a.test:8443/h?x=1",
    expect_status=(200, 301),
    expect_body="ok",
    host_header="a.test",
)
EDGE = Policy(
    origin=ORIGIN,
    locations={
        "a": Location(
            "a",
            -89.5,
            179.25,
            "OC",
            ("AU", "NZ"),
            (ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("10.0.0.0/8")),
        ),
        "b": Location("b", 0.0, 0.0),
    },
    regions=Regions(
        default="b",
        cidr=((ipaddress.ip_network("192.0.2.0/25"), "a"),),
        codes={"NO": "b", "NA": "a"},
    ),
    resources={
        "p1": Resource(
            id="p1",
            location="a",
            role="primary",
            address6="2001:db8::1",
            capacity=12.5,
            cost=0.0,
            warmup=1.0,
            override="down",
            check=CHECK_ALL,
        ),
        "p2": Resource(
            id="p2",
            location="b",
            role="primary",
            address="192.0.2.1",
            check=HealthCheck(type="dns", port=5353, host="::1", qname="probe.test."),
        ),
        "s1": Resource(
            id="s1",
            location="a",
            role="standby",
            address="192.0.2.2",
            address6="2001:db8::2",
            check=HealthCheck(type="command", command=("true",)),
        ),
        "s2": Resource(id="s2", location="b", role="standby", address="192.0.2.3"),
    },
    dis={
        ORIGIN: DI(name=ORIGIN, primaries=("p1",)),
        dns.name.from_text("x.y.example.com."): DI(
            name=dns.name.from_text("x.y.example.com."),
            primaries=("p2", "p1"),
            standby=("s2",),
            standby_within_km=250.5,
            ttl=0,
            answers=3,
            all_down="nodata",
            policy=AllocationPolicy(
                model="ets",
                threshold=0.0,
                lead_time=60.0,
                max_shadows=0,
                min_hold=0.0,
                quantile=0.5,
            ),
        ),
        dns.name.from_text("z.example.com."): DI(
            name=dns.name.from_text("z.example.com."),
            primaries=("p2",),
            standby=("s1", "s2"),
            ttl=2147483647,
        ),
    },
    source="<edge>",
)


MINIMAL = Policy(ORIGIN, {"x": Location("x", 1.0, 2.0)}, Regions(default="x"), {}, {}, "<min>")


def _policies() -> list[Policy]:
    return [
        load_policy(EXAMPLE, DEMO),
        load_policy(DATA / "design.policy.yaml", ORIGIN),
        EDGE,
        policy_from_mapping(yaml.safe_load(doc()), ORIGIN, source="<small>"),
        MINIMAL,
    ]


POLICY_IDS = ["example", "design", "edge", "small", "minimal"]


@pytest.mark.parametrize("policy", _policies(), ids=POLICY_IDS)
def test_round_trip_through_mapping(policy: Policy) -> None:
    """policy_from_mapping(policy_to_mapping(p)) == p, and the mapping is plain JSON data."""
    data = policy_to_mapping(policy)
    assert json.loads(json.dumps(data)) == data
    assert policy_from_mapping(data, policy.origin, policy.source) == policy


@pytest.mark.parametrize("policy", _policies(), ids=POLICY_IDS)
def test_one_entry_is_that_entry_of_the_whole_mapping(policy: Policy) -> None:
    """What the API reports an edited object as (`entry_to_mapping`) is what the file it
    writes holds for it; a key the policy lacks is None."""
    data = policy_to_mapping(policy)
    for kind in ("locations", "resources", "dis"):
        for key, value in (data.get(kind) or {}).items():
            assert entry_to_mapping(policy, kind, key) == value
        assert entry_to_mapping(policy, kind, "not-there") is None


@pytest.mark.parametrize("policy", _policies(), ids=POLICY_IDS)
def test_round_trip_through_a_yaml_file(tmp_path: Path, policy: Policy) -> None:
    """Dumping the mapping as YAML and loading the file gives back an equal policy."""
    path = tmp_path / f"{policy.origin}policy.yaml"
    path.write_text(yaml.safe_dump(policy_to_mapping(policy), sort_keys=False), encoding="utf-8")
    loaded = load_policy(path, policy.origin)
    assert loaded == Policy(
        policy.origin,
        policy.locations,
        policy.regions,
        policy.resources,
        policy.dis,
        source=str(path),
    )


def test_mapping_leaves_out_defaults() -> None:
    """Keys holding their default are not written, so exports stay short."""
    data = policy_to_mapping(EDGE)
    assert data["dis"]["@"] == {"primaries": ["p1"]}
    assert data["resources"]["s2"] == {"address": "192.0.2.3", "location": "b", "role": "standby"}
    assert data["dis"]["x.y"]["standby"] == {"within_km": 250.5, "ids": ["s2"]}


# --- JSON Schema -----------------------------------------------------------------------------


def _validator() -> jsonschema.Draft202012Validator:
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@pytest.mark.parametrize("policy", _policies(), ids=POLICY_IDS)
def test_schema_accepts_valid_policies(policy: Policy) -> None:
    """What the loader accepts (and writes) the schema accepts too."""
    errors = list(_validator().iter_errors(policy_to_mapping(policy)))
    assert errors == []


def test_schema_validates_the_example_file() -> None:
    """The documented example file, as parsed YAML, is valid under the shipped schema."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert list(_validator().iter_errors(data)) == []


BROKEN_FOR_SCHEMA = [
    c
    for c in CASES
    if c[0]
    in {
        "unknown top-level key",
        "latitude out of range",
        "bad continent",
        "missing default",
        "IPv6 in address",
        "no address at all",
        "unknown role",
        "zero capacity",
        "tcp check without port",
        "https check with an http url",
        "command as a shell string",
        "key that does not apply to the type",
        "no primaries",
        "ttl too large",
        "zero within_km",
        "misspelt policy key",
        "quantile of one",
        "lower-case country",
    }
]


@pytest.mark.parametrize(
    "text", [c[1] for c in BROKEN_FOR_SCHEMA], ids=[c[0] for c in BROKEN_FOR_SCHEMA]
)
def test_schema_rejects_broken_shapes(text: str) -> None:
    """Shape mistakes the loader reports are rejected by the schema as well."""
    assert list(_validator().iter_errors(yaml.safe_load(text))) != []


def test_an_unchanged_file_is_read_once(tmp_path: Path) -> None:
    """A file whose bytes are as at the last read gives that read's Policy again, with the
    bytes' digest; any change of the bytes (one of the same size too) is read anew."""
    path = tmp_path / "example.com.policy.yaml"
    text = EXAMPLE.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    first = load_policy(path, DEMO)
    assert first.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_policy(path, DEMO) is first
    assert "ttl: 30" in text
    path.write_text(text.replace("ttl: 30", "ttl: 31", 1), encoding="utf-8")
    edited = load_policy(path, DEMO)
    assert edited is not first and edited != first
    assert edited.digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_adopted_check_is_what_the_file_reads_as(tmp_path: Path) -> None:
    """A policy the API checked from its text and then wrote is the next read of the file:
    equal to a fresh parse of it, with the file as its source and the bytes' digest."""
    path = tmp_path / "demo.example.policy.yaml"
    text = EXAMPLE.read_text(encoding="utf-8").replace("ttl: 30", "ttl: 32", 1)
    adopted = adopt_checked(path, text, policy_from_text(text, DEMO, "<api>"))
    path.write_text(text, encoding="utf-8")
    assert load_policy(path, DEMO) is adopted
    assert adopted == policy_from_text(text, DEMO, str(path))
    assert (adopted.source, adopted.digest) == (
        str(path), hashlib.sha256(path.read_bytes()).hexdigest())
