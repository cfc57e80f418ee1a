"""Per-series model selection by rolling-origin backtest, and the names of all models.

`Auto` splits a series' history into a fitting part and a validation stretch (the last
``validation_seasons`` days, at most a quarter of the history), fits every candidate on the
fitting part, forecasts the horizon at every origin of the validation stretch while updating
on what it has seen, and keeps the candidate with the lowest MASE. It then refits that one
on the whole history. The running system does exactly this on its slow schedule, and the
backtest's ``auto`` entry calls the same code on the training part only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from shadowdns.errors import ConfigError, Problem
from shadowdns.predictor.base import FitSpec, Fitted, Forecaster, GlobalForecaster
from shadowdns.predictor.baseline import SeasonalNaive, baseline
from shadowdns.predictor.ets import Ets
from shadowdns.predictor.metrics import mase, naive_scale, windows
from shadowdns.predictor.names import lstm_available, model_names
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
    if name == "lstm" and lstm_available():
        from shadowdns.predictor.lstm import Lstm

        return Lstm()
    if name == "auto":
        return Auto()
    reason = f"unknown model {name!r}; choose from {', '.join(model_names())}"
    raise ConfigError([Problem("--model", None, reason)])


def is_global(forecaster: Forecaster) -> bool:
    """Whether ``forecaster`` trains one shared model across series."""
    return callable(getattr(forecaster, "train", None))


class Auto:
    """Chooses, per series, the candidate with the lowest validation MASE."""

    name = "auto"

    def __init__(
        self, candidates: Sequence[Forecaster] | None = None, validation_seasons: int = 3
    ) -> None:
        if candidates is None:
            names = [n for n in model_names() if n != "auto"]
            candidates = [make_forecaster(n) for n in names]
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

    def scores(self, values: FloatArray, spec: FitSpec) -> dict[str, float]:
        """Validation MASE of every candidate that could be fitted on ``values``."""
        n = len(values)
        cut = self.split(n, spec)
        origins = n - cut - spec.horizon + 1
        if origins < 1 or cut < 2 * spec.season:
            return {}
        fit_part = values[:cut]
        actual = windows(values[cut:], spec.horizon, origins)
        scale = naive_scale(fit_part, spec.season)
        out: dict[str, float] = {}
        for candidate in self.candidates:
            fitted = candidate.fit(fit_part, spec)
            if fitted.model != candidate.name:
                continue  # it fell back to the baseline: not a real candidate here
            points, _ = rolling_forecasts(fitted.kernel, values[None, cut:], spec.horizon)
            error = mase(actual, points[0], scale)
            if np.isfinite(error):
                out[candidate.name] = error
        return out

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        """Select on ``values`` and refit the winner on all of it."""
        try:
            scores = self.scores(values, spec)
        except Exception as exc:  # selection must never stop the refresh of other series
            log.warning("model selection failed, using the baseline: %s", exc)
            scores = {}
        if not scores:
            return baseline(values, spec)
        chosen = min(scores, key=scores.__getitem__)
        by_name = {c.name: c for c in self.candidates}
        fitted = by_name[chosen].fit(values, spec)
        return replace(fitted, scores=scores)
