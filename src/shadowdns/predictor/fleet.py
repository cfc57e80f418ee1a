"""The forecasting state of every active series, advanced together each window.

Fitted series of one model family and shape are stacked into one batch kernel, so a window's
refresh is a few numpy operations per family whatever the number of series: `update` feeds
one new value per series (NaN where none came), `forecast` returns every series' forecast.
Refits happen elsewhere, on a slower schedule, a slice of the series at a time; `replace`
swaps their rows in.

All kernels in a fleet share one clock: they must have seen the same steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from shadowdns.predictor.base import Fitted
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import Kernel

IntArray = npt.NDArray[np.int64]
K = TypeVar("K", bound=Hashable)


def _array_fields(kernel: Kernel) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(kernel)  # type: ignore[arg-type]
        if isinstance(getattr(kernel, f.name), np.ndarray)
    ]


def signature(kernel: Kernel) -> tuple[Any, ...]:
    """What kernels must share to stack: type, other fields, and array shapes past axis 0.

    The clock ``t`` is left out: the fleet checks it once for all.
    """
    parts: list[Any] = [type(kernel)]
    for f in dataclasses.fields(kernel):  # type: ignore[arg-type]
        value = getattr(kernel, f.name)
        if isinstance(value, np.ndarray):
            if f.name != "offset":
                parts.append((f.name, value.shape[1:]))
        elif f.name != "t":
            try:
                hash(value)
            except TypeError:
                value = id(value)
            parts.append((f.name, value))
    return tuple(parts)


def _pad_offset(offset: FloatArray, width: int) -> FloatArray:
    if offset.shape[1] >= width:
        return offset[:, :width]
    extra = np.repeat(offset[:, -1:], width - offset.shape[1], axis=1)
    return np.hstack([offset, extra])


def stack(kernels: list[Kernel]) -> Kernel:
    """One batch kernel holding the rows of ``kernels`` (same `signature`), in order."""
    first = kernels[0]
    width = max(k.offset.shape[1] for k in kernels)
    changes: dict[str, FloatArray] = {}
    for name in _array_fields(first):
        parts = [getattr(k, name) for k in kernels]
        if name == "offset":
            parts = [_pad_offset(p, width) for p in parts]
        changes[name] = np.concatenate(parts, axis=0)
    out: Kernel = dataclasses.replace(first, **changes)  # type: ignore[type-var]
    return out


def row(kernel: Kernel, i: int) -> Kernel:
    """Row ``i`` of a batch kernel as a kernel of one series (a copy)."""
    changes = {name: getattr(kernel, name)[i : i + 1].copy() for name in _array_fields(kernel)}
    out: Kernel = dataclasses.replace(kernel, **changes)  # type: ignore[type-var]
    return out


@dataclass(eq=False)
class Group:
    """One batch kernel and where its rows sit in the fleet's order."""

    kernel: Kernel
    positions: IntArray


class Fleet(Generic[K]):
    """Batch kernels for many series, addressed by key in a fixed order (`keys`)."""

    def __init__(self, fitted: Mapping[K, Fitted]) -> None:
        self.keys: list[K] = list(fitted)
        self.models: list[str] = [fitted[k].model for k in self.keys]
        self._index: dict[K, int] = {k: i for i, k in enumerate(self.keys)}
        self._where: dict[K, tuple[int, int]] = {}
        clocks = {f.kernel.t for f in fitted.values()}
        if len(clocks) > 1:
            raise ValueError(f"series are at different steps: {sorted(clocks)[:5]}")
        self.groups: list[Group] = []
        by_signature: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(self.keys):
            by_signature.setdefault(signature(fitted[key].kernel), []).append(i)
        for positions in by_signature.values():
            kernels = [fitted[self.keys[i]].kernel for i in positions]
            g = len(self.groups)
            self.groups.append(Group(stack(kernels), np.array(positions, dtype=np.int64)))
            for r, i in enumerate(positions):
                self._where[self.keys[i]] = (g, r)

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[list[K], list[str], Kernel]]) -> Fleet[K]:
        """A fleet from already-stacked batch kernels: (keys, models, kernel) per batch."""
        fleet: Fleet[K] = cls({})
        for keys, models, kernel in batches:
            g = len(fleet.groups)
            start = len(fleet.keys)
            positions = np.arange(start, start + len(keys), dtype=np.int64)
            fleet.groups.append(Group(kernel, positions))
            for r, key in enumerate(keys):
                fleet._index[key] = start + r
                fleet._where[key] = (g, r)
            fleet.keys.extend(keys)
            fleet.models.extend(models)
        return fleet

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def t(self) -> int | None:
        """The step every series will see next (None for an empty fleet)."""
        return self.groups[0].kernel.t if self.groups else None

    def update(self, values: FloatArray) -> None:
        """Advance every series by one step; ``values`` follows `keys` (NaN = no value)."""
        for group in self.groups:
            group.kernel.update(values[group.positions])

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        """Point and upper forecasts of every series, ``(len(keys), horizon)``, in key order."""
        point = np.zeros((len(self.keys), horizon))
        upper = np.zeros((len(self.keys), horizon))
        for group in self.groups:
            p, u = group.kernel.forecast(horizon)
            point[group.positions] = p
            upper[group.positions] = u
        return point, upper

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def fitted(self, key: K) -> Fitted:
        """The state of one series, as its own `Fitted` (a copy)."""
        g, r = self._where[key]
        return Fitted(self.models[self._index[key]], row(self.groups[g].kernel, r))

    def replace(self, refits: Mapping[K, Fitted]) -> Fleet[K]:
        """The fleet with some series refitted (or added): rows swap in place when shapes
        agree, otherwise the fleet is restacked."""
        index = self._index
        in_place = all(
            key in index
            and signature(f.kernel) == signature(self.groups[self._where[key][0]].kernel)
            for key, f in refits.items()
        )
        if not in_place:
            everything = {k: self.fitted(k) for k in self.keys}
            everything.update(refits)
            return Fleet(everything)
        for key, f in refits.items():
            g, r = self._where[key]
            batch = self.groups[g].kernel
            width = batch.offset.shape[1]
            for name in _array_fields(batch):
                value = getattr(f.kernel, name)
                if name == "offset":
                    value = _pad_offset(value, width)
                getattr(batch, name)[r] = value[0]
            self.models[index[key]] = f.model
        return self

    def select(self, keys: Iterable[K]) -> Fleet[K]:
        """A fleet of only ``keys`` (those it has), e.g. without series no longer active."""
        return Fleet({k: self.fitted(k) for k in keys if k in self._index})

    def items(self) -> Iterable[tuple[K, str]]:
        """(key, model) for every series."""
        return zip(self.keys, self.models, strict=True)


class Rows:
    """Batch kernels for series numbered 0, 1, 2, … that change model one at a time.

    The demand book's fleet: series join, and get a new kernel when a fit lands, every
    window, but are advanced and forecast all together. A changed series is only marked
    (its old row dead, its new kernel queued); the batches are rebuilt — one concatenation
    per touched batch, numpy only — the next time they are stepped or asked, so a window
    costs a few array operations per batch whatever the number of series and of changes.
    Every kernel must be at the clock of the others.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], Group] = {}
        self._ids: dict[tuple[Any, ...], int] = {}
        self._sigs: list[tuple[Any, ...]] = []
        self._queued: dict[tuple[Any, ...], list[tuple[IntArray, Kernel]]] = {}
        self._dead: dict[tuple[Any, ...], list[int]] = {}
        self._batch: IntArray = np.full(0, -1, dtype=np.int64)  # series -> batch id
        self._row: IntArray = np.zeros(0, dtype=np.int64)  # series -> row in its batch
        self._waiting: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)  # queued, not in

    def _grow(self, size: int) -> None:
        if size > len(self._batch):
            cap = max(size, 2 * len(self._batch), 64)
            self._batch = np.concatenate([self._batch, np.full(cap - len(self._batch), -1)])
            self._row = np.concatenate([self._row, np.zeros(cap - len(self._row), np.int64)])
            self._waiting = np.concatenate([self._waiting, np.zeros(cap - len(self._waiting),
                                                                    dtype=bool)])

    def put(self, series: IntArray, kernel: Kernel) -> None:
        """Give ``series`` (one per row of ``kernel``, in order) that batch kernel's rows."""
        series = np.asarray(series, dtype=np.int64)
        if not len(series):
            return
        self._grow(int(series.max()) + 1)
        if self._waiting[series].any():  # queued twice: the older one must land first
            self._flush()
        had = series[self._batch[series] >= 0]
        for s in had.tolist():
            self._dead.setdefault(self._sigs[self._batch[s]], []).append(int(self._row[s]))
        self._batch[series] = -1
        sig = signature(kernel)
        if sig not in self._ids:
            self._ids[sig] = len(self._sigs)
            self._sigs.append(sig)
        self._queued.setdefault(sig, []).append((series, kernel))
        self._waiting[series] = True

    def kernel(self, s: int) -> Kernel | None:
        """Series ``s``'s own kernel (a copy), None when it has none."""
        self._flush()
        if s >= len(self._batch) or self._batch[s] < 0:
            return None
        return row(self.groups[self._sigs[self._batch[s]]].kernel, int(self._row[s]))

    def batches(self) -> list[Group]:
        """The current batches (``positions`` are series numbers)."""
        self._flush()
        return list(self.groups.values())

    def _flush(self) -> None:
        for sig in set(self._queued) | set(self._dead):
            group = self.groups.pop(sig, None)
            kernels: list[Kernel] = []
            members: list[IntArray] = []
            if group is not None:
                dead = self._dead.get(sig, [])
                keep = np.ones(len(group.positions), dtype=bool)
                keep[dead] = False
                if keep.all():
                    kernels.append(group.kernel)
                    members.append(group.positions)
                elif keep.any():
                    kernels.append(_take(group.kernel, keep))
                    members.append(group.positions[keep])
            for series, kernel in self._queued.get(sig, []):
                kernels.append(kernel)
                members.append(series)
            if not kernels:
                continue
            positions = np.concatenate(members)
            self.groups[sig] = Group(stack(kernels) if len(kernels) > 1 else kernels[0],
                                     positions)
            self._batch[positions] = self._ids[sig]
            self._row[positions] = np.arange(len(positions))
        self._queued.clear()
        self._dead.clear()
        self._waiting[:] = False


def _take(kernel: Kernel, keep: npt.NDArray[np.bool_]) -> Kernel:
    changes = {name: getattr(kernel, name)[keep] for name in _array_fields(kernel)}
    out: Kernel = dataclasses.replace(kernel, **changes)  # type: ignore[type-var]
    return out
