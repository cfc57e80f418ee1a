"""Counts answers per (DI, region, kind) on the query path and hands them out in batches.

The query path only does `counts[i] += 1`: each DI's answer gets a block of counters, one
per region, when it is compiled. With a million DIs there are millions of counters, so they
live in one machine-word array (not a list of Python ints) that `drain` scans with numpy,
and a DI's block is registered once per distinct (DI, kinds) rather than per counter.
`drain` runs on the event loop between packets, so reading and zeroing need no lock; the
caller writes the batch to the store off the loop.
"""

from __future__ import annotations

import bisect
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

    def slot(self, di: str, region: str, kind: str) -> int:
        """The index of one (DI, region, kind) counter."""
        return self.block(di, (region,), (kind,))

    def drain(self) -> list[tuple[str, str, str, int]]:
        """(di, region, kind, queries) for every series counted since the last drain."""
        counts = self.counts
        if not counts:
            return []
        view = np.frombuffer(counts, dtype=np.int64)
        hot = np.flatnonzero(view).tolist()
        del view  # the array cannot grow while numpy holds its buffer
        out = []
        for i in hot:
            b = bisect.bisect_right(self.firsts, i) - 1
            di, regions, kinds = self.blocks[b]
            k = i - self.firsts[b]
            out.append((di, regions[k], kinds[k], counts[i]))
            counts[i] = 0
        return out

    def total(self) -> int:
        return int(np.frombuffer(self.counts, dtype=np.int64).sum()) if self.counts else 0


def minute(ts: float | None = None) -> int:
    t = time.time() if ts is None else ts
    return int(t // 60 * 60)
