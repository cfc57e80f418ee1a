"""The demand book: bucket order, the planned-demand window, fits and their catch-up."""

from __future__ import annotations

import numpy as np

from shadowdns.allocator.forecasting import DemandBook, SeriesParams, fit_job

KEY = ("app.example.com.", "jp")
HOUR = 3600


def pattern(n: int) -> list[float]:
    """A daily cycle of query counts (whole numbers: the book stores counts as float32)."""
    return [float(round(100.0 + 80.0 * np.sin(2 * np.pi * i / 24))) for i in range(n)]


def test_book_history_is_bounded_and_start_follows() -> None:
    """Past `history` the book drops the oldest buckets and moves `start` with them."""
    book = DemandBook(HOUR, history=72 * HOUR)
    for i in range(200):
        book.observe(KEY, 5000 + i, float(i), SeriesParams(model="snaive", threshold=1e9))
    state = book.series[KEY]
    assert len(state.values) == book.max_len and state.end == 5200
    assert state.start == 5200 - book.max_len
    assert state.values[0] == float(200 - book.max_len)


def test_view_takes_the_upper_band_over_the_planned_window() -> None:
    """A seasonal-naive fit repeats yesterday; the view is the max upper value of the
    buckets overlapping [since, until); gaps count as zero queries."""
    book = DemandBook(HOUR)
    params = SeriesParams(model="snaive", threshold=150, horizon=3)
    for i, v in enumerate(pattern(72)):
        book.observe(KEY, 1000 + i, v, params)
    [request] = book.due_fits(0.0)
    book.apply_fit(request, fit_job(request.model, request.values, request.season,
                                    request.horizon, request.start, request.quantile), 0.0)
    t = (1000 + 72) * HOUR  # the next bucket starts here
    view = book.view(KEY, t + 5 * HOUR, t + 7 * HOUR)  # buckets 5 and 6 ahead
    assert view.predicted >= max(pattern(72)[5:7]) and view.model == "snaive"
    assert view.observed == pattern(72)[-1]
    book.observe(KEY, 1000 + 74, 7.0)  # 1072 and 1073 missing: zeros
    assert book.series[KEY].values[-3:].tolist() == [0.0, 0.0, 7.0]


def test_a_young_series_forecasts_its_last_bucket_until_it_has_a_fit() -> None:
    """Before two days of history and without a period the book plans on the last
    bucket (what the reactive rule does), its band measured as the history grows."""
    book = DemandBook(HOUR)
    params = SeriesParams(threshold=150, horizon=3)
    rng = np.random.default_rng(2)
    values = rng.uniform(50, 150, 30)
    for i, v in enumerate(values):
        book.observe(KEY, 1000 + i, float(v), params)
        book.refresh_baselines()
    assert book.due_fits(0.0) == []
    state = book.series[KEY]
    assert state.model == "last" and state.period == 0
    _, point, upper = book.forecast(KEY, 3)
    assert point.tolist() == [values[-1]] * 3
    assert (upper > point).all()  # the band of last-value errors, not zero width


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
    row = book.index[KEY]
    book.err_model[:, row], book.err_naive[:, row], book.err_covered[:, row] = 50.0, 1.0, 0.0
    book.err_count[row] = 24
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
        for request in book.due_fits(0.0):  # the first fit, at two days
            book.apply_fit(request, fit_job(request.model, request.values, request.season,
                                            request.horizon, request.start,
                                            request.quantile), 0.0)
        if i >= 3 * season and i + 3 < n:
            start = (1000 + i + 3) * HOUR  # the bucket 3 steps after the next one
            view = book.view(KEY, start, start + HOUR)
            assert view.p_cross is not None
            probs.append(view.p_cross)
            actual.append(values[i + 3] >= threshold)
    p, crossed = np.array(probs), np.array(actual)
    assert book.series[KEY].model == "snaive"
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


def test_a_timer_driven_series_gets_its_period_and_is_forecast_a_lead_ahead() -> None:
    """One busy 5-minute bucket every hour: after a few cycles the book has found the
    period (12 buckets), fits with it as the season, and the window 15 minutes ahead of
    the next burst is called certain while the quiet windows are not."""
    bucket = 300
    book = DemandBook(bucket)
    params = SeriesParams(threshold=10, horizon=5)
    start = 100_000
    requests = []
    for i in range(5 * 12):
        book.observe(KEY, start + i, 40.0 if i % 12 == 7 else 0.0, params)
        book.refresh_baselines()
        requests += book.due_fits(0.0)
    state = book.series[KEY]
    assert state.period == 12
    assert requests and requests[0].season == 12 and requests[0].reason == "period found"
    for request in requests:
        book.apply_fit(request, fit_job(request.model, request.values, request.season,
                                        request.horizon, request.start, request.quantile), 0.0)
    now = (start + 5 * 12) * bucket  # the next bucket is cycle phase 0
    burst = (start + 5 * 12 + 7) * bucket
    view = book.view(KEY, burst, burst + bucket)  # what the planner asks 35 min ahead
    quiet = book.view(KEY, now + 3 * bucket, now + 4 * bucket)
    assert view.predicted >= 40.0 and view.p_cross is not None and view.p_cross >= 0.9
    assert quiet.p_cross is not None and quiet.p_cross < 0.5


def test_calls_that_do_not_come_true_stop_triggering() -> None:
    """A raw probability of 0.6 whose calls cross a fifth of the time becomes about a
    fifth once its bin holds enough judged calls; a bin without calls keeps the raw."""
    book = DemandBook(HOUR)
    params = SeriesParams(threshold=100, horizon=2)
    book.observe(KEY, 0, 1.0, params)
    row = np.array([book.index[KEY]])
    for i in range(1, 200):
        book._call(row, np.array([i]), np.array([i + 1]), np.array([0.6]))
        book.observe(KEY, i, 150.0 if i % 5 == 0 else 1.0, params)
    assert book.call_count[row[0]] == 0  # every call judged
    assert abs(book.calibrated(row, 0.6)[0] - 0.2) < 0.05
    assert book.calibrated(row, 0.95)[0] == 0.95


def test_recent_means_average_the_last_buckets_a_series_has() -> None:
    """The mean of the last n buckets; a younger series averages what it has, not the
    ring's empty cells, and one the book has no bucket of yet is 0."""
    book = DemandBook(HOUR, history=72 * HOUR)
    old, young = KEY, ("app.example.com.", "kr")
    later = {98: 10.0, 99: 30.0}
    for i in range(100):  # past the ring's length: its cells hold newer buckets
        rows = {old: [((5000 + i) * HOUR, float(i))]}
        if i in later:
            rows[young] = [((5000 + i) * HOUR, later[i])]
        book.advance(rows, 5000 + i, {old[0]: SeriesParams()})
    means = book.recent_means([old, young], 4)
    assert means.tolist() == [(96 + 97 + 98 + 99) / 4, (10 + 30) / 2]
    assert book.recent_means([old], 1).tolist() == [99.0]
    assert DemandBook(HOUR).recent_means([], 4).tolist() == []
