"""`auto`: one selection, the same wherever it runs (inline, in a worker, in a fit job)."""

from __future__ import annotations

import numpy as np
import pytest

from shadowdns.allocator.forecasting import fit_job
from shadowdns.predictor.base import FitSpec, Fitted, Forecaster, error_quantiles
from shadowdns.predictor.baseline import SeasonalNaive
from shadowdns.predictor.ets import Ets
from shadowdns.predictor.metrics import mase, naive_scale, windows
from shadowdns.predictor.refresh import process_pool
from shadowdns.predictor.selection import (
    STATISTICAL_MODELS,
    Auto,
    candidates,
    fit_all,
    lstm_available,
)
from shadowdns.predictor.series import FloatArray, Series
from shadowdns.predictor.state import rolling_forecasts

H = 12


def spec_for(series: Series) -> FitSpec:
    return FitSpec(season=series.season, horizon=H, start=series.start)


def test_default_candidates_are_every_model() -> None:
    """`auto` chooses from the statistical models and, with torch installed, the LSTM."""
    names = [c.name for c in Auto().candidates]
    extra = ["lstm"] if lstm_available() else []
    assert names == [*STATISTICAL_MODELS, *extra]
    assert [c.name for c in candidates()] == list(STATISTICAL_MODELS)


def test_the_winner_is_its_trial_not_a_refit(nasa: Series) -> None:
    """The chosen model's state is the one its trial left at the end of the history, with
    the band measured on the validation errors; its score is the validation MASE."""
    values, spec = nasa.values, spec_for(nasa)
    auto = Auto([SeasonalNaive(), Ets()])
    fitted = auto.fit(values, spec)
    cut = auto.split(len(values), spec)
    by_name = {c.name: c for c in auto.candidates}
    again = by_name[fitted.model].fit(values[:cut], spec)
    points, _ = rolling_forecasts(again.kernel, values[None, cut:], H)
    origins = len(values) - cut - H + 1
    expected = mase(windows(values[cut:], H, origins), points[0], naive_scale(values[:cut], 288))
    assert fitted.scores[fitted.model] == pytest.approx(expected)
    assert fitted.kernel.t == spec.start + len(values)
    band = error_quantiles(values[cut:], points[0], spec.quantile, H)
    np.testing.assert_allclose(fitted.kernel.offset, band)
    np.testing.assert_allclose(fitted.predict(H).point, again.predict(H).point)


def test_a_candidate_that_falls_back_is_not_scored(nasa: Series) -> None:
    """ETS on a constant history falls back to the baseline: only seasonal naive scores."""
    spec = spec_for(nasa)
    fitted = Auto([SeasonalNaive(), Ets()]).fit(np.full(4 * 288, 5.0), spec)
    assert set(fitted.scores) == {"snaive"}


class Broken:
    """A candidate whose fit raises."""

    name = "broken"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        raise RuntimeError("the optimiser exploded")


def test_a_candidate_that_raises_is_left_out(nasa: Series) -> None:
    """A broken candidate costs its own trial only, inline and with a worker alike."""
    values, spec = nasa.values[: 4 * 288], spec_for(nasa)
    auto = Auto([Broken(), SeasonalNaive(), Ets()])
    fitted = auto.fit(values, spec)
    assert set(fitted.scores) == {"snaive", "ets"}
    forecast, scores = auto.forecast(values, spec)
    assert scores == pytest.approx(fitted.scores) and forecast.model == fitted.model


def test_too_short_to_validate_gives_the_baseline() -> None:
    """With less than two seasons to fit on, nothing is scored and the baseline answers."""
    fitted = Auto([SeasonalNaive(), Ets()]).fit(np.arange(400.0), FitSpec(288, H))
    assert fitted.model == "snaive" and fitted.scores == {}


@pytest.fixture(scope="module")
def small_lstm() -> Forecaster:
    """A small untrained LSTM (needs the extra shadowdns[lstm])."""
    pytest.importorskip("torch")
    from shadowdns.predictor.lstm import Lstm, LstmConfig

    return Lstm(LstmConfig(window=12, hidden=8, epochs=2, max_samples=2000, batch=128))


def test_forecast_in_a_worker_equals_fit_then_predict(nasa: Series, small_lstm: Forecaster) -> None:
    """`Auto.forecast` with the LSTM's trial in another process gives exactly what
    `Auto.fit(...).predict(...)` gives inline: the same scores, choice and numbers."""
    values, spec = nasa.values[: 4 * 288], spec_for(nasa)
    make = lambda: Auto([SeasonalNaive(), Ets(), small_lstm])  # noqa: E731
    with process_pool(1) as pool:
        forecast, scores = make().forecast(values, spec, pool)
    inline = make().fit(values, spec)
    assert "lstm" in scores
    assert scores == pytest.approx(inline.scores, rel=1e-6)
    assert forecast.model == inline.model
    expected = inline.predict(H)
    np.testing.assert_allclose(forecast.point, expected.point, rtol=1e-5)
    np.testing.assert_allclose(forecast.upper, expected.upper, rtol=1e-5)


def test_fit_all_trains_one_network_across_the_batch(
    nasa: Series, elb: Series, small_lstm: Forecaster
) -> None:
    """A batch shares one LSTM, trained once on the fitting parts of all its series; a
    network it already has is kept (a loaded shared one is never retrained per batch)."""
    from shadowdns.predictor.lstm import Lstm

    assert isinstance(small_lstm, Lstm)
    model = Lstm(small_lstm.config)
    auto = Auto([SeasonalNaive(), model])
    histories = [(s.values[: 4 * 288], spec_for(s)) for s in (nasa, elb)]
    fits = fit_all(auto, histories)
    [net] = model.nets.values()
    assert all(getattr(f.kernel, "net", net) is net for f in fits)
    fit_all(auto, histories)
    assert model.nets[(288, H)] is net


def test_a_fit_job_chooses_as_the_commands_do(elb: Series) -> None:
    """The allocator's fit job for `auto` with `lstm` (allocator.yaml) is `fit_all` on one
    series: same candidates (the LSTM among them when installed), same scores, same
    choice. Without it the LSTM is not trained: the statistical candidates only."""
    values, spec = elb.values[: 4 * 288], spec_for(elb)
    job = fit_job("auto", values, spec.season, spec.horizon, spec.start, spec.quantile,
                  lstm=True)
    [direct] = fit_all(Auto(), [(values, spec)])
    assert job.model == direct.model
    assert job.scores == pytest.approx(direct.scores)
    assert ("lstm" in job.scores) == lstm_available()
    plain = fit_job("auto", values, spec.season, spec.horizon, spec.start, spec.quantile)
    assert set(plain.scores) <= set(STATISTICAL_MODELS)
    assert plain.scores == pytest.approx({k: v for k, v in direct.scores.items()
                                          if k != "lstm"})
