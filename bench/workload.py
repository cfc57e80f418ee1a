"""What the benchmarks serve and ask: one zone's names, the query file, the expected answers.

A workload is a zone (`bench.test.` for the geo benchmark, `static.test.` for the static
one) with `statics` plain A names, a CNAME, and `dis` destination identifiers whose A
answer depends on the client's continent (EU, NA, AS, SA, anything else -> `def`). DIs have
no AAAA, so AAAA queries for them get NODATA. Names starting with `nx` do not exist.

This module only describes the data (names, addresses, query mix); each server's module
renders it in that server's own configuration language, so all of them serve the same thing.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOCATIONS", "POOL", "Expected", "Workload"]

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
ALIAS = "alias"  # CNAME -> s0


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


@dataclass(frozen=True, slots=True)
class Workload:
    """A benchmark zone and its query stream; `dis == 0` is the static benchmark."""

    origin: str
    statics: int
    dis: int
    queries: int = 200_000
    seed: int = 1

    @classmethod
    def geo(cls, dis: int, statics: int = 1000, queries: int | None = None) -> Workload:
        return cls("bench.test.", statics, dis, queries or max(200_000, min(dis, 1_000_000)))

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
            ("ns1", "A", NS_ADDRESS),
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

    def zone_text(self, di_default: bool) -> str:
        """A master file of the static records; with `di_default`, DIs get the `def` A."""
        lines = [f"$ORIGIN {self.origin}", f"$TTL {TTL}"]
        lines += [f"{owner} {rtype} {rdata}" for owner, rtype, rdata in self.static_records()]
        if di_default:
            lines += [f"{name} A {POOL['def']}" for name in self.di_names()]
        return "\n".join(lines) + "\n"

    # --- queries ----------------------------------------------------------------------------

    def query_lines(self) -> Iterator[str]:
        """The dnsperf input: `name type` lines in a fixed pseudo-random order.

        Geo: 70% DI A, 10% DI AAAA (NODATA), 8% static A, 2% CNAME, 10% NXDOMAIN.
        Static: 78% static A, 10% static AAAA (NODATA), 2% CNAME, 10% NXDOMAIN.
        """
        rng = random.Random(self.seed)
        o = self.origin
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
        types = {"A": 1, "AAAA": 28}
        options = [b"" if e is None else struct.pack("!HH", 8, len(e)) + e for e in ecs]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            for i, line in enumerate(self.query_lines()):
                name, qtype = line.split()
                opt = options[i % len(options)]
                wire = struct.pack("!6H", 0, 0, 1, 0, 0, 1) + _wire_name(name)
                wire += struct.pack("!HH", types[qtype], 1)
                wire += b"\0" + struct.pack("!HHIH", 41, 1232, 0, len(opt)) + opt
                out.write(struct.pack("!H", len(wire)) + wire)
        return path

    # --- what a correct server answers ------------------------------------------------------

    def check_queries(self) -> list[tuple[str, str]]:
        """A sample covering every kind of answer: first, middle, last DI; statics; etc."""
        o = self.origin
        names = [(f"s0.{o}", "A"), (f"s{self.statics - 1}.{o}", "A"), (f"s0.{o}", "AAAA"),
                 (f"{ALIAS}.{o}", "A"), (f"nx1.{o}", "A"), (f"nx2.{o}", "AAAA")]
        if self.is_geo:
            for i in sorted({0, self.dis // 2, self.dis - 1}):
                names.append((f"di{i}.{o}", "A"))
            names.append((f"di0.{o}", "AAAA"))
        return names

    def expected(self, qname: str, qtype: str, location: str) -> Expected:
        """The answer for a client whose region maps to `location` (`def`: no geo)."""
        o = self.origin
        label = qname[: -len(o) - 1]
        s0 = (f"s0.{o}", "A", self.static_address(0))
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
            return Expected("NOERROR", frozenset({(qname, "A", POOL[location])}))
        return Expected("NOERROR", frozenset({(qname, "A", self.static_address(int(label[1:])))}))
