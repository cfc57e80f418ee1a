"""Refreshing forecasts from the store: new series, incremental updates, refits, bad series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shadowdns.predictor.refresh import RefreshConfig, Refresher
from shadowdns.predictor.series import Series
from shadowdns.store import DemandRow, Store, open_store

STEP = 300
T0 = 1_700_000_000 - 1_700_000_000 % 86_400  # a midnight
DAYS = 3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path / "state.db")
    yield s
    s.close()


def load(store: Store, key: tuple[str, str], values: np.ndarray, first: int) -> None:
    """Write 5-minute counts as minute rows and roll them up, as the resolver would."""
    rows = [
        DemandRow(key[0], key[1], first + i * STEP, "primary", int(v))
        for i, v in enumerate(values)
        if v > 0
    ]
    store.add_demand(rows)
    store.rollup(first + len(values) * STEP + 600)


def config(**overrides: object) -> RefreshConfig:
    base = {"model": "auto", "horizon": 12, "history": 4 * 86_400, "refit_every": 86_400}
    base.update(overrides)
    return RefreshConfig(**base)  # type: ignore[arg-type]


def test_refresh_writes_forecasts_and_choices_for_every_active_series(
    store: Store, nasa: Series
) -> None:
    """Each active series gets a forecast of H future buckets with its model, and auto's
    choice is stored with its validation error; a DI with a single query gets the baseline."""
    load(store, ("app.example.", "EU"), nasa.values[: DAYS * 288], T0)
    load(store, ("new.example.", "NA"), np.array([3.0]), T0 + (DAYS * 288 - 1) * STEP)
    now = T0 + DAYS * 86_400 + 30
    report = Refresher(store, config(model="ets")).refresh(now)
    assert report.series == 2 and report.refitted == 2
    forecasts = {(f.di, f.region): f for f in store.read_forecasts("5m")}
    app = forecasts[("app.example.", "EU")]
    assert app.model == "ets"
    assert [p.ts for p in app.points] == [T0 + DAYS * 86_400 + h * STEP for h in range(12)]
    assert all(p.upper >= p.point >= 0 for p in app.points)
    assert forecasts[("new.example.", "NA")].model == "snaive"


def test_auto_choice_is_stored(store: Store, nasa: Series) -> None:
    """With model auto (statistical candidates), the choice and its error are stored."""
    load(store, ("app.example.", "EU"), nasa.values[: DAYS * 288], T0)
    refresher = Refresher(store, config())
    refresher.refresh(T0 + DAYS * 86_400 + 30)
    [choice] = store.read_model_choices()
    assert choice.model in {"snaive", "snaive_weekly", "ets", "sarimax"}
    assert choice.error > 0
    assert store.read_forecasts("5m")[0].model == choice.model


def test_next_window_updates_state_without_refitting(store: Store, nasa: Series) -> None:
    """In the next window the state advances over the new buckets and nothing is refitted;
    the forecast written starts after the newest bucket and is the advanced state's."""
    key = ("app.example.", "EU")
    n = DAYS * 288
    load(store, key, nasa.values[:n], T0)
    refresher = Refresher(store, config(model="ets"))
    refresher.refresh(T0 + n * STEP + 30)
    load(store, key, nasa.values[n : n + 2], T0 + n * STEP)
    report = refresher.refresh(T0 + (n + 2) * STEP + 30)
    assert report.refitted == 0 and report.updated_steps == 2
    [forecast] = store.read_forecasts("5m")
    assert forecast.points[0].ts == T0 + (n + 2) * STEP
    assert refresher.fleet is not None
    expected = refresher.fleet.fitted(key).predict(12).point
    assert [p.point for p in forecast.points] == pytest.approx(expected.tolist())


def test_inactive_series_leave_the_fleet(store: Store, nasa: Series) -> None:
    """A series with no queries for longer than active_for is no longer refreshed."""
    load(store, ("old.example.", "EU"), nasa.values[:288], T0)
    load(store, ("app.example.", "EU"), nasa.values[: DAYS * 288], T0)
    report = Refresher(store, config(model="snaive")).refresh(T0 + DAYS * 86_400 + 30)
    assert report.series == 1


def test_auto_trains_the_shared_lstm_before_its_first_fits(
    store: Store, nasa: Series, tmp_path: Path
) -> None:
    """Given a file for the shared LSTM, the first refresh trains it across the due series
    (before fitting them), and a chunk fitted with it has the LSTM among auto's scores,
    its network left out of what goes back to the parent."""
    pytest.importorskip("torch")
    from shadowdns.predictor.base import FitSpec
    from shadowdns.predictor.refresh import fit_chunk

    path = tmp_path / "lstm.pt"
    load(store, ("app.example.", "EU"), nasa.values[: DAYS * 288], T0)
    Refresher(store, config(lstm_path=str(path))).refresh(T0 + DAYS * 86_400 + 30)
    assert path.exists()
    spec = FitSpec(288, 12, 0)
    [(key, fitted)] = fit_chunk("auto", str(path), [("k", nasa.values[: DAYS * 288], spec)])
    assert key == "k" and "lstm" in fitted.scores
    if fitted.model == "lstm":
        assert getattr(fitted.kernel, "net") is None  # noqa: B009
