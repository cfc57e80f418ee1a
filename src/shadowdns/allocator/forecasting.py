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
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from shadowdns.allocator.planner import DemandView
from shadowdns.predictor.base import FitSpec, Fitted, quiet
from shadowdns.predictor.baseline import baseline
from shadowdns.predictor.last import LastValue
from shadowdns.predictor.periods import MIN_CYCLES, calendar_periods, detect
from shadowdns.predictor.series import FloatArray

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str]

MIN_HSTEP_ERRORS = 24
"""Errors a step needs before `p_cross` uses them; until then the point forecast decides
(P = 1 at or above the threshold, else 0: the median-ish guess)."""

CALIBRATION_BINS = 10
CALIBRATION_PRIOR = 2.0
"""Pseudo-calls at the raw probability in each bin: the observed frequency of a bin
outweighs the raw probability once it holds more calls than this."""

FIRST_PERIOD_CHECK = 12
"""Buckets a series needs before its period is first looked for (3 cycles of 4)."""


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


def _bin(p: float) -> int:
    return min(CALIBRATION_BINS - 1, max(0, int(p * CALIBRATION_BINS)))


class Ring:
    """The newest `size` numbers of a stream in one numpy array, oldest first.

    The book keeps weeks of buckets and days of forecast errors for up to 100,000 series;
    as Python lists and deques of floats that is ~32 bytes a number (~260 KB a series, 26
    GB for the fleet), here it is 8 bytes plus 1/8 slack. Appends are amortised O(1):
    the buffer grows by doubling up to `size` + slack, then shifts left once per slack
    appends. `view()` is contiguous and copy-free.
    """

    __slots__ = ("_buf", "_hi", "_lo", "size")

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._buf: FloatArray = np.empty(min(16, self.size))
        self._lo = 0
        self._hi = 0

    def append(self, value: float) -> bool:
        """Add `value`; True when the oldest number fell out."""
        if self._hi == len(self._buf):
            limit = self.size + max(8, self.size // 8)
            kept = self._hi - self._lo
            if len(self._buf) < limit:
                grown = np.empty(min(limit, 2 * len(self._buf)))
                grown[:kept] = self._buf[self._lo:self._hi]
                self._buf = grown
            else:
                self._buf[:kept] = self._buf[self._lo:self._hi]
            self._lo, self._hi = 0, kept
        self._buf[self._hi] = value
        self._hi += 1
        if self._hi - self._lo > self.size:
            self._lo += 1
            return True
        return False

    def view(self) -> FloatArray:
        return self._buf[self._lo:self._hi]

    def last(self) -> float:
        return float(self._buf[self._hi - 1])

    def clear(self) -> None:
        self._lo = self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo


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


@dataclass
class SeriesState:
    key: SeriesKey
    start: int  # bucket index of values[0]
    values: Ring
    fitted: Fitted | None = None
    model: str = "none"
    fitted_at: float | None = None
    fitted_len: int = 0
    fit_pending: bool = False
    real_fit: bool = False
    selected: bool = False  # the real fit chose its model by validation (not a fallback)
    next_upper: float | None = None
    next_point: float | None = None
    misses: int = 0
    topup: bool = False
    last_above: float | None = None
    # rolling one-step figures: |actual - point|, |actual - seasonal naive|, 1.0 if covered
    model_errors: Ring = field(default_factory=lambda: Ring(288))
    naive_errors: Ring = field(default_factory=lambda: Ring(288))
    covered: Ring = field(default_factory=lambda: Ring(288))
    degraded: bool = False
    # forecasts made at recent origins: (bucket index of their first step, point per step)
    pending: deque[tuple[int, FloatArray]] = field(default_factory=deque)
    # signed errors (actual - point) of those forecasts, one ring per step ahead
    hstep_errors: list[Ring] = field(default_factory=list)
    # the season of a young series found in its history (0: none, the daily one), and the
    # history length when it was last looked for
    period: int = 0
    checked_len: int = 0
    # crossing calls answered and not yet judged: [first bucket, end bucket, raw p, crossed]
    calls: deque[list[float]] = field(default_factory=lambda: deque(maxlen=64))
    # per probability bin: calls judged (decayed) and how many of them crossed
    calibration: FloatArray = field(default_factory=lambda: np.zeros((2, CALIBRATION_BINS)))

    @property
    def end(self) -> int:
        """Bucket index after the last observed one."""
        return self.start + len(self.values)


@dataclass(frozen=True, slots=True)
class SeriesParams:
    """Per-series knobs from the DI's policy."""

    model: str = "auto"
    threshold: float = 100.0
    quantile: float = 0.9
    horizon: int = 4


class DemandBook:
    """Every series the allocator plans for (see the module docstring)."""

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
        self.error_window = error_window
        self.degrade_factor = degrade_factor
        self.calendar = calendar_periods(bucket, self.season)
        self.series: dict[SeriesKey, SeriesState] = {}
        self.params: dict[SeriesKey, SeriesParams] = {}
        self.misses: deque[Miss] = deque(maxlen=1000)
        self.miss_total = 0
        self.refits: dict[str, int] = {}

    # --- observing ------------------------------------------------------------------------

    def observe(self, key: SeriesKey, bucket_index: int, value: float,
                params: SeriesParams | None = None) -> None:
        """Record the complete bucket `bucket_index` (start = index × bucket) of `key`.

        Buckets of one series must come in order; skipped buckets count zero queries.
        """
        if params is not None:
            self.params[key] = params
        p = self.params.get(key, SeriesParams())
        state = self.series.get(key)
        if state is None:
            window = self.error_window
            state = SeriesState(key, bucket_index, Ring(self.max_len),
                                model_errors=Ring(window), naive_errors=Ring(window),
                                covered=Ring(window))
            self.series[key] = state
        if bucket_index < state.end:
            return  # already seen (a re-read of the same bucket)
        for idx in range(state.end, bucket_index + 1):
            self._step(state, p, idx, value if idx == bucket_index else 0.0)

    def _step(self, state: SeriesState, p: SeriesParams, idx: int, value: float) -> None:
        ts = idx * self.bucket
        if not self.forecasts:
            if value >= p.threshold:
                state.last_above = ts + self.bucket
            if state.values.append(float(value)):
                state.start += 1
            return
        if state.next_upper is not None and state.next_point is not None:
            if value > state.next_upper:
                state.misses += 1
                self.miss_total += 1
                self.misses.append(Miss(state.key[0], state.key[1], ts, value,
                                        state.next_upper, state.misses))
            else:
                state.misses = 0
            state.topup = state.misses >= self.topup_after and value >= p.threshold
            naive_idx = len(state.values) - self.season
            naive = (float(state.values.view()[naive_idx]) if naive_idx >= 0
                     else (state.values.last() if len(state.values) else value))
            state.model_errors.append(abs(value - state.next_point))
            state.naive_errors.append(abs(value - naive))
            state.covered.append(1.0 if value <= state.next_upper else 0.0)
        for first, points in state.pending:
            step = idx - first
            if 0 <= step < len(points):
                self._hstep(state, step).append(float(value) - float(points[step]))
        self._judge(state, idx, value >= p.threshold)
        if value >= p.threshold:
            state.last_above = ts + self.bucket
        if state.values.append(float(value)):
            state.start += 1
        if state.fitted is None:
            self._baseline(state, p)
        else:
            state.fitted.kernel.update(np.array([value], dtype=np.float64))
        self._remember(state, p)

    def _remember(self, state: SeriesState, p: SeriesParams) -> None:
        """Forecast the next `horizon` steps from the current state: keep the points to
        score them when their buckets arrive, and the next step's for the miss check."""
        assert state.fitted is not None
        kernel = state.fitted.kernel
        point, upper = kernel.forecast(max(1, p.horizon))
        state.next_point, state.next_upper = float(point[0, 0]), float(upper[0, 0])
        while state.pending and state.pending[0][0] + len(state.pending[0][1]) <= kernel.t:
            state.pending.popleft()
        if state.pending and state.pending[-1][0] == kernel.t:
            state.pending.pop()  # a refit re-forecast the same origin: keep the newer
        state.pending.append((kernel.t, point[0].copy()))

    def _judge(self, state: SeriesState, idx: int, crossed: bool) -> None:
        """Bucket `idx` arrived: mark the calls it belongs to, score those it completes."""
        for call in state.calls:
            if call[0] > idx:
                break
            if crossed and idx < call[1]:
                call[3] = 1.0
        while state.calls and state.calls[0][1] <= idx + 1:
            _, _, raw, hit = state.calls.popleft()
            state.calibration *= 1.0 - 1.0 / self.hstep_window
            state.calibration[:, _bin(raw)] += (1.0, hit)

    def calibrated(self, state: SeriesState, raw: float) -> float:
        """`raw` as the observed frequency of crossing of the calls in its bin (see the
        module docstring)."""
        calls, hits = state.calibration[:, _bin(raw)]
        return float((hits + CALIBRATION_PRIOR * raw) / (calls + CALIBRATION_PRIOR))

    def _hstep(self, state: SeriesState, step: int) -> Ring:
        while len(state.hstep_errors) <= step:
            state.hstep_errors.append(Ring(self.hstep_window))
        return state.hstep_errors[step]

    def p_cross(self, state: SeriesState, points: FloatArray, steps: list[int],
                threshold: float) -> float:
        """P(actual >= threshold) for forecast steps `steps` (0 = next bucket) with point
        forecasts `points`: the highest over the steps, each from that step's recent
        signed errors (see the module docstring)."""
        best = 0.0
        for step, point in zip(steps, points.tolist(), strict=True):
            errors = (state.hstep_errors[min(step, len(state.hstep_errors) - 1)].view()
                      if state.hstep_errors else ())
            if len(errors) < MIN_HSTEP_ERRORS:
                prob = 1.0 if point >= threshold else 0.0
            else:
                prob = float(np.count_nonzero(point + errors >= threshold)) / len(errors)
            best = max(best, prob)
        return best

    def season_of(self, state: SeriesState) -> int:
        """The season `state`'s baseline and fits use: its period, else a day."""
        return state.period or self.season

    def _baseline(self, state: SeriesState, p: SeriesParams) -> None:
        """The inline model of a series without a real fit: the seasonal naive at its
        period when one was found, else its last bucket (nothing is known yet, so plan
        as the reactive rule does; a daily fit can choose better after two days)."""
        spec = FitSpec(season=self.season_of(state), horizon=max(1, p.horizon),
                       start=state.start, quantile=p.quantile)
        values = state.values.view().copy()
        with quiet():
            state.fitted = (baseline(values, spec) if state.period
                            else LastValue().fit(values, spec))
        state.model = state.fitted.model
        state.fitted_len = len(state.values)

    def refresh_baselines(self) -> int:
        """Refit the inline model of series without a real fit each time their history
        has grown by a quarter (once per window at most), so its band is measured on the
        history there is, at O(log n) refits per series; returns how many were refitted."""
        if not self.forecasts:
            return 0
        done = 0
        for key, state in self.series.items():
            n = len(state.values)
            if not state.real_fit and n and 4 * n >= 5 * state.fitted_len + 4:
                p = self.params.get(key, SeriesParams())
                self._baseline(state, p)
                self._remember(state, p)
                done += 1
        return done

    # --- fitting -------------------------------------------------------------------------

    def due_fits(self, now: float, keys: Iterable[SeriesKey] | None = None) -> list[FitRequest]:
        """Fit jobs due now: series with two days of history and no daily fit yet, fits
        older than `refit_every`, series whose rolling error degraded; and young series
        whose period was found (see the module docstring)."""
        out: list[FitRequest] = []
        if not self.forecasts:
            return out
        young: list[tuple[SeriesState, SeriesParams]] = []
        for key in (self.series if keys is None else keys):
            state = self.series.get(key)
            if state is None or state.fit_pending:
                continue
            p = self.params.get(key, SeriesParams())
            n = len(state.values)
            if n < 2 * self.season + max(1, p.horizon):
                if n >= FIRST_PERIOD_CHECK and 4 * n >= 5 * state.checked_len:
                    young.append((state, p))
                continue
            reason = None
            if not state.real_fit or state.period:
                reason = "first fit"
                if state.period:
                    state.period = 0  # a day holds every period the book looks for
                    state.hstep_errors.clear()
                    state.pending.clear()
            elif not state.selected and 4 * n >= 5 * state.fitted_len:
                reason = "history grew: selecting the model again"
            elif state.fitted_at is not None and now - state.fitted_at >= self.refit_every:
                reason = "scheduled refit"
            elif self._degraded(state):
                reason = "forecast error degraded: re-selecting the model"
            if reason is not None:
                out.append(self._request(state, p, reason))
        out.extend(self._young_fits(young))
        return out

    def _request(self, state: SeriesState, p: SeriesParams, reason: str) -> FitRequest:
        state.fit_pending = True
        return FitRequest(state.key, p.model, state.values.view().copy(),
                          self.season_of(state), max(1, p.horizon), state.start, p.quantile,
                          state.end, reason)

    def _young_fits(self, young: list[tuple[SeriesState, SeriesParams]]) -> list[FitRequest]:
        """Look for the period of young series (those of one length in one batch); switch
        the baseline of those with a new one to it, and fit those with enough cycles."""
        by_len: dict[int, list[tuple[SeriesState, SeriesParams]]] = {}
        for state, p in young:
            by_len.setdefault(len(state.values), []).append((state, p))
        out: list[FitRequest] = []
        allowed = set(self.calendar)
        for n, group in by_len.items():
            found = detect(np.stack([state.values.view() for state, _ in group]),
                           prefer=self.calendar)
            for (state, p), period in zip(group, found.tolist(), strict=True):
                state.checked_len = n
                # none, or not a wall-clock period: keep what was found before
                changed = period in allowed and period != state.period
                if changed:
                    state.period = period
                    state.hstep_errors.clear()
                    state.pending.clear()
                    if not state.real_fit:
                        self._baseline(state, p)
                        self._remember(state, p)
                if not state.period or n < MIN_CYCLES * state.period + max(1, p.horizon):
                    continue
                if not state.real_fit:
                    out.append(self._request(state, p, "period found"))
                elif changed:
                    out.append(self._request(state, p, "period changed"))
                elif n >= 2 * state.fitted_len:
                    out.append(self._request(state, p, "history doubled"))
        return out

    def apply_fit(self, request: FitRequest, fitted: Fitted | None, now: float) -> None:
        """Swap a finished fit in (None: it failed), catching up on newer buckets."""
        state = self.series.get(request.key)
        if state is None:
            return
        state.fit_pending = False
        if fitted is None:
            state.fitted_at = now  # do not retry every window
            return
        missing = state.values.view()[len(state.values) - (state.end - request.upto):] \
            if state.end > request.upto else np.zeros(0)
        for value in missing.tolist():
            fitted.kernel.update(np.array([value], dtype=np.float64))
        state.fitted = fitted
        state.model = fitted.model
        state.fitted_at = now
        state.real_fit = True
        state.selected = bool(fitted.scores) or request.model != "auto"
        state.fitted_len = len(state.values)
        for ring in (state.model_errors, state.naive_errors, state.covered):
            ring.clear()
        state.degraded = False
        self.refits[request.reason] = self.refits.get(request.reason, 0) + 1
        state.hstep_errors.clear()  # the new model's errors are not the old one's
        state.pending.clear()
        self._remember(state, self.params.get(request.key, SeriesParams()))

    def _degraded(self, state: SeriesState) -> bool:
        if len(state.model_errors) < max(12, self.error_window // 2):
            return False
        model = float(state.model_errors.view().sum(dtype=np.float64))
        naive = float(state.naive_errors.view().sum(dtype=np.float64))
        state.degraded = naive > 0 and model / naive > self.degrade_factor
        return state.degraded

    # --- asking --------------------------------------------------------------------------

    def view(self, key: SeriesKey, since: float, until: float) -> DemandView:
        """Forecast upper quantile (max over buckets overlapping [since, until)), the
        calibrated probability of crossing the threshold there, the last observed bucket,
        and the hysteresis and top-up facts of `key`. The call is remembered (once per
        window) and judged when its buckets arrive (see the module docstring)."""
        state = self.series.get(key)
        if state is not None and len(state.values) and not self.forecasts:
            return DemandView(key[0], key[1], observed=state.values.last(),
                              last_above=state.last_above)
        if state is None or state.fitted is None or not len(state.values):
            return DemandView(key[0], key[1])
        kernel = state.fitted.kernel
        first = kernel.t  # bucket index the next forecast step stands for
        last_needed = math.ceil(until / self.bucket)
        horizon = max(1, last_needed - first + 1)
        point, upper = kernel.forecast(horizon)
        starts = (first + np.arange(horizon)) * self.bucket
        overlap = (starts < until) & (starts + self.bucket > since)
        predicted = float(upper[0, overlap].max()) if overlap.any() else 0.0
        p = self.params.get(key, SeriesParams())
        p_cross = 0.0
        if overlap.any():
            steps = np.flatnonzero(overlap)
            raw = self.p_cross(state, point[0, overlap], steps.tolist(), p.threshold)
            window = (first + int(steps[0]), first + int(steps[-1]) + 1)
            if not state.calls or state.calls[-1][0] < window[0]:  # one call per window
                state.calls.append([window[0], window[1], raw, 0.0])
            p_cross = self.calibrated(state, raw)
        return DemandView(key[0], key[1], predicted=predicted, observed=state.values.last(),
                          model=state.model, last_above=state.last_above, topup=state.topup,
                          p_cross=p_cross)

    def forecast(self, key: SeriesKey, horizon: int) -> tuple[int, FloatArray, FloatArray]:
        """(first bucket start, point, upper) of the next `horizon` buckets of `key`."""
        state = self.series[key]
        assert state.fitted is not None
        point, upper = state.fitted.kernel.forecast(horizon)
        return state.fitted.kernel.t * self.bucket, point[0], upper[0]

    def errors(self) -> dict[SeriesKey, dict[str, float]]:
        """Rolling figures per series: MAE, seasonal-naive MAE, their ratio, band coverage."""
        out: dict[SeriesKey, dict[str, float]] = {}
        for key, state in list(self.series.items()):  # a copy: the book thread may add
            n = len(state.model_errors)
            if n == 0:
                continue
            mae = float(state.model_errors.view().mean())
            naive = float(state.naive_errors.view().mean())
            out[key] = {"n": float(n), "mae": mae, "naive_mae": naive,
                        "relative": mae / naive if naive > 0 else math.nan,
                        "coverage": float(state.covered.view().mean()),
                        "misses_in_a_row": float(state.misses)}
        return out

    def set_params(self, params: Mapping[SeriesKey, SeriesParams]) -> None:
        self.params.update(params)
