"""Rolling-origin backtest: how well each model would have forecast what happened.

Each series is split at ``train_share`` (70 %). Every model is fitted on the training part
by `selection.fit_all`, as everywhere (shared models are trained on the training parts of
all series first), then forecasts the
horizon at every origin through the rest while updating on the data seen so far. Errors are
averaged per series, then over series: MASE (scaled by the training part's in-sample
seasonal-naive error), sMAPE, and the coverage of the upper quantile.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shadowdns.predictor.base import FitSpec, Forecaster, Horizon
from shadowdns.predictor.metrics import coverage, mase, naive_scale, smape, windows
from shadowdns.predictor.selection import fit_all, make_forecaster
from shadowdns.predictor.series import Series
from shadowdns.predictor.state import rolling_forecasts


@dataclass(frozen=True, slots=True)
class SeriesScore:
    """One model's errors on one series."""

    mase: float
    smape: float
    coverage: float
    model: str


def split_point(n: int, train_share: float) -> int:
    """Length of the training part of an ``n``-step series."""
    return int(n * train_share)


def evaluate(
    forecaster: Forecaster,
    series: Sequence[Series],
    horizon: Horizon | int,
    season: int | None = None,
    train_share: float = 0.7,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[SeriesScore], float]:
    """Scores of ``forecaster`` on every series long enough to test, and seconds per series."""
    if isinstance(horizon, int):
        horizon = Horizon(steps=horizon)
    specs = [
        FitSpec(season=season or s.season, horizon=horizon.steps_for(s.step), start=s.start)
        for s in series
    ]
    began = time.perf_counter()
    tests = []
    for s, spec in zip(series, specs, strict=True):
        cut = split_point(len(s.values), train_share)
        if cut >= 1 and len(s.values) - cut - spec.horizon + 1 >= 1:
            tests.append((s, spec, cut))
    fits = fit_all(forecaster, [(s.values[:cut], spec) for s, spec, cut in tests])
    scores: list[SeriesScore] = []
    for done, ((s, spec, cut), fitted) in enumerate(zip(tests, fits, strict=True)):
        if progress is not None:
            progress(done, len(tests))
        origins = len(s.values) - cut - spec.horizon + 1
        train = s.values[:cut]
        points, uppers = rolling_forecasts(fitted.kernel, s.values[None, cut:], spec.horizon)
        actual = windows(s.values[cut:], spec.horizon, origins)
        scale = naive_scale(train, spec.season)
        scores.append(
            SeriesScore(
                mase=mase(actual, points[0], scale),
                smape=smape(actual, points[0]),
                coverage=coverage(actual, uppers[0]),
                model=fitted.model,
            )
        )
    if progress is not None:
        progress(len(series), len(series))
    elapsed = time.perf_counter() - began
    return scores, elapsed / max(len(scores), 1)


def backtest(
    series: Sequence[Series],
    horizon: Horizon | int,
    models: Sequence[str],
    season: int | None = None,
    train_share: float = 0.7,
    progress: Callable[[str], Callable[[int, int], None]] | None = None,
) -> dict[str, Any]:
    """The backtest report: ``{"series", "horizon", "season", "models": {name: {...}}}``.

    ``season`` is reported as given, or as the series' own (steps per day) when they agree.
    The ``auto`` entry also counts which model it chose per series.
    """
    if isinstance(horizon, int):
        horizon = Horizon(steps=horizon)
    seasons = {season or s.season for s in series}
    report: dict[str, Any] = {
        "series": 0,
        "horizon": horizon.to_json(),
        "season": seasons.pop() if len(seasons) == 1 else sorted(seasons),
        "models": {},
    }
    for name in models:
        scores, seconds = evaluate(make_forecaster(name), series, horizon, season, train_share,
                                   None if progress is None else progress(name))
        report["series"] = len(scores)
        entry: dict[str, Any] = {
            "mase": _mean([s.mase for s in scores]),
            "smape": _mean([s.smape for s in scores]),
            "coverage": _mean([s.coverage for s in scores]),
            "seconds_per_series": round(seconds, 4),
        }
        if name == "auto":
            entry["chosen"] = dict(Counter(s.model for s in scores))
        report["models"][name] = entry
    return report


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None
