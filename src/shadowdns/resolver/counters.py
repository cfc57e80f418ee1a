"""Counts answers per (DI, region, kind) on the query path and hands them out in batches.

The query path only does `counts[i] += 1` on a list: the index of each (DI, region, kind)
is fixed when its answer is compiled. `drain` runs on the event loop between packets, so
reading and zeroing need no lock; the caller writes the batch to the store off the loop.
"""

from __future__ import annotations

import time


class DemandCounters:
    """An append-only registry of series and their counts since the last drain."""

    __slots__ = ("counts", "index", "keys")

    def __init__(self) -> None:
        self.index: dict[tuple[str, str, str], int] = {}
        self.keys: list[tuple[str, str, str]] = []
        self.counts: list[int] = []

    def slot(self, di: str, region: str, kind: str) -> int:
        key = (di, region, kind)
        idx = self.index.get(key)
        if idx is None:
            idx = len(self.keys)
            self.index[key] = idx
            self.keys.append(key)
            self.counts.append(0)
        return idx

    def drain(self) -> list[tuple[str, str, str, int]]:
        """(di, region, kind, queries) for every series counted since the last drain."""
        counts = self.counts
        out = []
        for i, value in enumerate(counts):
            if value:
                di, region, kind = self.keys[i]
                out.append((di, region, kind, value))
                counts[i] = 0
        return out

    def total(self) -> int:
        return sum(self.counts)


def minute(ts: float | None = None) -> int:
    t = time.time() if ts is None else ts
    return int(t // 60 * 60)
