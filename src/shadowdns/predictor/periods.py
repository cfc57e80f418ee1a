"""The seasonal period of a demand series, found from a few cycles of its history.

The forecasters assume one season, a day (`FitSpec.season` = steps per day), and need two
of them before they fit. Much real demand repeats faster: a timer-driven app bursts one
minute in every 15, every hour, every four hours. Such a period is visible after three
cycles, and a seasonal naive at that period forecasts the next burst exactly, lead time
ahead; a daily model sees nothing of it for two days. `detect` finds, per series, the
period that matters — or none when nothing repeats (white noise, a random walk, a few
unrelated spikes).

How (all series of one length at once, numpy only):

1. Two views of the values are tested, the counts and their ``log1p`` (`TRANSFORMS`),
   each centred. Their autocorrelation comes from one FFT, normalised by the overlap at
   each lag (so a pattern seen in only three cycles still correlates fully at its period).
2. For each candidate lag ``p`` (at least `min_cycles` cycles in the history), the
   variogram ``v(p) = 1 - r(p)`` is compared with the same at ``p/2`` and ``3p/2``:
   ``dip(p) = v(p) / mean(v(p/2), v(3p/2))``. At a period values repeat (v small) while
   half a period off they do not (v large): the dip is near 0. Trends and random walks
   have a variogram that grows smoothly with the lag (dip about 1), noise a flat one.
3. Significance against shuffles: the smallest dip over all lags is computed for
   `shuffles` random permutations of the same values too. A period counts when the
   series' own smallest dip is below every shuffle's (p ≤ 1 / (shuffles + 1), taken over
   all lags, so trying many lags earns nothing) and below `max_dip`. Shuffles keep the
   values' distribution, so a zero-inflated series with two spikes — whose distance is
   always *some* lag — is judged against series with two spikes.
4. The period is the lag of the smallest dip, replaced by a divisor of it whose dip is
   almost as small (the fundamental, not a multiple), and snapped to a wall-clock period
   (an exact divisor or multiple of a day: cron schedules) within one step when that
   one's dip is almost as small.

5. The pattern must recur: at least `min_cycles` whole cycles each correlate with the mean
   of the others (`recurs`).

Cost: ``2 × 2 × (shuffles + 1)`` real FFTs of twice the length per series — about 1 ms for
two weeks of 5-minute buckets; the book runs it only when it (re)fits a series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from shadowdns.predictor.series import SECONDS_PER_DAY, FloatArray

IntArray = npt.NDArray[np.int64]

MIN_CYCLES = 3
"""Cycles of history a period needs before it is believed."""

MAX_DIP = 0.35
"""The largest dip (variogram at the period / half a period off) that counts as a period:
values a period apart differ by at most ~35 % of what values half a period apart do."""

SHUFFLES = 19
"""Permutations in the significance test: p ≤ 1/20 per series, over all lags at once."""

BATCH_FLOATS = 1 << 19
"""Floats per FFT batch (4 MB): numpy's FFT of many rows is several times slower per row
once the batch falls out of the cache."""


RECURS_CORRELATION = 0.5
"""How well a cycle must correlate with the mean of the others to count as a repeat (a
cycle without the pattern, e.g. flat, scores 0)."""


TRANSFORMS = (lambda v: v, np.log1p)
"""The views of a series each tested (a period in either counts, and so costs twice the
FFTs): the counts themselves find bursts over a noise floor; ``log1p`` finds bursts of
very different heights (10 and 1,000 queries) and is not swayed by one huge spike."""


def calendar_periods(step: int, longest: int) -> tuple[int, ...]:
    """Wall-clock periods in steps of `step` seconds up to `longest` steps: every divisor
    of a day that is a whole number of steps (10 min, 15 min, 1 h, 4 h, …) and whole days."""
    day = SECONDS_PER_DAY
    out: set[int] = set()
    for seconds in range(step, day + 1, step):
        if day % seconds == 0:
            out.add(seconds // step)
    days = 1
    while days * day // step <= longest:
        if (days * day) % step == 0:
            out.add(days * day // step)
        days += 1
    return tuple(sorted(p for p in out if 2 <= p <= longest))


def _autocorrelation(y: FloatArray) -> FloatArray:
    """Autocorrelation of centred rows (..., T) at lags 0..T-1, each lag normalised by its
    overlap (T - lag) and by the lag-0 value."""
    t = y.shape[-1]
    size = 1 << (2 * t - 1).bit_length()
    spectrum = np.fft.rfft(y, size, axis=-1)
    acov = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, size, axis=-1)[..., :t]
    acov = acov / (t - np.arange(t))
    var = acov[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        out: FloatArray = np.where(var > 0, acov / np.where(var > 0, var, 1.0), 0.0)
    return out


def _dips(acf: FloatArray, lags: IntArray) -> FloatArray:
    """dip(p) for every row of `acf` (..., T) and lag in `lags` (see the module docstring)."""
    v = np.maximum(1.0 - acf, 0.0)
    half = v[..., np.maximum(lags // 2, 1)]
    beyond = v[..., (3 * lags + 1) // 2]
    around = 0.5 * (half + beyond)
    with np.errstate(invalid="ignore", divide="ignore"):
        dip: FloatArray = np.where(around > 1e-9, v[..., lags] / np.where(around > 1e-9,
                                                                          around, 1.0),
                                   np.inf)
    return dip


def detect(values: FloatArray, *, min_cycles: int = MIN_CYCLES, min_period: int = 2,
           max_period: int | None = None, shuffles: int = SHUFFLES,
           max_dip: float = MAX_DIP, prefer: Sequence[int] = (),
           rng: np.random.Generator | None = None) -> IntArray:
    """The period of each row of `values` (n, T) — or of a 1-D series, as one row — in
    steps; 0 where none is significant. `prefer` lists wall-clock periods to snap to (see
    `calendar_periods`); `rng` makes the shuffles (seeded 0 when None: same input, same
    answer)."""
    x = np.atleast_2d(np.asarray(values, dtype=np.float64))
    n, t = x.shape
    out = np.zeros(n, dtype=np.int64)
    longest = t // max(1, min_cycles)
    if max_period is not None:
        longest = min(longest, max_period)
    # dip(p) reads the variogram at 3p/2: keep that inside the history's first half
    limit = (t - 1) * 2 // 3
    longest = min(longest, limit)
    if longest < min_period or n == 0:
        return out
    rng = np.random.default_rng(0) if rng is None else rng
    # a little past the longest period, so the middle of a dip at it can be found
    lags = np.arange(min_period, min(limit, longest + longest // 8) + 1, dtype=np.int64)
    counted = len(lags) - int(np.count_nonzero(lags > longest))
    snap = np.array(sorted(p for p in prefer if min_period <= p <= longest), dtype=np.int64)
    # the same permutations for every series: one gather instead of a shuffle per series
    order = np.concatenate([np.arange(t)[None, :],
                            rng.permuted(np.tile(np.arange(t), (shuffles, 1)), axis=1)])
    chunk = max(1, BATCH_FLOATS // (len(TRANSFORMS) * (shuffles + 1) * 2 * t))
    for lo in range(0, n, chunk):
        raw = np.maximum(np.nan_to_num(x[lo:lo + chunk]), 0.0)
        alive = np.ptp(raw, axis=1) > 0
        if not alive.any():
            continue
        views = np.stack([f(raw[alive]) for f in TRANSFORMS], axis=1)  # (m, views, T)
        views = views - views.mean(axis=2, keepdims=True)
        # (m, views, shuffles + 1, lags)
        dips = _dips(_autocorrelation(views[:, :, order]), lags)
        best = dips[..., :counted].min(axis=3)
        own = best[..., 0]
        found = (own <= max_dip) & (own < best[..., 1:].min(axis=2, initial=np.inf))
        periods = np.zeros(len(views), dtype=np.int64)
        for i in np.flatnonzero(found.any(axis=1)):
            v = int(np.argmin(np.where(found[i], own[i], np.inf)))
            period = _choose(dips[i, v, 0], lags, counted, snap, max_dip)
            if recurs(views[i, v], period, min_cycles):
                periods[i] = period
        out[lo:lo + chunk][alive] = periods
    return out


def recurs(y: FloatArray, period: int, min_cycles: int = MIN_CYCLES) -> bool:
    """Whether at least `min_cycles` whole cycles of centred `y` (the newest ones) each
    correlate positively with the mean of the others at `period`: the pattern repeats,
    it is not two spikes that happen to be a period apart."""
    cycles = len(y) // period
    if cycles < min_cycles:
        return False
    folded = y[len(y) - cycles * period:].reshape(cycles, period)
    others = (folded.sum(axis=0)[None, :] - folded) / (cycles - 1)
    a = folded - folded.mean(axis=1, keepdims=True)
    b = others - others.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("cp,cp->c", a, a) * np.einsum("cp,cp->c", b, b))
    agree = np.einsum("cp,cp->c", a, b) > RECURS_CORRELATION * norms
    return int(np.count_nonzero(agree & (norms > 0))) >= min_cycles


def _choose(dip: FloatArray, lags: IntArray, counted: int, snap: IntArray,
            max_dip: float) -> int:
    """The centre of the deepest dip (among the first `counted` lags), then its
    fundamental, then a wall-clock neighbour."""
    first = int(lags[0])
    k = int(np.argmin(dip[:counted]))
    low = float(dip[k])
    good = max(max_dip, 2.0 * low)  # "almost as small"
    # a smooth season has a broad dip whose noisy bottom wanders: take the middle of the
    # run of lags around the bottom that are nearly as deep (a burst's dip is one lag)
    near = max(2.0 * low, low + 0.02)
    lo = hi = k
    while lo > 0 and dip[lo - 1] <= near:
        lo -= 1
    while hi < len(dip) - 1 and dip[hi + 1] <= near:
        hi += 1
    period = min(first + (lo + hi) // 2, int(lags[counted - 1]))
    for divisor in range(period // first, 1, -1):  # smallest period first
        candidates = [q for q in (math.floor(period / divisor), math.ceil(period / divisor))
                      if q >= first]
        hits = [q for q in candidates if dip[q - first] <= good]
        if hits:
            period = min(hits, key=lambda q: float(dip[q - first]))
            break
    if len(snap):
        close = snap[np.abs(snap - period) <= max(1, period // 50)]
        for q in close.tolist():
            if dip[q - first] <= max(good, float(dip[period - first]) * 1.5):
                return int(q)
    return period


def detect_one(values: FloatArray, **kwargs: object) -> int:
    """`detect` for one series."""
    return int(detect(np.asarray(values, dtype=np.float64)[None, :], **kwargs)[0])  # type: ignore[arg-type]
