"""The demand book: bucket order, the planned-demand window, fits and their catch-up."""

from __future__ import annotations

import numpy as np

from shadowdns.allocator.forecasting import DemandBook, Ring, SeriesParams, fit_job

KEY = ("app.example.com.", "jp")
HOUR = 3600


def pattern(n: int) -> list[float]:
    return [100.0 + 80.0 * np.sin(2 * np.pi * i / 24) for i in range(n)]


def test_ring_keeps_the_newest_values_in_order() -> None:
    """A ring of 100 fed 1,000 numbers holds the last 100 oldest first, says which append
    dropped one, and stays that way through its growth and its shifts."""
    ring = Ring(100)
    dropped = [ring.append(float(i)) for i in range(1000)]
    assert dropped == [False] * 100 + [True] * 900
    assert len(ring) == 100 and ring.last() == 999.0
    assert ring.view().tolist() == [float(i) for i in range(900, 1000)]
    ring.clear()
    assert len(ring) == 0 and not ring.append(5.0) and ring.view().tolist() == [5.0]


def test_book_history_is_bounded_and_start_follows() -> None:
    """Past `history` the book drops the oldest buckets and moves `start` with them."""
    book = DemandBook(HOUR, history=72 * HOUR)
    for i in range(200):
        book.observe(KEY, 5000 + i, float(i), SeriesParams(model="snaive", threshold=1e9))
    state = book.series[KEY]
    assert len(state.values) == book.max_len and state.end == 5200
    assert state.start == 5200 - book.max_len
    assert state.values.view()[0] == float(200 - book.max_len)


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
    assert book.series[KEY].values.view()[-3:].tolist() == [0.0, 0.0, 7.0]


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
    for _ in range(24):
        state.model_errors.append(50.0)
        state.naive_errors.append(1.0)
        state.covered.append(0.0)
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


def test_a_book_without_forecasts_keeps_what_the_reactive_rule_reads() -> None:
    """forecasts=False (the simulator's reactive and oracle runs) fits nothing but sees
    the same last bucket and last crossing as a forecasting book."""
    params = SeriesParams(model="snaive", threshold=150, horizon=3)
    books = [DemandBook(HOUR), DemandBook(HOUR, forecasts=False)]
    for book in books:
        for i, v in enumerate(pattern(80)):
            book.observe(KEY, 1000 + i, v, params)
        book.refresh_baselines()
    full, bare = (b.view(KEY, 1080 * HOUR, 1081 * HOUR) for b in books)
    assert (bare.observed, bare.last_above) == (full.observed, full.last_above)
    assert full.last_above is not None and full.predicted > 0
    assert bare.predicted == 0.0 and bare.p_cross is None
    assert books[0].due_fits(0.0) and books[1].due_fits(0.0) == []
    assert books[1].series[KEY].fitted is None
