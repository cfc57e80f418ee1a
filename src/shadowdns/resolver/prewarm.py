"""Fills the answer table ahead of queries, so a fresh start or a change answers from the
table and not from the compiler (Knot builds its geo answers at load the same way).

Every question a client can get a table entry for (each name's own types, each DI's A and
AAAA, the latter as one compact entry per DI) is compiled after load, and again after
whatever a change dropped, in priority order: what a change dropped (it was being asked
for), then the DIs with demand since the last flush, then every name in zone order. It
runs on the event loop in slices of a few milliseconds with a yield between them, so no
answer waits longer than one slice; a question that still misses is compiled on the spot
by the query path.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator

import dns.name
import dns.rdatatype

from shadowdns.gcwatch import WATCH
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.render import SHAPE_DO, SHAPE_EDNS
from shadowdns.resolver.snapshot import DITable, GeoContext, Snapshot
from shadowdns.zones.di_view import own_nodes
from shadowdns.zones.policy import DI

log = logging.getLogger(__name__)

SLICE = 0.003  # seconds of compiling between two yields to the event loop
# Questions compiled ahead at most (the rest compile on first use), not counting DIs' own
# A and AAAA: those are one compact entry per DI (a few hundred bytes), made for every DI.
EAGER_LIMIT = 300_000
# The query shapes compiled ahead before any query shows them, while the table holds at
# most AHEAD_LIMIT questions: EDNS without DO (load generators, stub-like clients) and
# with DO (validating resolvers, the usual clients of an authoritative server). Deriving
# a shape on its first query made the first second ~35 % slower (every question of the
# table derived then, beside the queries); beyond the limit the memory is not worth it.
AHEAD_SHAPES = (SHAPE_EDNS, SHAPE_EDNS | SHAPE_DO)
AHEAD_LIMIT = 100_000

_IN = struct.pack("!H", 1)
_A = struct.pack("!H", int(dns.rdatatype.A))
_AAAA = struct.pack("!H", int(dns.rdatatype.AAAA))
_SKIP = {int(dns.rdatatype.RRSIG), int(dns.rdatatype.NSEC), int(dns.rdatatype.NSEC3)}


def question_key(name: dns.name.Name, qtype: bytes) -> bytes:
    """The table key of a question: lowercase wire name, type, class IN."""
    return name.canonicalize().to_wire() + qtype + _IN  # type: ignore[operator]


def name_index(snapshot: Snapshot, existing: set[bytes],
               apexes: dict[bytes, tuple[dns.name.Name, bool, frozenset[bytes]]]
               ) -> Iterator[None]:
    """Fill `existing` with every name of every zone (empty non-terminals and DIs
    included) and `apexes` with each zone's apex; yields now and then (a slice boundary)."""
    for origin, zone in snapshot.zones.zones.items():
        special = zone.soa_labels
        plain = not (zone.cuts or zone.dnames or zone.wildcards)
        apex = origin.canonicalize().to_wire()
        assert apex is not None
        apexes[apex] = (origin, plain, special)
        for n, name in enumerate(zone.names):
            wire = name.canonicalize().to_wire()
            assert wire is not None
            existing.add(wire)
            if not n & 255:
                yield None


# A DI whose own A and AAAA to compile: (lowercase wire name, name, DI, its context)
DIQuestion = tuple[bytes, dns.name.Name, DI, GeoContext]


def questions(snapshot: Snapshot, first: Iterable[str] = ()
              ) -> Iterator[bytes | DIQuestion]:
    """Every question with a table entry: the DIs named in `first`, then each zone's names
    with their types, then every DI's A and AAAA (one `DIQuestion` each)."""
    dis = snapshot.dis
    for text in first:
        try:
            name = dns.name.from_text(text)
        except dns.exception.DNSException:
            continue
        if name in dis:
            yield question_key(name, _A)
            yield question_key(name, _AAAA)
    for zone in snapshot.zones.zones.values():
        for name, node in own_nodes(zone).items():
            wire = name.canonicalize().to_wire()
            assert wire is not None
            for rdtype, covers in node:
                if not covers and rdtype not in _SKIP:
                    yield wire + struct.pack("!H", rdtype) + _IN
    entries = (dis.entries() if isinstance(dis, DITable) else
               ((name, *dis[name]) for name in dis))
    for name, di, ctx in entries:
        # lowercase wire bytes (length octets are below 64: lower() leaves them be)
        wire = name.to_wire()
        assert wire is not None
        yield wire.lower(), name, di, ctx


class Prewarm:
    """See the module docstring. `restart` after the table was dropped whole, `push` the
    questions a change dropped; `fill` works synchronously (before the listeners open),
    `run` in slices for the life of the server."""

    def __init__(self, engine: QueryEngine, limit: int = EAGER_LIMIT,
                 slice_seconds: float = SLICE) -> None:
        self.engine = engine
        self.limit = limit
        self.slice = slice_seconds
        self._urgent: deque[bytes] = deque()
        self._rest: Iterator[bytes | DIQuestion] | None = None
        self._rest_of: Snapshot | None = None  # the snapshot `_rest` walks
        self._index: Iterator[None] | None = None
        self._existing: set[bytes] = set()
        self._wake = asyncio.Event()
        self._questions = 0
        self.compiled = 0
        self.passes = 0
        self.started = time.monotonic()
        self.last_pass_seconds: float | None = None
        engine.on_new_shape = self._new_shape

    def restart(self) -> None:
        """Compile everything again (the table was dropped whole)."""
        self._urgent.clear()
        snapshot = self.engine.snapshot
        self._rest = questions(snapshot, self.engine.counters.active_dis())
        self._rest_of = snapshot
        self._existing = set()
        names = sum(len(zone.names) for zone in snapshot.zones.zones.values())
        self._questions = names + len(snapshot.dis)  # about: a name's types, DIs' A/AAAA
        self._index = (name_index(snapshot, self._existing, self.engine.table.apexes)
                       if names <= self.limit else None)
        self.started = time.monotonic()
        self._wake.set()

    def push(self, keys: Iterable[bytes], renamed: bool = False) -> None:
        """Compile these first (a change dropped them). `renamed`: the change added or
        removed names, so an index of existing names still being built is begun again
        from the snapshot now served (the one under way would miss the new names)."""
        self._urgent.extend(keys)
        if renamed and self._index is not None:
            self._existing = set()
            self._index = name_index(self.engine.snapshot, self._existing,
                                     self.engine.table.apexes)
        self._wake.set()

    def _new_shape(self) -> None:
        # A query shape (EDNS, DO, RD, NSID) seen for the first time: derive it for every
        # question already compiled, and for all the rest as they come.
        self._urgent.extend(list(self.engine.table.base))
        self._wake.set()

    def _ahead(self) -> set[int]:
        """The shapes to compile before queries show them (see AHEAD_SHAPES); signed DO
        answers are left to the queries that ask (signing each variant costs more)."""
        if self._questions > AHEAD_LIMIT:
            return set()
        signed = self.engine.snapshot.signer is not None
        return {s for s in AHEAD_SHAPES if not (signed and s & SHAPE_DO)}

    @property
    def pending(self) -> bool:
        return bool(self._urgent) or self._rest is not None or self._index is not None

    def fill(self, seconds: float) -> bool:
        """Compile for up to `seconds`; True when nothing is left to do."""
        with WATCH.paused():  # the answers compiled are long-lived: `settle` freezes them
            return self._fill(seconds)

    def _fill(self, seconds: float) -> bool:
        engine = self.engine
        deadline = time.perf_counter() + seconds
        shapes = tuple(sorted(engine.shapes_seen | self._ahead()))
        urgent = self._urgent
        n = 0
        while self._index is not None:
            if next(self._index, True):
                # complete: publish it to the table it was made for (a later drop makes
                # a new table, and restart() a new index)
                self.engine.table.existing = self._existing
                self._index = None
            elif time.perf_counter() >= deadline:
                return False
        while True:
            key: bytes | DIQuestion
            if urgent:
                key = urgent.popleft()
            elif self._rest is not None and len(engine.table.base) < self.limit:
                key = next(self._rest, b"")
                if isinstance(key, tuple):
                    wire, name, di, ctx = key
                    if engine.snapshot is not self._rest_of:
                        # a change since the pass began: the DI as served now (gone, or
                        # with another entry or live state), not as the pass found it
                        now = engine.snapshot.dis.get(name)
                        if now is None:
                            continue
                        di, ctx = now
                    if engine.prepare_di(wire, name, di, ctx, shapes):
                        n += 1
                    if not n & 31 and time.perf_counter() >= deadline:
                        break
                    continue
                if not key:
                    self._rest = None
                    self.passes += 1
                    self.last_pass_seconds = time.monotonic() - self.started
                    log.info("answer table filled: %d question(s) and %d DI(s) in %.2fs",
                             len(engine.table.base), len(engine.table.compact),
                             self.last_pass_seconds)
                    # The table lives until the next change: freeze it. It and the
                    # reload before it make no cyclic garbage (test_no_cyclic_garbage),
                    # so what the frozen heap grew by is live: the new floor, not a
                    # reason for a full collection, which would stop answering for
                    # as long as it walks the whole heap (0.3 s for a 10,000-RRset zone).
                    WATCH.settle(rebase=True)
                    continue
            else:
                self._rest = None
                break
            if engine.prepare(key, shapes):
                n += 1
            if not n & 31 and time.perf_counter() >= deadline:
                break
        self.compiled += n
        return not self.pending

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not self.fill(self.slice):
                await asyncio.sleep(0)
