"""What the benchmarks serve and ask: one zone's names, the query file, the expected answers.

A workload is a zone (`bench.test.` for the geo benchmark, `static.test.` for the static
one) with `statics` plain A names, a CNAME, apex MX/TXT, one AAAA name (`v6`), and `dis`
destination identifiers whose A answer depends on the client's continent (EU, NA, AS, SA,
anything else -> `def`). DIs have no AAAA, so AAAA queries for them get NODATA. Names
starting with `nx` do not exist.

Resources: `shared` gives every DI the same five primaries (one address per location);
`distinct` gives each DI its own five, with addresses of its own (50,000 resources for
10,000 DIs) — what a real fleet looks like, and what a server that shares answers between
DIs alike cannot shortcut. Query mix: `classic` (A/AAAA/CNAME) or `full` (every type a
resolver asks an authoritative server: A, AAAA, MX, NS, SOA, TXT, 10 % NXDOMAIN).

This module only describes the data (names, addresses, query mix); each server's module
renders it in that server's own configuration language, so all of them serve the same thing.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCATIONS", "MIXES", "POOL", "QTYPES", "RESOURCES", "Expected", "Workload",
           "wire_query"]

# Policy locations: (latitude, longitude, continent it serves). `def` serves the rest. It
# sits in Sydney so that the Oceania stream gets `def` both from servers that send unmapped
# continents to the default and from servers that pick the location nearest the client.
LOCATIONS: dict[str, tuple[float, float, str | None]] = {
    "eu": (52.37, 4.90, "EU"),
    "na": (38.90, -77.04, "NA"),
    "as": (35.68, 139.69, "AS"),
    "sa": (-23.55, -46.63, "SA"),
    "def": (-33.87, 151.21, None),
}
# The one primary resource per location that every DI lists; its A answer.
POOL: dict[str, str] = {
    "eu": "198.51.100.10",
    "na": "198.51.100.20",
    "as": "198.51.100.30",
    "sa": "198.51.100.40",
    "def": "198.51.100.50",
}
TTL = 30
NS_ADDRESS = "192.0.2.53"
MAIL_ADDRESS = "192.0.2.25"
V6_NAME, V6_ADDRESS = "v6", "2001:db8::53"
TXT = '"bench"'
ALIAS = "alias"  # CNAME -> s0
RESOURCES = ("distinct", "shared")
MIXES = ("full", "classic")
QTYPES = {"A": 1, "NS": 2, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
APEX_TYPES = ("MX", "NS", "SOA", "TXT")
# Distinct DI addresses: 10.<32 + 32 * location index + i // 65536>.<i // 256>.<i % 256>, so
# no two (DI, location) pairs share one and none meets the statics' 10.0.x.y.
_DISTINCT_LIMIT = 32 * 65536


_LOCATION_INDEX = {name: j for j, name in enumerate(LOCATIONS)}

RR = tuple[str, str, str]  # (owner, type, rdata), owner absolute


@dataclass(frozen=True, slots=True)
class Expected:
    """The part of an answer the correctness check compares: rcode and answer RRs.

    `tolerated` answers are not wrong, only different (with the reason): an in-zone CNAME
    whose target the server leaves to the resolver to chase (gdnsd 3 does this).
    """

    rcode: str
    answer: frozenset[RR]
    tolerated: tuple[tuple[frozenset[RR], str], ...] = ()


def _wire_name(name: str) -> bytes:
    labels = name.rstrip(".").split(".")
    return b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"


def wire_query(name: str, qtype: str, ecs: bytes | None) -> bytes:
    """One query (ID 0) with EDNS (payload 1232) and, unless `ecs` is None, an ECS option
    with that payload."""
    opt = b"" if ecs is None else struct.pack("!HH", 8, len(ecs)) + ecs
    wire = struct.pack("!6H", 0, 0, 1, 0, 0, 1) + _wire_name(name)
    wire += struct.pack("!HH", QTYPES[qtype], 1)
    return wire + b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opt)) + opt


@dataclass(frozen=True, slots=True)
class Workload:
    """A benchmark zone and its query stream; `dis == 0` is the static benchmark."""

    origin: str
    statics: int
    dis: int
    queries: int = 200_000
    seed: int = 1
    resources: str = "shared"  # one of RESOURCES
    mix: str = "classic"  # one of MIXES

    def __post_init__(self) -> None:
        if self.resources not in RESOURCES:
            raise ValueError(f"resources must be one of {', '.join(RESOURCES)}")
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}")
        if self.resources == "distinct" and self.dis > _DISTINCT_LIMIT:
            raise ValueError(f"at most {_DISTINCT_LIMIT:,} DIs with distinct resources")

    @classmethod
    def geo(cls, dis: int, statics: int = 1000, queries: int | None = None,
            resources: str = "shared", mix: str = "classic") -> Workload:
        return cls("bench.test.", statics, dis, queries or max(200_000, min(dis, 1_000_000)),
                   resources=resources, mix=mix)

    @classmethod
    def static(cls, names: int, queries: int | None = None) -> Workload:
        return cls("static.test.", names, 0, queries or max(200_000, min(names, 1_000_000)))

    @property
    def is_geo(self) -> bool:
        return self.dis > 0

    def fqdn(self, relative: str) -> str:
        return self.origin if relative == "@" else f"{relative}.{self.origin}"

    @staticmethod
    def static_address(i: int) -> str:
        return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"

    # --- zone content, as (relative owner, type, rdata) -------------------------------------

    def soa_rdata(self) -> str:
        return f"ns1.{self.origin} hostmaster.{self.origin} 1 3600 600 86400 60"

    def apex_records(self) -> list[tuple[str, str, str]]:
        return [
            ("@", "SOA", self.soa_rdata()),
            ("@", "NS", f"ns1.{self.origin}"),
            ("@", "MX", f"10 mail.{self.origin}"),
            ("@", "TXT", TXT),
            ("ns1", "A", NS_ADDRESS),
            ("mail", "A", MAIL_ADDRESS),
            (V6_NAME, "AAAA", V6_ADDRESS),
        ]

    def static_records(self) -> Iterator[tuple[str, str, str]]:
        """Every record that is the same for all clients (apex, statics, the CNAME)."""
        yield from self.apex_records()
        for i in range(self.statics):
            yield f"s{i}", "A", self.static_address(i)
        yield ALIAS, "CNAME", f"s0.{self.origin}"

    def di_names(self) -> Iterator[str]:
        for i in range(self.dis):
            yield f"di{i}"

    def di_address(self, i: int, location: str) -> str:
        """The A answer of DI `i` for clients of `location` (its own primary there)."""
        if self.resources == "shared":
            return POOL[location]
        j = _LOCATION_INDEX[location]
        return f"10.{32 + 32 * j + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"

    def di_pool(self, i: int) -> dict[str, str]:
        """Location -> address of DI `i`'s primaries."""
        return {location: self.di_address(i, location) for location in LOCATIONS}

    def zone_lines(self, di_default: bool) -> Iterator[str]:
        """The master file line by line (a million DIs need not sit in memory twice)."""
        yield f"$ORIGIN {self.origin}"
        yield f"$TTL {TTL}"
        for owner, rtype, rdata in self.static_records():
            yield f"{owner} {rtype} {rdata}"
        if di_default:
            for i in range(self.dis):
                yield f"di{i} A {self.di_address(i, 'def')}"

    def zone_text(self, di_default: bool) -> str:
        """A master file of the static records; with `di_default`, DIs get the `def` A."""
        return "\n".join(self.zone_lines(di_default)) + "\n"

    def write_zone(self, path: Path, di_default: bool) -> Path:
        with path.open("w") as out:
            for line in self.zone_lines(di_default):
                out.write(line + "\n")
        return path

    # --- queries ----------------------------------------------------------------------------

    def query_lines(self) -> Iterator[str]:
        """The dnsperf input: `name type` lines in a fixed pseudo-random order.

        Geo, classic: 70% DI A, 10% DI AAAA (NODATA), 8% static A, 2% CNAME, 10% NXDOMAIN.
        Geo, full: 68% DI A, 8% DI AAAA (NODATA), 8% static A, 2% AAAA with an answer,
        1% each apex MX, NS, SOA, TXT, 10% NXDOMAIN.
        Static: 78% static A, 10% static AAAA (NODATA), 2% CNAME, 10% NXDOMAIN.
        """
        rng = random.Random(self.seed)
        o = self.origin
        if self.is_geo and self.mix == "full":
            yield from self._full_mix(rng)
            return
        for _ in range(self.queries):
            r = rng.random()
            if r < 0.10:
                yield f"nx{rng.randrange(1 << 30)}.{o} A"
            elif r < 0.12:
                yield f"{ALIAS}.{o} A"
            elif self.is_geo and r < 0.82:
                yield f"di{rng.randrange(self.dis)}.{o} A"
            elif self.is_geo and r < 0.92:
                yield f"di{rng.randrange(self.dis)}.{o} AAAA"
            elif r < 0.90 or self.is_geo:
                yield f"s{rng.randrange(self.statics)}.{o} A"
            else:
                yield f"s{rng.randrange(self.statics)}.{o} AAAA"

    def _full_mix(self, rng: random.Random) -> Iterator[str]:
        o = self.origin
        for _ in range(self.queries):
            r = rng.random()
            if r < 0.10:
                yield f"nx{rng.randrange(1 << 30)}.{o} A"
            elif r < 0.78:
                yield f"di{rng.randrange(self.dis)}.{o} A"
            elif r < 0.86:
                yield f"di{rng.randrange(self.dis)}.{o} AAAA"
            elif r < 0.94:
                yield f"s{rng.randrange(self.statics)}.{o} A"
            elif r < 0.96:
                yield f"{V6_NAME}.{o} AAAA"
            else:
                yield f"{o} {APEX_TYPES[min(3, int((r - 0.96) * 100))]}"

    def write_queries(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            for line in self.query_lines():
                out.write(line + "\n")
        return path

    def write_binary_queries(self, path: Path, ecs: list[bytes | None]) -> Path:
        """The same queries as wire messages for `dnsperf -B`, cycling through `ecs`.

        Each message carries EDNS (payload 1232) and, unless its entry is None, an ECS option
        with that payload; one dnsperf process can then play every client subnet at once.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for i, line in enumerate(self.query_lines()):
                name, qtype = line.split()
                wire = wire_query(name, qtype, ecs[i % len(ecs)])
                out.write(struct.pack("!H", len(wire)) + wire)
        return path

    # --- what a correct server answers ------------------------------------------------------

    def check_queries(self) -> list[tuple[str, str]]:
        """A sample covering every kind of answer: first, middle, last DI; statics; etc."""
        o = self.origin
        names = [(f"s0.{o}", "A"), (f"s{self.statics - 1}.{o}", "A"), (f"s0.{o}", "AAAA"),
                 (f"{ALIAS}.{o}", "A"), (f"nx1.{o}", "A"), (f"nx2.{o}", "AAAA"),
                 (f"{V6_NAME}.{o}", "AAAA"), *((o, t) for t in APEX_TYPES)]
        if self.is_geo:
            for i in sorted({0, self.dis // 2, self.dis - 1}):
                names.append((f"di{i}.{o}", "A"))
            names.append((f"di0.{o}", "AAAA"))
        return names

    def expected(self, qname: str, qtype: str, location: str) -> Expected:
        """The answer for a client whose region maps to `location` (`def`: no geo)."""
        o = self.origin
        if qname == o:
            rdata = {rtype: rd for owner, rtype, rd in self.apex_records() if owner == "@"}
            if qtype not in rdata:
                return Expected("NOERROR", frozenset())
            return Expected("NOERROR", frozenset({(o, qtype, rdata[qtype])}))
        label = qname[: -len(o) - 1]
        s0 = (f"s0.{o}", "A", self.static_address(0))
        if label == V6_NAME:
            answer = {(qname, "AAAA", V6_ADDRESS)} if qtype == "AAAA" else set()
            return Expected("NOERROR", frozenset(answer))
        if label.startswith("nx"):
            return Expected("NXDOMAIN", frozenset())
        if label == ALIAS:
            cname = (qname, "CNAME", f"s0.{o}")
            if qtype != "A":
                return Expected("NOERROR", frozenset({cname}))
            unchased = ((frozenset({cname}), "in-zone CNAME target not added"),)
            return Expected("NOERROR", frozenset({cname, s0}), unchased)
        if qtype != "A":
            return Expected("NOERROR", frozenset())
        if label.startswith("di"):
            address = self.di_address(int(label[2:]), location)
            return Expected("NOERROR", frozenset({(qname, "A", address)}))
        return Expected("NOERROR", frozenset({(qname, "A", self.static_address(int(label[1:])))}))
