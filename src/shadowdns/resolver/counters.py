"""Counts answers per (DI, region, kind) on the query path and hands them out in batches.

The query path only does `counts[i] += 1`: each DI's answer gets a block of counters, one
per region, when it is compiled. With a million DIs there are millions of counters, so they
live in one machine-word array (not a list of Python ints), and a DI's block is registered
once per distinct (DI, kinds) rather than per counter. `take` swaps in a zeroed array on
the event loop (between packets, so no lock); turning the old one into rows (`rows`) and
writing them happen off the loop.

With a prefix cap (`serve --demand-prefix-cap N`), one client prefix (/24 for IPv4, /56 for
IPv6: the ECS subnet when it is believed, else the source address) adds at most N queries
to one (DI, region) counter per minute, so a single client cannot drive allocations by
flooding; queries past the cap are answered but not counted (`capped`). Keys are tracked
for the current minute only, and at most `MAX_TRACKED_PREFIXES` of them: past that, new
ones are capped too, so spraying prefixes cannot grow memory either.
"""

from __future__ import annotations

import socket
import time
from array import array

import numpy as np

MAX_TRACKED_PREFIXES = 1_000_000  # (counter, prefix) keys a minute; ~150 MB at worst


def client_prefix(ecs: bytes, addr: tuple[str, int] | None) -> bytes | str:
    """The /24 or /56 a counted query comes from: of its (believed) ECS option when it has
    one (raw option data), else of the source address."""
    if ecs:
        return ecs[:2] + (ecs[4:7] if ecs[1] == 1 else ecs[4:11])
    ip = addr[0] if addr is not None else "127.0.0.1"
    if "." in ip:  # IPv4, also mapped into IPv6
        return ip.rpartition(".")[0]
    try:
        return socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])[:7]
    except OSError:
        return ip


class DemandCounters:
    """An append-only registry of counter blocks and their counts since the last drain."""

    __slots__ = ("blocks", "capped", "counts", "firsts", "index", "per_prefix", "prefix_cap",
                 "window")

    def __init__(self, prefix_cap: int = 0) -> None:
        # (di, regions, kinds) -> index of the block's first counter
        self.index: dict[tuple[str, tuple[str, ...], tuple[str, ...]], int] = {}
        self.firsts: list[int] = []  # first counter of each block, ascending
        self.blocks: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self.counts = array("q")
        self.prefix_cap = prefix_cap  # queries per (counter, client prefix) a minute; 0: off
        self.per_prefix: dict[tuple[int, bytes | str], int] = {}
        self.window = minute()
        self.capped = 0  # queries not counted because of the cap, since start

    def block(self, di: str, regions: tuple[str, ...], kinds: tuple[str, ...]) -> int:
        """First index of the counters of `di` in each region (answered with that kind)."""
        key = (di, regions, kinds)
        first = self.index.get(key)
        if first is None:
            first = len(self.counts)
            self.index[key] = first
            self.firsts.append(first)
            self.blocks.append(key)
            self.counts.extend([0] * len(regions))
        return first

    def add(self, i: int, ecs: bytes, addr: tuple[str, int] | None) -> None:
        """Count one query on counter `i` unless its client prefix reached the cap."""
        key = (i, client_prefix(ecs, addr))
        seen = self.per_prefix.get(key, 0)
        if seen >= self.prefix_cap or (not seen and
                                       len(self.per_prefix) >= MAX_TRACKED_PREFIXES):
            self.capped += 1
            return
        self.per_prefix[key] = seen + 1
        self.counts[i] += 1

    def take(self) -> tuple[array[int], int]:
        """Swap in zeroed counters (on the event loop: a memory copy, no Python loop) and
        return the old ones with the number of blocks they cover, for `rows`."""
        now = minute()
        if now != self.window:  # the cap is per minute, whatever the flush interval
            self.window = now
            self.per_prefix = {}
        taken = self.counts
        self.counts = array("q", bytes(8 * len(taken)))
        return taken, len(self.blocks)

    def rows(self, taken: tuple[array[int], int]) -> list[tuple[str, str, str, int]]:
        """(di, region, kind, queries) of taken counters; safe off the event loop, as blocks
        are only ever appended."""
        counts, nblocks = taken
        if not counts:
            return []
        hot = np.flatnonzero(np.frombuffer(counts, dtype=np.int64))
        if not len(hot):
            return []
        firsts = np.asarray(self.firsts[:nblocks], dtype=np.int64)
        which = (np.searchsorted(firsts, hot, side="right") - 1).tolist()
        offsets = (hot - firsts[which]).tolist()
        blocks = self.blocks
        return [(blocks[b][0], blocks[b][1][k], blocks[b][2][k], counts[i])
                for i, b, k in zip(hot.tolist(), which, offsets, strict=True)]

    def active_dis(self) -> list[str]:
        """DIs counted since the last drain, busiest first."""
        if not self.counts:
            return []
        counts = np.frombuffer(self.counts, dtype=np.int64)
        hot = np.flatnonzero(counts)
        if not len(hot):
            return []
        firsts = np.asarray(self.firsts, dtype=np.int64)
        block = np.searchsorted(firsts, hot, side="right") - 1
        per_block = np.bincount(block, weights=counts[hot], minlength=len(firsts))
        order = np.argsort(-per_block[per_block > 0], kind="stable")
        busy = np.flatnonzero(per_block > 0)[order]
        seen: dict[str, None] = {}
        for b in busy.tolist():
            seen.setdefault(self.blocks[b][0], None)
        return list(seen)

    def drain(self) -> list[tuple[str, str, str, int]]:
        """(di, region, kind, queries) for every series counted since the last drain."""
        return self.rows(self.take())

    def total(self) -> int:
        return int(np.frombuffer(self.counts, dtype=np.int64).sum()) if self.counts else 0


def minute(ts: float | None = None) -> int:
    t = time.time() if ts is None else ts
    return int(t // 60 * 60)
