"""The rolling-origin backtest: its numbers and the shape of its report."""

from __future__ import annotations

import numpy as np
import pytest

from shadowdns.predictor.backtest import backtest, evaluate
from shadowdns.predictor.base import Horizon
from shadowdns.predictor.baseline import SeasonalNaive
from shadowdns.predictor.metrics import coverage, mase, naive_scale, smape
from shadowdns.predictor.series import Series


def seasonal_series(days: int = 6, m: int = 48) -> Series:
    day = 100 + 50 * np.sin(2 * np.pi * np.arange(m) / m)
    return Series("pure", np.tile(day, days), step=1800, start=0)


def test_snaive_on_a_pure_seasonal_series_scores_zero() -> None:
    """A series that repeats every day is forecast exactly by seasonal naive: MASE ~ 0."""
    [score], _ = evaluate(SeasonalNaive(), [seasonal_series()], 4)
    assert score.mase == pytest.approx(0.0, abs=1e-9)
    assert score.coverage == 1.0


def test_backtest_report_shape(nasa: Series) -> None:
    """The report has series, horizon, season and per model mase, smape, coverage, time."""
    report = backtest([nasa, seasonal_series()], Horizon.parse("1h"), ["snaive", "ets"])
    assert report["series"] == 2
    assert report["horizon"] == "1h"
    assert sorted(report["season"]) == [48, 288]
    assert set(report["models"]) == {"snaive", "ets"}
    for entry in report["models"].values():
        assert set(entry) >= {"mase", "smape", "coverage", "seconds_per_series"}
        assert 0.0 <= entry["coverage"] <= 1.0


def test_auto_entry_reports_its_choices(nasa: Series) -> None:
    """The auto entry counts which model it chose per series."""
    report = backtest([nasa.head(4 * 288)], 12, ["auto"], season=None)
    assert sum(report["models"]["auto"]["chosen"].values()) == 1


@pytest.mark.parametrize(
    ("text", "step", "steps"),
    [("12", 300, 12), ("1h", 300, 12), ("1h", 1800, 2), ("30m", 3600, 1), ("2d", 86400, 2)],
)
def test_horizon_in_steps_or_as_a_duration(text: str, step: int, steps: int) -> None:
    """A horizon is steps, or a duration turned into steps of each series (at least 1)."""
    assert Horizon.parse(text).steps_for(step) == steps


@pytest.mark.parametrize("text", ["0", "-1", "1y", "h", ""])
def test_bad_horizons_are_refused(text: str) -> None:
    """Zero, negative or unit-less horizons are errors."""
    with pytest.raises(ValueError):
        Horizon.parse(text)


def test_metrics() -> None:
    """MASE divides by the seasonal-naive scale; sMAPE counts 0/0 as exact; coverage counts
    actuals at or below the bound."""
    train = np.array([1.0, 2.0, 3.0, 1.0, 2.0, 5.0])
    assert naive_scale(train, 3) == pytest.approx(2.0 / 3.0)
    assert naive_scale(np.full(5, 3.0), 2) == 1.0
    actual = np.array([[1.0, 0.0], [2.0, 4.0]])
    point = np.array([[1.0, 0.0], [3.0, 2.0]])
    assert mase(actual, point, 0.5) == pytest.approx(1.5)
    assert smape(actual, point) == pytest.approx(100 * (2 / 5 + 4 / 6) / 4)
    assert coverage(actual, point) == 0.75
