"""Seasonal naive: the baseline every model must beat, and the fallback for any series.

The forecast for a step is the value one period before (a day, or a week when asked and
there is enough history). With less than one period of history, or none, the unseen slots
hold the median of the most recent values (zero for an empty series): a flat forecast at
the current level rather than an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, warm_up
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import Kernel, SeasonalNaiveKernel


def recent_level(values: FloatArray, horizon: int) -> float:
    """Median of the last few values: a spike-proof "current level" (0 with no history)."""
    if len(values) == 0:
        return 0.0
    return float(np.median(values[-max(2 * horizon, 6) :]))


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """Seasonal naive over ``weeks`` × 7 days when set, else over one day."""

    weekly: bool = False

    @property
    def name(self) -> str:
        return "snaive_weekly" if self.weekly else "snaive"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        period = spec.season * (7 if self.weekly else 1)
        history = np.full((1, period), recent_level(values, spec.horizon))
        kernel = SeasonalNaiveKernel(history, np.zeros((1, 1)), spec.start)
        return Fitted(self.name, warm_up(kernel, values, spec))


def baseline(values: FloatArray, spec: FitSpec) -> Fitted:
    """The daily seasonal naive: what a model falls back to when it cannot fit."""
    return SeasonalNaive().fit(values, spec)


log = logging.getLogger(__name__)


def fit_on_window(
    name: str,
    values: FloatArray,
    window: FloatArray,
    min_points: int,
    spec: FitSpec,
    estimate: Callable[[FloatArray, int, int], Kernel],
) -> Fitted:
    """Fit a library model on the recent `window` of `values`, else fall back to the baseline.

    The baseline answers when the window is shorter than two seasons plus the horizon (or
    `min_points`), when it is constant, or when the optimiser fails: one bad series must
    never stop the refresh of the others.
    """
    offset = len(values) - len(window)
    if len(window) < max(2 * spec.season + spec.horizon, min_points) or np.ptp(window) == 0:
        return baseline(values, spec)
    try:
        kernel = estimate(window, spec.season, spec.start + offset)
    except Exception as exc:
        log.debug("%s fit failed, using the baseline: %s", name, exc)
        return baseline(values, spec)
    return Fitted(name, warm_up(kernel, window, spec))
