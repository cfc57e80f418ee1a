"""The global LSTM on small real data (needs the extra shadowdns[lstm]: CPU torch)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from shadowdns.predictor.base import FitSpec
from shadowdns.predictor.fleet import Fleet
from shadowdns.predictor.series import Series
from shadowdns.predictor.state import rolling_forecasts

pytest.importorskip("torch")

from shadowdns.predictor.lstm import Lstm, LstmConfig

H = 12
SMALL = LstmConfig(window=24, hidden=16, epochs=2, max_samples=3000, batch=128)


@pytest.fixture(scope="module")
def trained(nasa: Series, elb: Series) -> Lstm:
    """One network trained across two real series (four days each)."""
    model = Lstm(SMALL)
    model.train([(s.values[: 4 * 288], FitSpec(288, H, s.start)) for s in (nasa, elb)])
    return model


def test_lstm_trains_across_series_and_forecasts_sanely(trained: Lstm, nasa: Series) -> None:
    """The shared network conditions on one series and gives H sane values with a band."""
    assert (288, H) in trained.nets
    fitted = trained.fit(nasa.values[: 4 * 288], FitSpec(288, H, nasa.start))
    assert fitted.model == "lstm"
    forecast = fitted.predict(H)
    assert np.all(np.isfinite(forecast.point)) and np.all(forecast.point >= 0)
    assert np.all(forecast.upper >= forecast.point)
    recent = nasa.values[4 * 288 - 288 : 4 * 288]
    assert forecast.point.mean() < 5 * recent.max()


def test_lstm_beats_seasonal_naive_on_held_out_day(trained: Lstm, nasa: Series) -> None:
    """On the day after its training data, an hour ahead, the LSTM's MAE is below the
    seasonal naive one's."""
    fitted = trained.fit(nasa.values[: 4 * 288], FitSpec(288, H, nasa.start))
    future = nasa.values[4 * 288 : 5 * 288]
    points, _ = rolling_forecasts(fitted.kernel, future[None, :], H)
    actual = np.lib.stride_tricks.sliding_window_view(future, H)
    naive = np.lib.stride_tricks.sliding_window_view(nasa.values[3 * 288 : 4 * 288], H)
    assert np.mean(np.abs(points[0] - actual)) < np.mean(np.abs(naive - actual))


def test_save_and_load_give_the_same_forecasts(trained: Lstm, nasa: Series, tmp_path: Path) -> None:
    """A network saved to disk and loaded back forecasts identically."""
    path = tmp_path / "lstm.pt"
    trained.save(path)
    loaded = Lstm.load(path)
    spec = FitSpec(288, H, nasa.start)
    a = trained.fit(nasa.values[: 3 * 288], spec).predict(H)
    b = loaded.fit(nasa.values[: 3 * 288], spec).predict(H)
    np.testing.assert_allclose(a.point, b.point, rtol=1e-6)


def test_batched_rolling_equals_step_by_step(trained: Lstm, elb: Series) -> None:
    """The one-pass backtest path gives what update-then-forecast gives at every origin."""
    fitted = trained.fit(elb.values[: 3 * 288], FitSpec(288, H, elb.start))
    stepwise = copy.copy(fitted.kernel)
    stepwise.history = fitted.kernel.history.copy()  # type: ignore[attr-defined]
    future = elb.values[None, 3 * 288 : 3 * 288 + 40].copy()
    future[0, 5] = np.nan
    points, uppers = rolling_forecasts(fitted.kernel, future, H)
    for i in range(future.shape[1] - H + 1):
        p, u = stepwise.forecast(H)
        np.testing.assert_allclose(points[0, i], p[0], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(uppers[0, i], u[0], rtol=1e-4, atol=1e-3)
        stepwise.update(future[:, i])


def test_lstm_states_stack_into_a_fleet(trained: Lstm, nasa: Series, elb: Series) -> None:
    """Series conditioned on one network stack into one batch, forecast together."""
    spec = FitSpec(288, H, 0)
    fits = {s.key: trained.fit(s.values[: 3 * 288], spec) for s in (nasa, elb)}
    fleet = Fleet(fits)
    assert len(fleet.groups) == 1
    point, _ = fleet.forecast(H)
    for i, key in enumerate(fleet.keys):
        np.testing.assert_allclose(point[i], fits[key].predict(H).point, rtol=1e-4)


def test_untrained_lstm_trains_on_the_one_series(elb: Series) -> None:
    """Without a shared network, fit trains one on the series it is given."""
    model = Lstm(LstmConfig(window=12, hidden=8, epochs=1, max_samples=500))
    fitted = model.fit(elb.values[: 3 * 288], FitSpec(288, H, elb.start))
    assert fitted.model == "lstm" and model.nets


def test_forecasting_in_several_network_batches(
    trained: Lstm, nasa: Series, elb: Series, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet larger than one network batch forecasts what each series does alone."""
    import shadowdns.predictor.lstm as lstm_module

    spec = FitSpec(288, H, 0)
    fits = {
        f"{s.key}/{cut}": trained.fit(s.values[cut : cut + 2 * 288], spec)
        for s in (nasa, elb)
        for cut in (0, 288, 576)
    }
    alone = {k: f.predict(H).point for k, f in fits.items()}
    monkeypatch.setattr(lstm_module, "NETWORK_BATCH", 4)
    fleet = Fleet(fits)
    point, _ = fleet.forecast(H)
    for i, key in enumerate(fleet.keys):
        np.testing.assert_allclose(point[i], alone[key], rtol=1e-4)


def test_a_fit_job_returns_an_lstm_state_from_its_worker(nasa: Series) -> None:
    """The allocator's fit job runs in a worker process and sends the fitted state back:
    an LSTM state (its network included) comes back whole and forecasts as it did there."""
    from shadowdns.allocator.forecasting import fit_job
    from shadowdns.predictor.refresh import process_pool

    values = nasa.values[: 4 * 288]
    with process_pool(1) as pool:
        fitted = pool.submit(fit_job, "lstm", values, 288, H, nasa.start, 0.9).result()
    assert fitted.model == "lstm"
    here = fit_job("lstm", values, 288, H, nasa.start, 0.9)
    np.testing.assert_allclose(fitted.predict(H).point, here.predict(H).point, rtol=1e-5)
