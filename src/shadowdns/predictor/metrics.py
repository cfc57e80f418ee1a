"""Forecast error measures: MASE, sMAPE and the coverage of the upper quantile.

MASE divides the mean absolute error by the in-sample mean absolute error of the seasonal
naive forecast on the training part, so 1.0 means "as good as last season's value" on the
history and values below 1 beat it. A training part with no seasonal variation falls back
to the one-step naive scale, and a constant one to 1.
"""

from __future__ import annotations

import numpy as np

from shadowdns.predictor.series import FloatArray


def naive_scale(train: FloatArray, season: int) -> float:
    """Mean absolute seasonal difference of ``train`` (the MASE denominator)."""
    for lag in (season, 1):
        if len(train) > lag:
            scale = float(np.mean(np.abs(train[lag:] - train[:-lag])))
            if scale > 0:
                return scale
    return 1.0


def windows(actual: FloatArray, horizon: int, origins: int) -> FloatArray:
    """The ``(origins, horizon)`` actuals that forecasts made at successive origins aim at."""
    return np.lib.stride_tricks.sliding_window_view(actual, horizon)[:origins]


def mase(actual: FloatArray, point: FloatArray, scale: float) -> float:
    """Mean absolute scaled error of forecasts against actuals of the same shape."""
    return float(np.mean(np.abs(actual - point)) / scale)


def smape(actual: FloatArray, point: FloatArray) -> float:
    """Symmetric MAPE in percent (0..200); steps where both are zero count as exact."""
    denom = np.abs(actual) + np.abs(point)
    ratio = np.divide(
        2.0 * np.abs(actual - point), denom, out=np.zeros_like(denom), where=denom > 0
    )
    return float(100.0 * np.mean(ratio))


def coverage(actual: FloatArray, upper: FloatArray) -> float:
    """Share of actuals at or below the forecast upper quantile."""
    return float(np.mean(actual <= upper))
