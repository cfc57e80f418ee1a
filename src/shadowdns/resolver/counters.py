"""Counts answers per (DI, region, kind) on the query path and hands them out in batches.

The query path only does `counts[i] += 1`: each DI's answer gets a block of counters, one
per region, when it is compiled. With a million DIs there are millions of counters, so they
live in one machine-word array (not a list of Python ints), and a DI's block is registered
once per distinct (DI, kinds) rather than per counter. `take` swaps in a zeroed array on
the event loop (between packets, so no lock); turning the old one into rows (`rows`) and
writing them happen off the loop.
"""

from __future__ import annotations

import time
from array import array

import numpy as np


class DemandCounters:
    """An append-only registry of counter blocks and their counts since the last drain."""

    __slots__ = ("blocks", "counts", "firsts", "index")

    def __init__(self) -> None:
        # (di, regions, kinds) -> index of the block's first counter
        self.index: dict[tuple[str, tuple[str, ...], tuple[str, ...]], int] = {}
        self.firsts: list[int] = []  # first counter of each block, ascending
        self.blocks: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
        self.counts = array("q")

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

    def take(self) -> tuple[array[int], int]:
        """Swap in zeroed counters (on the event loop: a memory copy, no Python loop) and
        return the old ones with the number of blocks they cover, for `rows`."""
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
