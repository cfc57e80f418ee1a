"""Demand points of many series as a few numpy arrays, as the store reads them.

The allocator reads two weeks of 5-minute history for up to 100,000 series at start:
tens of millions of points. As Python tuples in per-series lists they took 11 GiB, and
freeing them was one uninterruptible stall of the event loop's thread (seconds, no
answer meanwhile). As columns they are 24 bytes a point, built from the cursor in
batches and freed at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
SeriesKey = tuple[str, str]
"""One demand series: (di, region)."""


@dataclass(frozen=True)
class DemandColumns:
    """Point i: `queries[i]` queries in the bucket starting at `starts[i]` (epoch
    seconds) of series `keys[owner[i]]`. Every key has at least one point; a bucket
    without a point means zero queries. Points may come in any order."""

    keys: list[SeriesKey]
    owner: IntArray
    starts: IntArray
    queries: IntArray

    def __len__(self) -> int:
        return len(self.owner)

    @classmethod
    def empty(cls) -> DemandColumns:
        none = np.zeros(0, dtype=np.int64)
        return cls([], none, none, none)

    @classmethod
    def from_batches(cls, batches: Iterable[Sequence[Sequence[int]]]
                     ) -> tuple[DemandColumns, IntArray]:
        """Columns from batches of (series id, bucket start, queries) rows ordered by
        bucket start then series id (a cursor's `fetchmany`); rows of one id and bucket
        (one per answer kind) are summed. Returns the columns, their keys still to be
        named (`with_keys`), and the distinct series ids in the order `keys` must take."""
        parts = [np.array(rows, dtype=np.int64).reshape(-1, 3) for rows in batches]
        if not parts:
            return cls.empty(), np.zeros(0, dtype=np.int64)
        raw = np.concatenate(parts)
        del parts
        ids, starts, queries = raw[:, 0], raw[:, 1], raw[:, 2]
        first = np.ones(len(raw), dtype=bool)  # the first row of each (bucket, series)
        first[1:] = (ids[1:] != ids[:-1]) | (starts[1:] != starts[:-1])
        at = np.flatnonzero(first)
        summed = np.add.reduceat(queries, at) if len(at) else queries[:0]
        distinct, owner = np.unique(ids[at], return_inverse=True)
        return cls([], owner.astype(np.int64), starts[at].copy(), summed), distinct

    def with_keys(self, keys: list[SeriesKey]) -> DemandColumns:
        return DemandColumns(keys, self.owner, self.starts, self.queries)

    def totals(self) -> IntArray:
        """Queries per key, in the order of `keys`."""
        out: IntArray = np.bincount(self.owner, weights=self.queries,
                                    minlength=len(self.keys)).astype(np.int64)
        return out

    def only(self, keep: Iterable[SeriesKey]) -> DemandColumns:
        """The points of the keys in `keep` (those it has), the rest dropped."""
        wanted = set(keep)
        mask = np.array([k in wanted for k in self.keys], dtype=bool)
        if mask.all():
            return self
        renumber = np.cumsum(mask) - 1
        points = mask[self.owner] if len(self.owner) else np.zeros(0, dtype=bool)
        return DemandColumns([k for k, m in zip(self.keys, mask, strict=True) if m],
                             renumber[self.owner[points]].astype(np.int64),
                             self.starts[points], self.queries[points])

    def then(self, newer: DemandColumns) -> DemandColumns:
        """These points and `newer`'s, one set of keys."""
        if not len(self.keys):
            return newer
        if not len(newer.keys):
            return self
        index = {k: i for i, k in enumerate(self.keys)}
        keys = list(self.keys)
        remap = np.empty(len(newer.keys), dtype=np.int64)
        for j, k in enumerate(newer.keys):
            i = index.get(k)
            if i is None:
                i = index[k] = len(keys)
                keys.append(k)
            remap[j] = i
        return DemandColumns(keys, np.concatenate([self.owner, remap[newer.owner]]),
                             np.concatenate([self.starts, newer.starts]),
                             np.concatenate([self.queries, newer.queries]))

    def series(self) -> dict[SeriesKey, list[tuple[int, int]]]:
        """{key: [(bucket start, queries), ...]} with each key's points in time order."""
        order = np.lexsort((self.starts, self.owner))
        owner = self.owner[order]
        starts, queries = self.starts[order].tolist(), self.queries[order].tolist()
        bounds = np.searchsorted(owner, np.arange(len(self.keys) + 1)).tolist()
        return {key: list(zip(starts[bounds[i]:bounds[i + 1]],
                              queries[bounds[i]:bounds[i + 1]], strict=True))
                for i, key in enumerate(self.keys)}
