"""Per-series model selection by rolling-origin backtest, and the names of all models.

`Auto` splits a series' history into a fitting part and a validation stretch (the last
``validation_seasons`` days, at most a quarter of the history). Each candidate's *trial*
fits it on the fitting part and forecasts the horizon at every origin of the validation
stretch while updating on what it has seen; the candidate with the lowest MASE wins. The
winner is not refitted: its trial has already advanced its state to the end of the
history, and its band is recalibrated on the validation errors, which are out of sample.

There is one `auto`: `forecast predict`, `forecast backtest`, `forecast run` and the
allocator's fit jobs in ``serve`` all fit through `fit_all` (``predict`` through
`Auto.forecast`: the same trials, the statistical ones in a second process), and choose from
`candidates`: the statistical models, the last value (`last`: where nothing is predictable,
the reactive rule) and, when torch is installed, the LSTM. The LSTM is
global: `fit_all` trains it across the batch it is given, on the fitting parts only so
that validation stays honest — every trace for a backtest, one series for ``predict`` and
for a fit job — unless it comes trained (the refresher's shared network).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np

from shadowdns.errors import ConfigError, Problem
from shadowdns.predictor.base import (
    FitSpec,
    Fitted,
    Forecast,
    Forecaster,
    GlobalForecaster,
    error_quantiles,
)
from shadowdns.predictor.baseline import SeasonalNaive, baseline
from shadowdns.predictor.ets import Ets
from shadowdns.predictor.last import LastValue
from shadowdns.predictor.metrics import mase, naive_scale, windows
from shadowdns.predictor.names import STATISTICAL_MODELS, lstm_available, model_names
from shadowdns.predictor.sarimax import Sarimax
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import rolling_forecasts

log = logging.getLogger(__name__)


def make_forecaster(name: str) -> Forecaster:
    """The forecaster called ``name`` (one of `model_names`)."""
    if name == "snaive":
        return SeasonalNaive()
    if name == "snaive_weekly":
        return SeasonalNaive(weekly=True)
    if name == "ets":
        return Ets()
    if name == "sarimax":
        return Sarimax()
    if name == "last":
        return LastValue()
    if name == "lstm" and lstm_available():
        from shadowdns.predictor.lstm import Lstm

        return Lstm()
    if name == "auto":
        return Auto()
    reason = f"unknown model {name!r}; choose from {', '.join(model_names())}"
    raise ConfigError([Problem("--model", None, reason)])


def candidates(lstm: Forecaster | None = None) -> list[Forecaster]:
    """What `auto` chooses from: the statistical models, then ``lstm`` when given."""
    out = [make_forecaster(name) for name in STATISTICAL_MODELS]
    return [*out, lstm] if lstm is not None else out


def is_global(forecaster: Forecaster) -> bool:
    """Whether ``forecaster`` trains one shared model across series."""
    return callable(getattr(forecaster, "train", None))


def fit_all(
    forecaster: Forecaster, histories: Sequence[tuple[FloatArray, FitSpec]]
) -> list[Fitted]:
    """Fit every ``(values, spec)`` with ``forecaster``: how every command and the server fit.

    A global forecaster (the LSTM, or `Auto` with it among its candidates) is trained across
    the whole batch first. A series whose fit raises gets the baseline.
    """
    if is_global(forecaster):
        trainable: GlobalForecaster = forecaster  # type: ignore[assignment]
        trainable.train(histories)
    out = []
    for values, spec in histories:
        try:
            out.append(forecaster.fit(values, spec))
        except Exception as exc:  # one series must not stop the others
            log.warning("fitting with %s failed, using the baseline: %s", forecaster.name, exc)
            out.append(baseline(values, spec))
    return out


@dataclass(frozen=True, slots=True)
class Trial:
    """One candidate validated on one series: its MASE and its state after the history."""

    model: str
    score: float
    fitted: Fitted


def choose(scores: dict[str, float]) -> str:
    """The model with the lowest validation MASE (the first of equals, in candidate order)."""
    return min(scores, key=scores.__getitem__)


class Auto:
    """Chooses, per series, the candidate with the lowest validation MASE."""

    name = "auto"

    def __init__(
        self, candidates: Sequence[Forecaster] | None = None, validation_seasons: int = 3
    ) -> None:
        if candidates is None:
            candidates = default_candidates()
        self.candidates = list(candidates)
        self.validation_seasons = validation_seasons

    def split(self, n: int, spec: FitSpec) -> int:
        """Length of the fitting part; the rest of the ``n`` steps validates."""
        validation = min(self.validation_seasons * spec.season, n // 4)
        return n - validation

    def train(self, histories: Sequence[tuple[FloatArray, FitSpec]]) -> None:
        """Train the shared candidates on the fitting parts only, so validation stays honest."""
        parts = [(values[: self.split(len(values), spec)], spec) for values, spec in histories]
        for candidate in self.candidates:
            if is_global(candidate):
                trainable: GlobalForecaster = candidate  # type: ignore[assignment]
                trainable.train(parts)

    def trial(self, candidate: Forecaster, values: FloatArray, spec: FitSpec) -> Trial | None:
        """Fit ``candidate`` on the fitting part and score it through the validation stretch.

        None when the history is too short to validate, or the candidate fell back to the
        baseline (it is then not a real candidate here) or scored no finite error.
        """
        n = len(values)
        cut = self.split(n, spec)
        origins = n - cut - spec.horizon + 1
        if origins < 1 or cut < 2 * spec.season:
            return None
        fitted = candidate.fit(values[:cut], spec)
        if fitted.model != candidate.name:
            return None
        future = values[cut:]
        points, _ = rolling_forecasts(fitted.kernel, future[None, :], spec.horizon)
        scale = naive_scale(values[:cut], spec.season)
        error = mase(windows(future, spec.horizon, origins), points[0], scale)
        if not np.isfinite(error):
            return None
        fitted.kernel.offset = error_quantiles(future, points[0], spec.quantile, spec.horizon)
        return Trial(candidate.name, error, fitted)

    def safe_trial(self, candidate: Forecaster, values: FloatArray, spec: FitSpec) -> Trial | None:
        """`trial`, with a candidate that raises left out (logged): one broken model must
        not take the others' answer, nor stop the refresh of other series."""
        try:
            return self.trial(candidate, values, spec)
        except Exception as exc:
            log.warning("the %s trial failed: %s", candidate.name, exc)
            return None

    def trials(self, values: FloatArray, spec: FitSpec) -> list[Trial]:
        """The trials of every candidate that could be validated on ``values``."""
        out = [self.safe_trial(c, values, spec) for c in self.candidates]
        return [t for t in out if t is not None]

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        """The best candidate's state after ``values``, with every candidate's score."""
        trials = self.trials(values, spec)
        if not trials:
            return baseline(values, spec)
        scores = {t.model: t.score for t in trials}
        chosen = next(t for t in trials if t.model == choose(scores))
        return replace(chosen.fitted, scores=scores)

    def forecast(
        self, values: FloatArray, spec: FitSpec, executor: Executor | None = None
    ) -> tuple[Forecast, dict[str, float]]:
        """``fit(values, spec).predict(spec.horizon)`` and the scores, with the trials of
        the statistical candidates run in ``executor`` while this process runs the global
        ones (the LSTM).

        On two cores this is what keeps ``forecast predict`` short: importing torch and
        training the network (the longer half) overlaps importing statsmodels and fitting
        (the other); only forecasts come back from the worker.
        """
        here = [i for i, c in enumerate(self.candidates) if executor is None or is_global(c)]
        there = [i for i in range(len(self.candidates)) if i not in here]
        future = None
        if executor is not None and there:
            future = executor.submit(_forecast_trials, self, there, values, spec)
        outcomes = dict(zip(here, _forecast_trials(self, here, values, spec), strict=True))
        if future is not None:
            try:
                outcomes.update(zip(there, future.result(), strict=True))
            except Exception as exc:  # a broken worker costs its candidates, not the answer
                log.warning("the statistical trials failed: %s", exc)
        done = [o for _, o in sorted(outcomes.items()) if o is not None]
        if not done:
            return baseline(values, spec).predict(spec.horizon, spec.quantile), {}
        scores = {model: score for model, score, _ in done}
        best = choose(scores)
        return next(f for model, _, f in done if model == best), scores


def _forecast_trials(
    auto: Auto, indices: Sequence[int], values: FloatArray, spec: FitSpec
) -> list[tuple[str, float, Forecast] | None]:
    """Model, score and forecast of the trials of ``auto.candidates[i]`` for ``indices``
    (a plain function: it may run in a worker); None for a candidate without one."""
    out: list[tuple[str, float, Forecast] | None] = []
    for i in indices:
        trial = auto.safe_trial(auto.candidates[i], values, spec)
        if trial is None:
            out.append(None)
            continue
        forecast = trial.fitted.predict(spec.horizon, spec.quantile)
        out.append((trial.model, trial.score, forecast))
    return out


def default_candidates() -> list[Forecaster]:
    """`candidates` with an untrained LSTM when torch is installed (`fit_all` trains it)."""
    return candidates(make_forecaster("lstm") if lstm_available() else None)
