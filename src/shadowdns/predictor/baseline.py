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
    return float(recent_levels(np.asarray(values)[None, :], horizon)[0])


def recent_levels(values: FloatArray, horizon: int) -> FloatArray:
    """`recent_level` of each row of ``(k, n)`` series."""
    if values.shape[1] == 0:
        return np.zeros(values.shape[0])
    levels: FloatArray = np.median(values[:, -max(2 * horizon, 6) :], axis=1)
    return levels


@dataclass(frozen=True, slots=True)
class SeasonalNaive:
    """Seasonal naive over ``weeks`` × 7 days when set, else over one day."""

    weekly: bool = False

    @property
    def name(self) -> str:
        return "snaive_weekly" if self.weekly else "snaive"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        return Fitted(self.name, self.fit_many(np.asarray(values)[None, :], spec))

    def fit_many(self, values: FloatArray, spec: FitSpec) -> SeasonalNaiveKernel:
        """The fitted batch kernel of ``(k, n)`` series of one length at once."""
        period = spec.season * (7 if self.weekly else 1)
        levels = recent_levels(values, spec.horizon)
        history = np.repeat(levels[:, None], period, axis=1)
        kernel = SeasonalNaiveKernel(history, np.zeros((len(levels), 1)), spec.start)
        warm_up(kernel, values, spec)
        return kernel


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
