"""Bad input never stops a forecast: every model gives H sane numbers or the baseline."""

from __future__ import annotations

import numpy as np
import pytest

from shadowdns.predictor.base import FitSpec, Forecaster
from shadowdns.predictor.baseline import SeasonalNaive
from shadowdns.predictor.ets import Ets
from shadowdns.predictor.sarimax import Sarimax
from shadowdns.predictor.selection import Auto
from shadowdns.predictor.series import fill_gaps

M = 288
H = 12
rng = np.random.default_rng(7)
daily = 50 + 40 * np.sin(np.arange(4 * M) * 2 * np.pi / M) + rng.random(4 * M) * 5
spike = np.zeros(3 * M)
spike[400] = 10_000.0
gappy = daily.copy()
gappy[100:400] = np.nan

CASES = {
    "all zeros": np.zeros(3 * M),
    "a single spike": spike,
    "gaps": fill_gaps(gappy),
    "fewer points than a season": daily[:100],
    "a new DI with no history": np.zeros(0),
    "one point": np.array([5.0]),
    "constant": np.full(3 * M, 7.0),
    "huge values": daily * 1e12,
}
FORECASTERS: list[Forecaster] = [
    SeasonalNaive(),
    SeasonalNaive(weekly=True),
    Ets(),
    Sarimax(),
    Auto([SeasonalNaive(), Ets(), Sarimax()]),
]


@pytest.mark.parametrize("case", list(CASES), ids=str)
@pytest.mark.parametrize("forecaster", FORECASTERS, ids=lambda f: f.name)
def test_bad_history_gives_a_sane_forecast(forecaster: Forecaster, case: str) -> None:
    """Whatever the history, a fit returns H finite, non-negative points and a band at or
    above them, without raising or warning."""
    fitted = forecaster.fit(CASES[case], FitSpec(season=M, horizon=H, start=3))
    forecast = fitted.predict(H)
    assert forecast.point.shape == (H,)
    assert np.all(np.isfinite(forecast.point)) and np.all(forecast.point >= 0)
    assert np.all(np.isfinite(forecast.upper)) and np.all(forecast.upper >= forecast.point)


def test_no_history_forecasts_zero() -> None:
    """A DI never seen before is forecast at zero demand by every model."""
    for forecaster in FORECASTERS:
        forecast = forecaster.fit(np.zeros(0), FitSpec(season=M, horizon=H)).predict(H)
        assert forecast.point.tolist() == [0.0] * H


def test_short_history_forecasts_the_recent_level() -> None:
    """With less than a season, the baseline is flat at the median of the recent values."""
    forecast = Ets().fit(np.array([10.0, 12.0, 11.0, 500.0, 11.0]), FitSpec(M, 3)).predict(3)
    assert forecast.model == "snaive"
    assert forecast.point.tolist() == [11.0] * 3


@pytest.mark.parametrize("forecaster", FORECASTERS, ids=lambda f: f.name)
def test_nan_during_updates_coasts(forecaster: Forecaster) -> None:
    """A missing value in a live update leaves the state coasting, forecasts stay finite."""
    fitted = forecaster.fit(daily, FitSpec(season=M, horizon=H))
    fitted.update(np.array([np.nan, np.inf, 60.0]))
    forecast = fitted.predict(H)
    assert np.all(np.isfinite(forecast.point)) and np.all(np.isfinite(forecast.upper))
