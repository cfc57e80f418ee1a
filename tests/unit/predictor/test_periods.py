"""Period detection: cron-like bursts and daily shapes found from a few cycles, nothing
found where nothing repeats; the last-value forecaster."""

from __future__ import annotations

import numpy as np
import pytest

from shadowdns.predictor.base import FitSpec
from shadowdns.predictor.last import LastValue
from shadowdns.predictor.periods import calendar_periods, detect, detect_one, recurs

STEP = 300
DAY = 86400 // STEP


def bursts(period: int, cycles: int, width: int = 1, floor: float = 0.0,
           seed: int = 0) -> np.ndarray:
    """A timer-driven app: `width` busy buckets every `period`, quiet (or Poisson
    `floor`) otherwise; heights vary ±30 %."""
    rng = np.random.default_rng(seed)
    values = rng.poisson(floor, period * cycles + period // 2).astype(np.float64)
    phase = int(rng.integers(0, period))
    for start in range(phase, len(values), period):
        values[start:start + width] += rng.uniform(35, 65)
    return values


def test_wall_clock_periods_divide_a_day_or_are_whole_days() -> None:
    """At 5-minute buckets: 10 and 15 minutes, hours, 4 hours, a day, a week."""
    periods = calendar_periods(STEP, 7 * DAY)
    for p in (2, 3, 12, 48, 288, 2016):
        assert p in periods
    assert 5 not in periods and 7 not in periods and all(p >= 2 for p in periods)
    assert calendar_periods(3600, 48) == (2, 3, 4, 6, 8, 12, 24, 48)


@pytest.mark.parametrize(("period", "cycles", "width", "floor"), [
    (3, 6, 1, 0.0),  # every 15 minutes
    (12, 3, 1, 0.0),  # one bucket an hour, three hours of history
    (12, 4, 2, 5.0),  # over a noise floor
    (48, 3, 4, 1.0),  # every four hours
    (7, 5, 1, 0.0),  # not a wall-clock period: still found
])
def test_bursts_are_found_from_a_few_cycles(period: int, cycles: int, width: int,
                                           floor: float) -> None:
    """Short exact bursts, three to six cycles of them: the period, to the bucket."""
    assert detect_one(bursts(period, cycles, width, floor)) == period


def test_a_daily_shape_is_found_and_snapped_to_the_day() -> None:
    """A noisy daily curve has a broad dip; with wall-clock periods preferred it is a day
    exactly."""
    rng = np.random.default_rng(4)
    t = np.arange(3 * DAY + 40)
    values = np.maximum(0, 100 + 60 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 20, len(t)))
    assert abs(detect_one(values) - DAY) <= 3
    assert detect_one(values, prefer=calendar_periods(STEP, 2 * DAY)) == DAY


def test_nothing_repeats_nothing_is_found() -> None:
    """White noise, a random walk, a constant, zeros, two spikes a 'period' apart, and a
    history shorter than three cycles of anything."""
    rng = np.random.default_rng(9)
    two = np.zeros(100)
    two[[20, 50]] = 40.0
    cases = [rng.normal(100, 10, 500), np.cumsum(rng.normal(0, 1, 500)) + 50,
             np.full(200, 7.0), np.zeros(200), two, bursts(12, 2)[:30]]
    assert [detect_one(c) for c in cases] == [0] * len(cases)


def test_batches_agree_with_one_series_at_a_time() -> None:
    """A batch of series of one length gives each the period it gets alone."""
    rows = np.stack([bursts(12, 5, seed=1)[:60], np.random.default_rng(2).normal(9, 1, 60),
                     bursts(6, 10, seed=3)[:60]])
    assert detect(rows).tolist() == [detect_one(r) for r in rows] == [12, 0, 6]


def test_a_pattern_must_recur_in_three_cycles() -> None:
    """Two bursts a period apart in a quiet history are not a pattern; three are."""
    y = np.zeros(36)
    y[[4, 16]] = 1.0
    assert not recurs(y - y.mean(), 12)
    y[28] = 1.0
    assert recurs(y - y.mean(), 12)


def test_bad_input_gets_no_period_rather_than_an_error() -> None:
    """NaN, negative counts, an empty batch, one value."""
    values = bursts(12, 5)
    values[3] = np.nan
    values[7] = -5.0
    assert detect_one(values) == 12
    assert detect(np.zeros((0, 50))).tolist() == []
    assert detect_one(np.array([3.0])) == 0


def test_last_value_forecasts_the_last_bucket_with_a_measured_band() -> None:
    """Every step ahead is the last value; the band is the quantile of its errors."""
    rng = np.random.default_rng(0)
    values = rng.uniform(10, 20, 200)
    fitted = LastValue().fit(values, FitSpec(season=24, horizon=3, start=1000))
    point, upper = fitted.kernel.forecast(3)
    assert fitted.model == "last" and point[0].tolist() == [values[-1]] * 3
    assert (upper[0] > point[0]).all() and fitted.kernel.t == 1200
    fitted.kernel.update(np.array([42.0]))
    assert fitted.kernel.forecast(1)[0][0, 0] == 42.0
