"""The demand book: bucket order, the planned-demand window, fits and their catch-up."""

from __future__ import annotations

import numpy as np

from shadowdns.allocator.forecasting import DemandBook, SeriesParams, fit_job

KEY = ("app.example.com.", "jp")
HOUR = 3600


def pattern(n: int) -> list[float]:
    return [100.0 + 80.0 * np.sin(2 * np.pi * i / 24) for i in range(n)]


def test_view_takes_the_upper_band_over_the_planned_window() -> None:
    """A seasonal-naive book repeats yesterday; the view is the max upper value of the
    buckets overlapping [since, until); gaps count as zero queries."""
    book = DemandBook(HOUR)
    params = SeriesParams(model="snaive", threshold=150, horizon=3)
    for i, v in enumerate(pattern(48)):
        book.observe(KEY, 1000 + i, v, params)
    t = (1000 + 48) * HOUR  # the next bucket starts here
    view = book.view(KEY, t + 5 * HOUR, t + 7 * HOUR)  # buckets 5 and 6 ahead
    assert view.predicted >= max(pattern(48)[5:7])
    assert view.observed == pattern(48)[-1]
    book.observe(KEY, 1000 + 50, 7.0)  # 1048 and 1049 missing: zeros
    assert book.series[KEY].values[-3:] == [0.0, 0.0, 7.0]


def test_fits_are_due_after_two_seasons_and_catch_up_on_newer_buckets() -> None:
    """No real fit before two days of buckets; the first fit is due then; a fit that
    finishes after more buckets arrived is advanced over them before it is used."""
    book = DemandBook(HOUR, refit_every=86400)
    params = SeriesParams(model="snaive", threshold=150, horizon=2)
    values = pattern(60)
    for i, v in enumerate(values[:40]):
        book.observe(KEY, 2000 + i, v, params)
    assert book.due_fits(0.0) == []
    for i, v in enumerate(values[40:55], start=40):
        book.observe(KEY, 2000 + i, v, params)
    [request] = book.due_fits(0.0)
    assert request.reason == "first fit" and book.due_fits(0.0) == []  # pending
    fitted = fit_job(request.model, request.values, request.season, request.horizon,
                     request.start, request.quantile)
    for i, v in enumerate(values[55:], start=55):
        book.observe(KEY, 2000 + i, v, params)
    book.apply_fit(request, fitted, 10.0)
    state = book.series[KEY]
    assert state.real_fit and state.fitted is not None
    assert state.fitted.kernel.t == 2060  # caught up to the newest bucket
    assert book.due_fits(10.0 + 86400)[0].reason == "scheduled refit"


def test_a_degraded_model_is_refitted() -> None:
    """When the model's rolling error grows well past seasonal naive's, a re-selection
    is due."""
    book = DemandBook(HOUR, error_window=24, degrade_factor=1.5)
    params = SeriesParams(model="snaive", threshold=1e9, horizon=2)
    for i, v in enumerate(pattern(60)):
        book.observe(KEY, i + 24, v, params)
    [request] = book.due_fits(0.0)
    book.apply_fit(request, fit_job("snaive", request.values, 24, 2, request.start, 0.9), 0.0)
    state = book.series[KEY]
    state.errors.extend([(50.0, 1.0, False)] * 24)
    [again] = book.due_fits(1.0)
    assert again.reason.startswith("forecast error degraded")
    assert book.errors()[KEY]["relative"] == 50.0


def test_crossing_probability_is_calibrated_on_average() -> None:
    """On a noisy daily series the probability of crossing the threshold that the book
    gives for the bucket 3 ahead matches on average how often demand then crosses it (not
    bin by bin with seasonal naive: a high forecast carries yesterday's noise, which does
    not repeat), and deciding on P >= 0.5 fires about as often as demand crosses."""
    rng = np.random.default_rng(7)
    season = 24
    n = season * 20
    t = np.arange(n)
    values = 100 + 60 * np.sin(2 * np.pi * t / season) + rng.normal(0, 25, n)
    values = np.maximum(values, 0.0)
    threshold = float(np.percentile(values, 75))
    book = DemandBook(HOUR)
    params = SeriesParams(model="snaive", threshold=threshold, quantile=0.9, horizon=4)
    probs, actual = [], []
    for i in range(n):
        book.observe(KEY, 1000 + i, float(values[i]), params)
        if i >= 3 * season and i + 3 < n:
            start = (1000 + i + 3) * HOUR  # the bucket 3 steps after the next one
            view = book.view(KEY, start, start + HOUR)
            assert view.p_cross is not None
            probs.append(view.p_cross)
            actual.append(values[i + 3] >= threshold)
    p, crossed = np.array(probs), np.array(actual)
    assert abs(p.mean() - crossed.mean()) < 0.05  # calibrated on average
    assert abs((p >= 0.5).mean() - crossed.mean()) < 0.1
