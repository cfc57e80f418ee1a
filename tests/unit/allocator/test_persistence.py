"""The value rule's path correction: residuals that persist move the path, noise does not."""

from __future__ import annotations

import numpy as np

from shadowdns.allocator.persistence import Persistence

KEY = ("app.example.com.", "jp")


def feed(values: np.ndarray, level: float, steps: int = 6) -> tuple[Persistence, np.ndarray]:
    """A flat forecast at `level` against `values`, bucket by bucket; the last path."""
    p = Persistence(steps, half_life=10_000)
    out = np.full(steps, level)
    for t, value in enumerate(values):
        out = p.correct(KEY, t + 1, np.full(steps, level), float(value))
    return p, out


def test_spells_that_last_move_the_path_towards_the_last_bucket() -> None:
    """AR(1) residuals (phi 0.8) around a flat forecast: beta_h is about 0.8^h, so after a
    bucket 100 above the forecast the path expects about 80, 64, … above it."""
    rng = np.random.default_rng(1)
    r = np.zeros(4000)
    for t in range(1, len(r)):
        r[t] = 0.8 * r[t - 1] + rng.normal(0, 10)
    values = 200 + r
    values[-1] = 300.0
    _, path = feed(values, 200.0)
    lift = path - 200.0
    expected = 100 * 0.8 ** np.arange(1, 7)
    assert np.allclose(lift, expected, rtol=0.15), lift


def test_noise_leaves_the_forecast_alone() -> None:
    """White-noise residuals carry nothing about the next buckets: the path stays within a
    few percent of the forecast even after a large surprise."""
    rng = np.random.default_rng(2)
    values = 200 + rng.normal(0, 10, 4000)
    values[-1] = 300.0
    _, path = feed(values, 200.0)
    assert np.all(np.abs(path - 200.0) < 10), path


def test_a_first_call_and_a_gap_correct_nothing() -> None:
    """Nothing is known about a new series; after a gap longer than the path, the old
    residuals are not taken for new ones."""
    p = Persistence(4)
    base = np.full(4, 50.0)
    assert np.array_equal(p.correct(KEY, 10, base, 500.0), base)
    assert np.array_equal(p.correct(KEY, 30, base, 500.0), base)  # bucket 29 had no forecast
    assert np.all(p.correct(KEY, 31, base, 0.0) >= 0.0)  # never a negative demand
