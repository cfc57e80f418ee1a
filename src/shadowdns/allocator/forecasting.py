"""The allocator's view of demand: per (DI, region), observed buckets, a fitted forecaster
advanced bucket by bucket, and the rolling figures of how well it does.

This is a thin adapter over the predictor's public pieces (`make_forecaster`, `Auto`,
`FitSpec`, `Fitted`, the seasonal-naive `baseline`): the predictor fits and forecasts; this
book decides *when* to fit (a new series, every `refit_every`, or when its rolling error
degrades), keeps each series' state current with a cheap `update` per bucket, and answers
the allocator's question: the upper quantile over [now + lead, now + lead + window].

Fits are CPU-heavy: `due_fits` hands out jobs that the caller runs in a process pool
(`fit_job` is a plain top-level function), and `apply_fit` swaps the result in, catching
the new state up on buckets observed meanwhile. Until a series has a real fit it is
forecast inline (instant) by its last bucket, or by the seasonal naive at its period once
one is found: nothing else is known yet, so it plans as the reactive rule does. `auto`
also weighs the last bucket (`LastValue`) against the models, and a daily fit too short
for `auto` to choose (at two days) falls back to it rather than to an untested season:
where nothing is predictable the forecast is what the reactive rule plans on.

The season is a day, except for a young series: a timer-driven service that bursts every
15 minutes, hour or four hours shows that period after three cycles, long before the two
days a daily fit needs. While a series is younger than that, `due_fits` looks for its
period (`predictor.periods.detect`, wall-clock periods only: divisors of a day) each time
its history has grown by a quarter; once found, the baseline and the fits use it as their
season (refitted as the history doubles), and the daily fits take over at two days (a day
holds every such period). The planner reads the forecast for [now + lead, now + lead +
window], so a burst every P buckets is pre-warmed a lead time before it.

The allocator's trigger is the *probability* that demand crosses the DI's threshold in the
window (`DemandView.p_cross`), not the upper quantile crossing it: the book keeps, per
series and per forecast step, the signed errors of the forecasts it really made over the
last `2 × season` buckets (`hstep_errors`), so P(actual >= threshold) = the share of those
errors that would have put the point forecast at or above it — calibrated online at the
very horizon the decision looks at, whatever the model. The upper quantile stays what a
shadow is sized for (capacity) and recorded with it.

Those errors are pooled over all origins, so the probability is right on average but not
where it matters: a flat forecast of a spiky series says "50 %" whenever half of the
recent buckets crossed, and such calls came true a quarter of the time on the AWS ELB
trace (the base rate). So the book also scores the calls it answered: each `view` is
remembered with its window, and when the window's buckets arrive the call's bin of
probability (tenths) counts whether demand crossed. The probability given to the planner
is that bin's observed frequency over the last two days of calls, shrunk towards the raw
one while the bin has few of them (`CALIBRATION_PRIOR`): a series whose forecast calls
crossings no better than chance stops triggering allocations, one whose calls come true
keeps them.

Dynamic adjustment lives here too: a bucket whose actual demand exceeds the upper band
forecast for it one bucket earlier is a *miss*; `topup_after` misses in a row (with demand
at the threshold) flag the series for a reactive top-up, and the misses are kept.

Layout: one engine for 100,000 series. Every series is a row number; its kernel lives in
the predictor's batch kernels (`predictor.fleet.Rows`, one batch per model family and
shape, as `forecast run`'s fleet), and everything else the book keeps of it is a row of a
numpy array: the last `history` of buckets (a ring indexed by bucket number), the rolling
one-step errors, the forecasts of the last origins and their signed errors per step, the
open calls and their calibration. All series share one clock (`end`: every read observes
the last complete bucket for all of them), so advancing the book by a bucket, forecasting
the window and answering the planner are a few numpy operations per batch and per array,
not a Python loop per series; only fits (a bounded number per window) and the few
series that missed are touched one by one.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from shadowdns.allocator.planner import DemandView
from shadowdns.predictor.base import FitSpec, Fitted, quiet
from shadowdns.predictor.baseline import SeasonalNaive
from shadowdns.predictor.fleet import Rows
from shadowdns.predictor.last import LastValue, last_values
from shadowdns.predictor.periods import MIN_CYCLES, calendar_periods, detect
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import Kernel, SeasonalNaiveKernel
from shadowdns.store.demand_columns import DemandColumns

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MIN_HSTEP_ERRORS = 24
"""Errors a step needs before `p_cross` uses them; until then the point forecast decides
(P = 1 at or above the threshold, else 0: the median-ish guess)."""

CALIBRATION_BINS = 10
CALIBRATION_PRIOR = 2.0
"""Pseudo-calls at the raw probability in each bin: the observed frequency of a bin
outweighs the raw probability once it holds more calls than this."""

FIRST_PERIOD_CHECK = 12
"""Buckets a series needs before its period is first looked for (3 cycles of 4)."""

OPEN_CALLS = 32
"""Crossing calls a series keeps open (not yet judged) at most; a newer one drops the
oldest unjudged, as a full deque would. One call per window: 32 cover a lead time of
2.5 hours at 5-minute windows."""

MIN_FITS = 256
"""Fit jobs `due_fits` hands out per call at least. A fleet gets more: four times its share
of refits per bucket (each series once per `refit_every`), so first fits of a big fleet
are spread over windows instead of queued all at once."""

CHUNK = 8192
"""Series per block when a window's crossing probabilities are counted: keeps the
temporaries (block × 2 days of errors) to tens of MB."""

STORED = np.float32
"""Buckets and errors are stored as float32: counts are integers (exact below 2**24), and
the book's memory is two weeks of buckets and two days of errors per series."""

MAX_MISSES = 1000

TIME_MAJOR = frozenset({"values", "err_model", "err_naive", "err_covered", "hstep"})
"""Rings indexed by bucket number with the series axis last (see `DemandBook._specs`)."""


def fit_job(model: str, values: FloatArray, season: int, horizon: int, start: int,
            quantile: float, lstm: bool = False) -> Fitted:
    """Fit one series (runs in a worker process) as every command does
    (`selection.fit_all`); a model that cannot fit falls back to the baseline inside the
    predictor. `auto` chooses among the statistical models and the last value, and with
    `lstm` (allocator.yaml `lstm: true`, torch installed) the LSTM too, trained on this one
    series as `forecast predict` trains it: about a CPU-second per series and refit, so it
    is the operator's choice. When the history is too short for `auto` to choose (it
    validates on two seasons) and too short to trust the season (fewer than `MIN_CYCLES`
    cycles: the daily fit at two days), the fallback is the last value, not an untested
    season."""
    from shadowdns.predictor.names import lstm_available
    from shadowdns.predictor.selection import Auto, candidates, fit_all, make_forecaster

    spec = FitSpec(season=season, horizon=horizon, start=start, quantile=quantile)
    with quiet():
        if model == "auto":
            network = make_forecaster("lstm") if lstm and lstm_available() else None
            [fitted] = fit_all(Auto(candidates(network)), [(values, spec)])
            if not fitted.scores and len(values) < MIN_CYCLES * season:
                return LastValue().fit(values, spec)
            return fitted
        [fitted] = fit_all(make_forecaster(model), [(values, spec)])
    return fitted


CONVERT = 1 << 14
"""Points of a mapping converted from Python to numpy per call: numpy holds the GIL for
the whole of one conversion, so many points go in slices (a few ms each) that the event
loop's thread can run between. (The store's reads come as `DemandColumns` already.)"""


def _points(rows: DemandColumns | Mapping[SeriesKey, Sequence[tuple[int, float]]]
            ) -> tuple[Sequence[SeriesKey], IntArray, IntArray, FloatArray]:
    """(keys, owner, bucket start, queries) of every point: `DemandColumns` as they are,
    a mapping of per-series lists (a bucket's minutes, the simulator) converted."""
    if isinstance(rows, DemandColumns):
        return rows.keys, rows.owner, rows.starts, rows.queries.astype(np.float64)
    keys = list(rows)
    counts = [len(points) for points in rows.values()]
    total = sum(counts)
    flat = np.empty(2 * total)
    at = 0
    chunk: list[tuple[int, float]] = []

    def convert() -> None:
        nonlocal at
        n = 2 * len(chunk)
        flat[at:at + n] = np.fromiter(itertools.chain.from_iterable(chunk), np.float64, n)
        at += n
        chunk.clear()

    for points in rows.values():
        chunk.extend(points)
        if len(chunk) >= CONVERT:
            convert()
    if chunk:
        convert()
    pairs = flat.reshape(-1, 2)
    owner = np.repeat(np.arange(len(keys), dtype=np.int64), counts)
    return keys, owner, pairs[:, 0].astype(np.int64), pairs[:, 1]


def _span(rows: IntArray, n: int) -> IntArray | slice:
    """`rows` (sorted, distinct, below `n`) as the slice `[:n]` when they are all `n`:
    a bucket's step reads and writes every series' row at once, and a slice is a view
    where an index array copies (the step over 100,000 series was mostly such copies)."""
    return slice(0, n) if len(rows) == n else rows


def _bins(p: FloatArray) -> IntArray:
    out: IntArray = np.clip((p * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
    return out


@dataclass(frozen=True, slots=True)
class FitRequest:
    key: SeriesKey
    model: str
    values: FloatArray
    season: int
    horizon: int
    start: int
    quantile: float
    upto: int  # bucket index after the last value fitted
    reason: str


@dataclass(frozen=True, slots=True)
class Miss:
    """Actual demand above the forecast's upper band for one bucket."""

    di: str
    region: str
    bucket: int  # start, epoch seconds
    actual: float
    upper: float
    streak: int


@dataclass(frozen=True, slots=True)
class SeriesParams:
    """Per-series knobs from the DI's policy."""

    model: str = "auto"
    threshold: float = 100.0
    quantile: float = 0.9
    horizon: int = 4


class SeriesRow:
    """One series as the controller, the API and the simulator read it: a view of its row
    in the book's arrays (made on access, holds nothing)."""

    __slots__ = ("book", "i", "key")

    def __init__(self, book: DemandBook, i: int, key: SeriesKey) -> None:
        self.book, self.i, self.key = book, i, key

    @property
    def model(self) -> str:
        return str(self.book.model[self.i])

    @property
    def topup(self) -> bool:
        return bool(self.book.topup[self.i])

    @property
    def misses(self) -> int:
        return int(self.book.streak[self.i])

    @property
    def real_fit(self) -> bool:
        return bool(self.book.real_fit[self.i])

    @property
    def period(self) -> int:
        return int(self.book.period[self.i])

    @property
    def end(self) -> int:
        """Bucket index after the last observed one."""
        return self.book.end or 0

    @property
    def start(self) -> int:
        """Bucket index of the oldest bucket kept."""
        return self.end - self.book.length(self.i)

    @property
    def values(self) -> FloatArray:
        """The buckets kept, oldest first (a copy)."""
        return self.book.history(self.i)

    @property
    def fitted(self) -> Fitted | None:
        kernel = self.book.kernels.kernel(self.i)
        return None if kernel is None else Fitted(self.model, kernel)


class _Series(Mapping[SeriesKey, SeriesRow]):
    def __init__(self, book: DemandBook) -> None:
        self._book = book

    def __getitem__(self, key: SeriesKey) -> SeriesRow:
        return SeriesRow(self._book, self._book.index[key], key)

    def __contains__(self, key: object) -> bool:
        return key in self._book.index

    def __iter__(self) -> Iterator[SeriesKey]:
        return iter(list(self._book.keys))  # a copy: the book thread may add

    def __len__(self) -> int:
        return len(self._book.keys)


class DemandBook:
    """Every series the allocator plans for (see the module docstring)."""

    # one row per series (see `_specs`)
    birth: IntArray
    streak: IntArray
    err_count: IntArray
    pending_origin: IntArray
    hstep_count: IntArray
    call_first: IntArray
    call_end: IntArray
    call_head: IntArray
    call_count: IntArray
    period: IntArray
    checked_len: IntArray
    fitted_len: IntArray
    horizon: IntArray
    values: npt.NDArray[Any]
    last_above: npt.NDArray[Any]
    next_point: npt.NDArray[Any]
    next_upper: npt.NDArray[Any]
    err_model: npt.NDArray[Any]
    err_naive: npt.NDArray[Any]
    err_covered: npt.NDArray[Any]
    pending: npt.NDArray[Any]
    hstep: npt.NDArray[Any]
    call_raw: npt.NDArray[Any]
    calibration: npt.NDArray[Any]
    fitted_at: npt.NDArray[Any]
    threshold: npt.NDArray[Any]
    quantile: npt.NDArray[Any]
    topup: BoolArray
    call_hit: BoolArray
    fit_pending: BoolArray
    real_fit: BoolArray
    selected: BoolArray
    degraded: BoolArray
    model: npt.NDArray[np.object_]
    p_model: npt.NDArray[np.object_]

    def __init__(self, bucket: int, history: float = 14 * 86400.0,
                 refit_every: float = 86400.0, topup_after: int = 3,
                 error_window: int = 288, degrade_factor: float = 1.5,
                 forecasts: bool = True) -> None:
        self.bucket = bucket
        # False: keep only what the reactive rule reads (values, last bucket above the
        # threshold) — the simulator's reactive and oracle runs, which never use a forecast
        self.forecasts = forecasts
        self.season = max(1, 86400 // bucket)
        self.max_len = max(int(history // bucket), 2 * self.season + 16)
        self.hstep_window = 2 * self.season
        self.refit_every = refit_every
        self.topup_after = topup_after
        self.error_window = max(1, error_window)
        self.degrade_factor = degrade_factor
        self.calendar = calendar_periods(bucket, self.season)
        self.keys: list[SeriesKey] = []
        self.index: dict[SeriesKey, int] = {}
        self.series: Mapping[SeriesKey, SeriesRow] = _Series(self)
        self.kernels = Rows()
        self.end: int | None = None  # bucket index after the last one every series saw
        self.misses: deque[Miss] = deque(maxlen=MAX_MISSES)
        self.miss_total = 0
        self.refits: dict[str, int] = {}
        self._rows_of_di: dict[str, list[int]] = {}
        self._di_params: dict[str, SeriesParams] = {}
        self._width = 1  # steps of forecast kept per origin: the longest horizon
        self._misses_seen: list[tuple[int, IntArray, FloatArray, FloatArray, IntArray]] = []
        self._cap = 0
        self._alloc(0, 16)

    # --- the arrays ----------------------------------------------------------------------

    def _specs(self) -> dict[str, tuple[tuple[int, ...], Any, Any]]:
        """name -> (shape past the series axis, dtype, fill) of every per-series array.
        The rings written every bucket (`TIME_MAJOR`) have the series axis last: one
        bucket's write for every series is then one contiguous stretch of memory."""
        w, h, c = self.error_window, self._width, OPEN_CALLS
        return {
            "birth": ((), np.int64, 0), "values": ((self.max_len,), STORED, 0.0),
            "last_above": ((), np.float64, np.nan),
            "next_point": ((), np.float64, np.nan), "next_upper": ((), np.float64, np.nan),
            "streak": ((), np.int64, 0), "topup": ((), np.bool_, False),
            "err_model": ((w,), STORED, 0.0), "err_naive": ((w,), STORED, 0.0),
            "err_covered": ((w,), STORED, 0.0),
            "err_count": ((), np.int64, 0),
            "pending": ((h, h), np.float64, 0.0), "pending_origin": ((h,), np.int64, -1),
            "hstep": ((self.hstep_window, h), STORED, 0.0), "hstep_count": ((h,), np.int64, 0),
            "call_first": ((c,), np.int64, 0), "call_end": ((c,), np.int64, 0),
            "call_raw": ((c,), np.float64, 0.0), "call_hit": ((c,), np.bool_, False),
            "call_head": ((), np.int64, 0), "call_count": ((), np.int64, 0),
            "calibration": ((2, CALIBRATION_BINS), np.float64, 0.0),
            "period": ((), np.int64, 0), "checked_len": ((), np.int64, 0),
            "fitted_len": ((), np.int64, 0), "fitted_at": ((), np.float64, np.nan),
            "fit_pending": ((), np.bool_, False), "real_fit": ((), np.bool_, False),
            "selected": ((), np.bool_, False), "degraded": ((), np.bool_, False),
            "model": ((), object, "none"), "p_model": ((), object, "auto"),
            "threshold": ((), np.float64, 100.0), "quantile": ((), np.float64, 0.9),
            "horizon": ((), np.int64, 4),
        }

    def _alloc(self, size: int, cap: int) -> None:
        """Grow every array to `cap` series (keeping the first `size`)."""
        for name, (shape, dtype, fill) in self._specs().items():
            if name in TIME_MAJOR:
                new = np.zeros((*shape, cap), dtype=dtype)
            elif fill == 0:
                new = np.zeros((cap, *shape), dtype=dtype)  # untouched pages cost nothing
            else:
                new = np.full((cap, *shape), fill, dtype=dtype)
            old = getattr(self, name, None)
            if old is not None and size:
                if name in TIME_MAJOR:
                    new[..., :size] = old[..., :size]
                else:
                    new[:size] = old[:size]
            setattr(self, name, new)
        self._cap = cap

    def reserve(self, count: int) -> None:
        """Room for `count` series in all (one growth instead of many doublings)."""
        if count > self._cap:
            self._alloc(len(self.keys), max(count, 2 * self._cap))

    def _widen(self, width: int) -> None:
        """Keep `width` steps of forecast per origin (a DI's horizon grew)."""
        n = len(self.keys)
        old_hstep, old_count = self.hstep, self.hstep_count
        self._width = width
        for name in ("pending", "pending_origin", "hstep", "hstep_count"):
            shape, dtype, fill = self._specs()[name]
            if name in TIME_MAJOR:
                setattr(self, name, np.zeros((*shape, self._cap), dtype=dtype))
            else:
                setattr(self, name, np.full((self._cap, *shape), fill, dtype=dtype))
        # origins are slotted by (origin % width): the old forecasts do not carry over
        w = old_hstep.shape[1]
        self.hstep[:, :w, :n] = old_hstep[:, :, :n]
        self.hstep_count[:n, :w] = old_count[:n]

    def lengths(self) -> IntArray:
        """Buckets kept per series."""
        n = len(self.keys)
        if self.end is None:
            return np.zeros(n, dtype=np.int64)
        out: IntArray = np.clip(self.end - self.birth[:n], 0, self.max_len)
        return out

    def length(self, i: int) -> int:
        return 0 if self.end is None else max(0, min(self.end - int(self.birth[i]),
                                                      self.max_len))

    def _window(self, rows: IntArray, n: int) -> FloatArray:
        """The last `n` buckets of `rows` (same length), oldest first, as float64."""
        assert self.end is not None
        cols = np.arange(self.end - n, self.end) % self.max_len
        out: FloatArray = self.values[np.ix_(cols, rows)].T.astype(np.float64)
        return out

    def recent_means(self, keys: Sequence[SeriesKey], n: int) -> FloatArray:
        """The mean of each series' last `n` buckets (of all it has when younger, 0 when
        it has none)."""
        rows = np.array([self.index[k] for k in keys], dtype=np.int64)
        if self.end is None or not len(rows) or n < 1:
            return np.zeros(len(rows))
        n = min(n, self.max_len)
        have = np.minimum(self.lengths()[rows], n)
        kept = np.arange(n)[None, :] >= (n - have)[:, None]  # the ring's older cells are stale
        out: FloatArray = (np.where(kept, self._window(rows, n), 0.0).sum(axis=1)
                           / np.maximum(have, 1))
        return out

    def history(self, i: int) -> FloatArray:
        out: FloatArray = self._window(np.array([i]), self.length(i))[0]
        return out

    def params_of(self, i: int) -> SeriesParams:
        return SeriesParams(str(self.p_model[i]), float(self.threshold[i]),
                            float(self.quantile[i]), int(self.horizon[i]))

    def _set_params(self, rows: Sequence[int], p: SeriesParams) -> None:
        self.p_model[rows] = p.model
        self.threshold[rows] = p.threshold
        self.quantile[rows] = p.quantile
        self.horizon[rows] = max(1, p.horizon)
        if max(1, p.horizon) > self._width:
            self._widen(max(1, p.horizon))

    def set_params(self, params: Mapping[SeriesKey, SeriesParams]) -> None:
        for key, p in params.items():
            if key in self.index:
                self._set_params([self.index[key]], p)

    # --- observing ------------------------------------------------------------------------

    def observe(self, key: SeriesKey, bucket_index: int, value: float,
                params: SeriesParams | None = None) -> None:
        """Record the complete bucket `bucket_index` (start = index × bucket) of `key`.

        Every series the book follows is advanced to it (the book has one clock); a
        bucket before the book's clock is ignored (already seen).
        """
        p = params or (self.params_of(self.index[key]) if key in self.index
                       else SeriesParams())
        self.advance({key: [(bucket_index * self.bucket, value)]}, bucket_index,
                     {key[0]: p})

    def advance(self, rows: DemandColumns | Mapping[SeriesKey, Sequence[tuple[int, float]]],
                last: int, params: Mapping[str, SeriesParams]) -> None:
        """Observe `rows` — (bucket start in seconds, queries) per series; minutes or
        coarser, several per bucket are summed — up to and including bucket index `last`.
        Every series the book follows advances to `last` (no row: no queries); a series
        is added from its first bucket when its DI has `params`."""
        start = self.end
        born: dict[int, list[int]] = {}
        keys, owner, starts, values = _points(rows)
        known = [self.index.get(key, -1) for key in keys]
        series = np.array(known, dtype=np.int64)[owner]
        bucket_of = starts // self.bucket
        keep = bucket_of <= last
        if start is not None:
            keep &= bucket_of >= start
        if -1 in known:  # new series: from their first bucket, when their DI has params
            firsts = np.full(len(known), np.iinfo(np.int64).max)
            np.minimum.at(firsts, owner[keep], bucket_of[keep])
            new = [key for j, key in enumerate(keys)
                   if known[j] == -1 and firsts[j] <= last and key[0] in params]
            if new:  # widen and grow once, while the arrays are the smallest
                width = max(max(1, params[key[0]].horizon) for key in new)
                if width > self._width:
                    self._widen(width)
                self.reserve(len(self.keys) + len(new))
            for j, key in enumerate(keys):
                if known[j] == -1 and firsts[j] <= last and key[0] in params:
                    i = self._add(key, int(firsts[j]))
                    born.setdefault(int(self.birth[i]), []).append(i)
                    known[j] = i
            series = np.array(known, dtype=np.int64)[owner]
        keep &= series >= 0
        self._update_params(params)
        if start is None:
            if not born:
                return
            start = min(born)
        if last < start:
            return
        n = len(self.keys)
        flat_idx, flat_row, flat_val = bucket_of[keep], series[keep], values[keep]
        order = np.argsort(flat_idx, kind="stable")
        flat_idx, flat_row, flat_val = flat_idx[order], flat_row[order], flat_val[order]
        step_block = max(1, min(256, (1 << 22) // max(1, n)))  # ~32 MB of buckets at once
        for c0 in range(start, last + 1, step_block):
            c1 = min(last + 1, c0 + step_block)
            lo, hi = np.searchsorted(flat_idx, [c0, c1])
            cell = (flat_idx[lo:hi] - c0) * n + flat_row[lo:hi]
            block = np.bincount(cell, weights=flat_val[lo:hi],
                                minlength=(c1 - c0) * n).reshape(c1 - c0, n)
            for t in range(c0, c1):
                self._step(t, block[t - c0], np.array(born.get(t, []), dtype=np.int64))
        self._keep_misses()

    def _add(self, key: SeriesKey, birth: int) -> int:
        i = len(self.keys)
        if i == self._cap:
            self._alloc(i, 2 * self._cap)
        self.keys.append(key)
        self.index[key] = i
        self.birth[i] = birth
        self._rows_of_di.setdefault(key[0], []).append(i)
        self._di_params.pop(key[0], None)  # its new series need the DI's parameters
        return i

    def _update_params(self, params: Mapping[str, SeriesParams]) -> None:
        changed: dict[SeriesParams, list[int]] = {}
        for di, rows in self._rows_of_di.items():
            p = params.get(di) if di in params else None
            if p is not None and p != self._di_params.get(di):
                self._di_params[di] = p
                changed.setdefault(p, []).extend(rows)
        for p, rows in changed.items():  # one assignment per distinct policy
            self._set_params(rows, p)

    def _step(self, idx: int, y: FloatArray, born: IntArray) -> None:
        """Every series observes bucket `idx` (`y` per series; `born`: its first)."""
        n = len(self.keys)
        L = self.max_len
        live = self.birth[:n] <= idx
        crossed = y >= self.threshold[:n]
        self.end = idx + 1
        if not self.forecasts:
            self.last_above[:n][live & crossed] = (idx + 1) * self.bucket
            self.values[idx % L, :n] = y  # not born yet: never read
            return
        old = np.flatnonzero(live & (self.birth[:n] < idx))
        self._score(idx, y, old)
        self._hstep_errors(idx, y, old)
        self._judge(idx, crossed, old)
        self.last_above[:n][live & crossed] = (idx + 1) * self.bucket
        rows = _span(np.flatnonzero(live), n)
        self.values[idx % L, :n] = y  # not born yet: never read
        for group in self.kernels.batches():
            group.kernel.update(y[group.positions])
        if len(born):
            self.kernels.put(born, SeasonalNaiveKernel(
                y[born][:, None].astype(np.float64), np.zeros((len(born), 1)), idx + 1))
            self.model[born] = "last"
            self.fitted_len[born] = 1
        point, upper = self._forecast_all(self._width)
        self._remember(rows, point[rows], upper[rows])

    def _score(self, idx: int, y: FloatArray, old: IntArray) -> None:
        """Misses, top-up flags and the rolling one-step errors of the series that had a
        forecast for `idx`."""
        rows = old[np.isfinite(self.next_upper[old])]
        if not len(rows):
            return
        r = _span(rows, len(self.keys))
        v, up, pt = y[r], self.next_upper[r], self.next_point[r]
        miss = v > up
        streak = np.where(miss, self.streak[r] + 1, 0)
        self.streak[r] = streak
        if miss.any():
            self.miss_total += int(miss.sum())
            self._misses_seen.append((idx, rows[miss], v[miss], up[miss], streak[miss]))
        self.topup[r] = (streak >= self.topup_after) & (v >= self.threshold[r])
        L = self.max_len
        before = np.minimum(idx - self.birth[r], L)
        naive = np.where(before >= self.season, self.values[(idx - self.season) % L, r],
                         np.where(before > 0, self.values[(idx - 1) % L, r], v))
        pos = idx % self.error_window
        self.err_model[pos, r] = np.abs(v - pt)
        self.err_naive[pos, r] = np.abs(v - naive)
        self.err_covered[pos, r] = v <= up
        self.err_count[r] = np.minimum(self.err_count[r] + 1, self.error_window)

    def _hstep_errors(self, idx: int, y: FloatArray, old: IntArray) -> None:
        """The signed errors of the forecasts made `s` buckets before `idx`, per step s."""
        h = self._width
        steps = np.arange(h)
        slots = (idx - steps) % h
        whole = _span(old, len(self.keys))
        ok = ((self.pending_origin[whole][:, slots] == idx - steps[None, :])
              & (steps[None, :] < self.horizon[whole][:, None]))
        pos = idx % self.hstep_window
        for s in range(h):
            col = ok[:, s]
            r = whole if col.all() else old[col]
            if isinstance(r, slice) or len(r):
                self.hstep[pos, s, r] = y[r] - self.pending[r, slots[s], s]
                self.hstep_count[r, s] = np.minimum(self.hstep_count[r, s] + 1,
                                                    self.hstep_window)

    def _judge(self, idx: int, crossed: BoolArray, old: IntArray) -> None:
        """Bucket `idx` arrived: mark the calls it belongs to, score those it completes."""
        r = old[self.call_count[old] > 0]
        if not len(r):
            return
        c = OPEN_CALLS
        age = (np.arange(c)[None, :] - self.call_head[r][:, None]) % c
        open_ = age < self.call_count[r][:, None]
        inside = open_ & (self.call_first[r] <= idx) & (idx < self.call_end[r])
        self.call_hit[r] |= inside & crossed[r][:, None]
        decay = 1.0 - 1.0 / self.hstep_window
        for _ in range(c):
            head = self.call_head[r]
            done = (self.call_count[r] > 0) & (self.call_end[r, head] <= idx + 1)
            r, head = r[done], head[done]
            if not len(r):
                break
            raw, hit = self.call_raw[r, head], self.call_hit[r, head]
            b = _bins(raw)
            self.calibration[r] *= decay
            self.calibration[r, 0, b] += 1.0
            self.calibration[r, 1, b] += hit
            self.call_head[r] = (head + 1) % c
            self.call_count[r] -= 1

    def _keep_misses(self) -> None:
        """The newest `MAX_MISSES` misses of the last advance, as `Miss` records."""
        picked: list[tuple[int, IntArray, FloatArray, FloatArray, IntArray]] = []
        room = MAX_MISSES
        for idx, r, v, up, streak in reversed(self._misses_seen):
            if room <= 0:
                break
            picked.append((idx, r[-room:], v[-room:], up[-room:], streak[-room:]))
            room -= len(r[-room:])
        for idx, r, v, up, streak in reversed(picked):
            for i, a, u, k in zip(r.tolist(), v.tolist(), up.tolist(), streak.tolist(),
                                  strict=True):
                di, region = self.keys[i]
                self.misses.append(Miss(di, region, idx * self.bucket, a, u, k))
        self._misses_seen = []

    def _forecast_all(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        """(point, upper) of every series for `horizon` steps from the clock (NaN: none)."""
        n = len(self.keys)
        point = np.full((n, horizon), np.nan)
        upper = np.full((n, horizon), np.nan)
        for group in self.kernels.batches():
            p, u = group.kernel.forecast(horizon)
            point[group.positions] = p
            upper[group.positions] = u
        return point, upper

    def _remember(self, rows: IntArray | slice, point: FloatArray, upper: FloatArray) -> None:
        """Keep the forecasts of `rows` from the clock: the next step's for the miss
        check, all steps to score them when their buckets arrive."""
        assert self.end is not None
        self.next_point[rows] = point[:, 0]
        self.next_upper[rows] = upper[:, 0]
        slot = self.end % self._width
        w = min(point.shape[1], self._width)
        self.pending[rows, slot, :w] = point[:, :w]
        self.pending_origin[rows, slot] = self.end

    def _forget_forecasts(self, rows: IntArray | int) -> None:
        """A new model or season: its errors are not the old one's."""
        self.hstep_count[rows] = 0
        self.pending_origin[rows] = -1

    def calibrated(self, rows: IntArray | int, raw: FloatArray | float) -> FloatArray:
        """`raw` as the observed frequency of crossing of the calls in its bin (see the
        module docstring)."""
        r = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        p = np.atleast_1d(np.asarray(raw, dtype=np.float64))
        b = _bins(p)
        calls, hits = self.calibration[r, 0, b], self.calibration[r, 1, b]
        out: FloatArray = (hits + CALIBRATION_PRIOR * p) / (calls + CALIBRATION_PRIOR)
        return out

    def season_of(self, rows: IntArray) -> IntArray:
        """The season the baselines and fits of `rows` use: their period, else a day."""
        out: IntArray = np.where(self.period[rows] > 0, self.period[rows], self.season)
        return out

    def refresh_baselines(self) -> int:
        """Refit the inline model of series without a real fit each time their history
        has grown by a quarter (once per window at most), so its band is measured on the
        history there is, at O(log n) refits per series — in batches of one length, period
        and horizon; returns how many were refitted."""
        if not self.forecasts or self.end is None:
            return 0
        n = len(self.keys)
        length = self.lengths()
        due = np.flatnonzero(~self.real_fit[:n] & (length > 0)
                             & (4 * length >= 5 * self.fitted_len[:n] + 4))
        self._baselines(due)
        return len(due)

    def _baselines(self, rows: IntArray) -> None:
        """The inline model of `rows`: the seasonal naive at its period when one was found,
        else its last bucket (nothing is known yet, so plan as the reactive rule does; a
        daily fit can choose better after two days)."""
        if not len(rows):
            return
        assert self.end is not None
        length = self.lengths()[rows]
        keys = np.stack([length, self.period[rows], self.horizon[rows],
                         np.round(self.quantile[rows] * 1e6).astype(np.int64)], axis=1)
        shapes, which = np.unique(keys, axis=0, return_inverse=True)
        for g, (m, period, horizon, _) in enumerate(shapes.tolist()):
            group = rows[which.reshape(-1) == g]
            spec = FitSpec(season=period or self.season, horizon=max(1, horizon),
                           start=self.end - m, quantile=float(self.quantile[group[0]]))
            values = self._window(group, m)
            kernel: Kernel
            with quiet():
                if period:
                    kernel = SeasonalNaive().fit_many(values, spec)
                else:
                    kernel = last_values(values, spec)
            self.kernels.put(group, kernel)
            self.model[group] = "snaive" if period else "last"
            self.fitted_len[group] = m
            point, upper = kernel.forecast(self._width)
            self._remember(group, point, upper)

    # --- fitting -------------------------------------------------------------------------

    def due_fits(self, now: float, keys: Iterable[SeriesKey] | None = None) -> list[FitRequest]:
        """Fit jobs due now: series with two days of history and no daily fit yet, fits
        older than `refit_every`, series whose rolling error degraded; and young series
        whose period was found (see the module docstring). At most `MIN_FITS`, or the
        fleet's share (see there): the others are due again at the next call."""
        out: list[FitRequest] = []
        if not self.forecasts or self.end is None:
            return out
        n = len(self.keys)
        rows = (np.arange(n) if keys is None else
                np.array([self.index[k] for k in keys if k in self.index], dtype=np.int64))
        rows = rows[~self.fit_pending[rows]]
        budget = max(MIN_FITS, math.ceil(4 * n * self.bucket / self.refit_every))
        length = self.lengths()[rows]
        horizon = np.maximum(1, self.horizon[rows])
        young = length < 2 * self.season + horizon
        checks = rows[young & (length >= FIRST_PERIOD_CHECK)
                      & (4 * length >= 5 * self.checked_len[rows])]
        grown, grown_len = rows[~young], length[~young]
        first = ~self.real_fit[grown] | (self.period[grown] > 0)
        grew = ~first & ~self.selected[grown] & (4 * grown_len >= 5 * self.fitted_len[grown])
        age = now - self.fitted_at[grown]
        scheduled = ~first & ~grew & np.isfinite(age) & (age >= self.refit_every)
        rest = ~first & ~grew & ~scheduled
        degraded = np.zeros(len(grown), dtype=bool)
        degraded[rest] = self._degraded(grown[rest])
        reasons = np.select([first, grew, scheduled, degraded],
                            [1, 2, 3, 4], default=0)
        names = {1: "first fit", 2: "history grew: selecting the model again",
                 3: "scheduled refit", 4: "forecast error degraded: re-selecting the model"}
        chosen = np.flatnonzero(reasons)[:budget]
        for i in chosen.tolist():
            r = int(grown[i])
            if reasons[i] == 1 and self.period[r]:
                self.period[r] = 0  # a day holds every period the book looks for
                self._forget_forecasts(r)
            out.append(self._request(r, names[int(reasons[i])]))
        out.extend(self._young_fits(checks, budget - len(out)))
        return out

    def _request(self, r: int, reason: str) -> FitRequest:
        assert self.end is not None
        self.fit_pending[r] = True
        m = self.length(r)
        return FitRequest(self.keys[r], str(self.p_model[r]), self.history(r),
                          int(self.season_of(np.array([r]))[0]), int(max(1, self.horizon[r])),
                          self.end - m, float(self.quantile[r]), self.end, reason)

    def _young_fits(self, young: IntArray, budget: int) -> list[FitRequest]:
        """Look for the period of young series (those of one length in one batch); switch
        the baseline of those with a new one to it, and fit those with enough cycles."""
        out: list[FitRequest] = []
        if not len(young) or budget <= 0:
            return out
        allowed = set(self.calendar)
        length = self.lengths()[young]
        for n in np.unique(length).tolist():
            group = young[length == n]
            found = detect(self._window(group, n), prefer=self.calendar)
            self.checked_len[group] = n
            rebase: list[int] = []
            for r, period in zip(group.tolist(), found.tolist(), strict=True):
                # none, or not a wall-clock period: keep what was found before
                changed = period in allowed and period != self.period[r]
                if changed:
                    self.period[r] = period
                    self._forget_forecasts(r)
                    if not self.real_fit[r]:
                        rebase.append(r)
                horizon = max(1, int(self.horizon[r]))
                if not self.period[r] or n < MIN_CYCLES * self.period[r] + horizon:
                    continue
                if len(out) >= budget:
                    continue
                if not self.real_fit[r]:
                    out.append(self._request(r, "period found"))
                elif changed:
                    out.append(self._request(r, "period changed"))
                elif n >= 2 * self.fitted_len[r]:
                    out.append(self._request(r, "history doubled"))
            self._baselines(np.array(rebase, dtype=np.int64))
        return out

    def apply_fit(self, request: FitRequest, fitted: Fitted | None, now: float) -> None:
        """Swap a finished fit in (None: it failed), catching up on newer buckets."""
        r = self.index.get(request.key)
        if r is None or self.end is None:
            return
        self.fit_pending[r] = False
        if fitted is None:
            self.fitted_at[r] = now  # do not retry every window
            return
        if self.end > request.upto:
            for value in self.history(r)[-(self.end - request.upto):].tolist():
                fitted.kernel.update(np.array([value], dtype=np.float64))
        self.kernels.put(np.array([r]), fitted.kernel)
        self.model[r] = fitted.model
        self.fitted_at[r] = now
        self.real_fit[r] = True
        self.selected[r] = bool(fitted.scores) or request.model != "auto"
        self.fitted_len[r] = self.length(r)
        self.err_count[r] = 0
        self.degraded[r] = False
        self.refits[request.reason] = self.refits.get(request.reason, 0) + 1
        self._forget_forecasts(r)
        point, upper = fitted.kernel.forecast(self._width)
        self._remember(np.array([r]), point, upper)

    def _recent(self, count: IntArray, window: int) -> BoolArray:
        """(window, len(count)): which slots of a ring indexed by bucket number hold one of
        the newest `count` entries (every ring is written each bucket since it was
        cleared, the last time at the clock's last bucket)."""
        assert self.end is not None
        age = (self.end - 1 - np.arange(window)) % window
        out: BoolArray = age[:, None] < count[None, :]
        return out

    def _valid(self, rows: IntArray) -> BoolArray:
        return self._recent(self.err_count[rows], self.error_window)

    def _degraded(self, rows: IntArray) -> BoolArray:
        if not len(rows):
            return np.zeros(0, dtype=bool)
        valid = self._valid(rows)
        model = np.where(valid, self.err_model[:, rows], 0.0).sum(axis=0, dtype=np.float64)
        naive = np.where(valid, self.err_naive[:, rows], 0.0).sum(axis=0, dtype=np.float64)
        enough = self.err_count[rows] >= max(12, self.error_window // 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out: BoolArray = enough & (naive > 0) & (model / naive > self.degrade_factor)
        self.degraded[rows[enough]] = out[enough]
        return out

    # --- asking --------------------------------------------------------------------------

    def view(self, key: SeriesKey, since: float, until: float) -> DemandView:
        """`views` of one series."""
        [out] = self.views([key], np.array([since]), np.array([until]))
        return out

    def views(self, keys: Sequence[SeriesKey], since: FloatArray, until: FloatArray
              ) -> list[DemandView]:
        """Per series: forecast upper quantile (max over buckets overlapping [since,
        until)), the calibrated probability of crossing the threshold there, the last
        observed bucket, and the hysteresis and top-up facts. Each call is remembered
        (once per window) and judged when its buckets arrive (see the module docstring).
        All series at once: a few array operations whatever their number."""
        known = [self.index.get(k) for k in keys]
        rows = np.array([-1 if i is None else i for i in known], dtype=np.int64)
        have = rows >= 0
        if self.end is None:
            have[:] = False
        elif len(rows):
            have &= self.lengths()[np.maximum(rows, 0)] > 0
        last_above = np.full(len(rows), np.nan)
        observed = np.zeros(len(rows))
        if have.any():
            assert self.end is not None
            r = rows[have]
            last_above[have] = self.last_above[r]
            observed[have] = self.values[(self.end - 1) % self.max_len, r]
        above = [None if math.isnan(a) else a for a in last_above.tolist()]
        if not self.forecasts:
            return [DemandView(k[0], k[1], observed=o, last_above=a) if h
                    else DemandView(k[0], k[1]) for k, h, o, a in
                    zip(keys, have.tolist(), observed.tolist(), above, strict=True)]
        predicted = np.zeros(len(rows))
        p_cross = np.zeros(len(rows))
        with_model = have.copy()
        if have.any():
            assert self.end is not None
            with_model[have] = np.isfinite(self.next_point[rows[have]])
            sel = np.flatnonzero(with_model)
            predicted[sel], p_cross[sel] = self._window_views(
                rows[sel], np.asarray(since)[sel], np.asarray(until)[sel])
        models = self.model[np.maximum(rows, 0)].tolist() if len(rows) else []
        topups = self.topup[np.maximum(rows, 0)].tolist() if len(rows) else []
        return [DemandView(k[0], k[1], predicted=pr, observed=o, model=m, last_above=a,
                           topup=t, p_cross=pc) if ok else DemandView(k[0], k[1])
                for k, ok, pr, o, m, a, t, pc in zip(
                    keys, with_model.tolist(), predicted.tolist(), observed.tolist(),
                    models, above, topups, p_cross.tolist(), strict=True)]

    def _window_views(self, rows: IntArray, since: FloatArray, until: FloatArray
                      ) -> tuple[FloatArray, FloatArray]:
        assert self.end is not None
        first = self.end  # bucket index the next forecast step stands for
        lo = np.maximum(0, np.floor(since / self.bucket).astype(np.int64) - first)
        hi = np.ceil(until / self.bucket).astype(np.int64) - first
        some = hi > lo
        predicted = np.zeros(len(rows))
        p_cross = np.zeros(len(rows))
        if not some.any():
            return predicted, p_cross
        rows, lo, hi = rows[some], lo[some], hi[some]
        horizon = int(hi.max())
        point, upper = self._forecast_all(horizon)
        width = int((hi - lo).max())
        steps = lo[:, None] + np.arange(width)[None, :]
        inside = steps < hi[:, None]
        steps = np.minimum(steps, horizon - 1)
        pt = point[rows[:, None], steps]
        up = np.where(inside, upper[rows[:, None], steps], -np.inf)
        best = np.zeros(len(rows))
        threshold = self.threshold[rows]
        window = self.hstep_window
        for j in range(width):
            ring = np.clip(np.minimum(steps[:, j], self.horizon[rows] - 1), 0,
                           self._width - 1)
            count = self.hstep_count[rows, ring]
            prob = (pt[:, j] >= threshold).astype(np.float64)
            enough = np.flatnonzero((count >= MIN_HSTEP_ERRORS) & inside[:, j])
            for g in np.unique(ring[enough]).tolist():
                same = enough[ring[enough] == g]
                for c0 in range(0, len(same), CHUNK):
                    part = same[c0:c0 + CHUNK]
                    errors = self.hstep[:, g, rows[part]]  # (window, len(part))
                    valid = self._recent(count[part], window)
                    hits = np.count_nonzero(
                        valid & (pt[part, j][None, :] + errors >= threshold[part][None, :]),
                        axis=0)
                    prob[part] = hits / count[part]
            best = np.maximum(best, np.where(inside[:, j], prob, 0.0))
        self._call(rows, first + lo, first + hi, best)
        out_p = np.zeros(len(some))
        out_c = np.zeros(len(some))
        out_p[some] = np.maximum(up.max(axis=1), 0.0)
        out_c[some] = self.calibrated(rows, best)
        return out_p, out_c

    def _call(self, rows: IntArray, first: IntArray, end: IntArray, raw: FloatArray) -> None:
        """Remember the crossing calls (one per window per series) to judge them later."""
        c = OPEN_CALLS
        count = self.call_count[rows]
        newest = self.call_first[rows, (self.call_head[rows] + count - 1) % c]
        new = (count == 0) | (newest < first)
        rows, first, end, raw = rows[new], first[new], end[new], raw[new]
        full = self.call_count[rows] == c
        self.call_head[rows[full]] = (self.call_head[rows[full]] + 1) % c
        self.call_count[rows[full]] -= 1
        slot = (self.call_head[rows] + self.call_count[rows]) % c
        self.call_first[rows, slot] = first
        self.call_end[rows, slot] = end
        self.call_raw[rows, slot] = raw
        self.call_hit[rows, slot] = False
        self.call_count[rows] += 1

    def forecast(self, key: SeriesKey, horizon: int) -> tuple[int, FloatArray, FloatArray]:
        """(first bucket start, point, upper) of the next `horizon` buckets of `key`."""
        first, point, upper = self.forecasts_of([key], horizon)
        return first, point[0], upper[0]

    def forecasts_of(self, keys: Sequence[SeriesKey], horizon: int
                     ) -> tuple[int, FloatArray, FloatArray]:
        """(first bucket start, point, upper) of `keys` for the next `horizon` buckets:
        rows of NaN for a series without a model."""
        assert self.end is not None
        rows = np.array([self.index[k] for k in keys], dtype=np.int64)
        point, upper = self._forecast_all(max(1, horizon))
        return self.end * self.bucket, point[rows], upper[rows]

    def errors(self) -> dict[SeriesKey, dict[str, float]]:
        """Rolling figures per series: MAE, seasonal-naive MAE, their ratio, band coverage."""
        n = len(self.keys)
        rows = np.flatnonzero(self.err_count[:n] > 0)
        if not len(rows):
            return {}
        valid = self._valid(rows)
        count = self.err_count[rows].astype(np.float64)
        mae = np.where(valid, self.err_model[:, rows], 0.0).sum(axis=0, dtype=np.float64) / count
        naive = np.where(valid, self.err_naive[:, rows], 0.0).sum(axis=0, dtype=np.float64) / count
        covered = np.where(valid, self.err_covered[:, rows], 0.0).sum(axis=0,
                                                                    dtype=np.float64) / count
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(naive > 0, mae / naive, np.nan)
        keys = self.keys
        return {keys[r]: {"n": c, "mae": a, "naive_mae": b, "relative": q, "coverage": v,
                          "misses_in_a_row": float(s)}
                for r, c, a, b, q, v, s in zip(
                    rows.tolist(), count.tolist(), mae.tolist(), naive.tolist(),
                    relative.tolist(), covered.tolist(), self.streak[rows].tolist(),
                    strict=True)}

    def models(self) -> dict[SeriesKey, str]:
        """The model in use per series."""
        return dict(zip(self.keys, self.model[:len(self.keys)].tolist(), strict=True))

    def topup_keys(self) -> set[SeriesKey]:
        """Series flagged for a reactive top-up now."""
        return {self.keys[i] for i in np.flatnonzero(self.topup[:len(self.keys)]).tolist()}
