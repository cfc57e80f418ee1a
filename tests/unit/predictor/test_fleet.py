"""The fleet: many series' states stacked and advanced together, as one series would be."""

from __future__ import annotations

import numpy as np
import pytest

from shadowdns.predictor.base import FitSpec, Fitted
from shadowdns.predictor.baseline import SeasonalNaive
from shadowdns.predictor.ets import Ets
from shadowdns.predictor.fleet import Fleet, Rows
from shadowdns.predictor.sarimax import Sarimax
from shadowdns.predictor.series import Series

H = 6


@pytest.fixture(scope="module")
def fits(nasa: Series, elb: Series) -> dict[str, Fitted]:
    """Two real series fitted by each statistical model, all ending at the same step."""
    out: dict[str, Fitted] = {}
    for s in (nasa, elb):
        spec = FitSpec(season=288, horizon=H, start=0)
        for model in (SeasonalNaive(), Ets(), Sarimax()):
            out[f"{s.key}/{model.name}"] = model.fit(s.values[: 3 * 288], spec)
    return out


def test_fleet_forecasts_equal_per_series_forecasts(
    fits: dict[str, Fitted], nasa: Series, elb: Series
) -> None:
    """Stacked and updated together, every series forecasts exactly what it would alone."""
    fleet = Fleet(fits)
    assert len(fleet.groups) == 3
    alone = {k: Fleet({k: f}).fitted(k) for k, f in fits.items()}  # independent copies
    source = {k: (nasa if k.startswith(nasa.key) else elb) for k in fits}
    for step in range(3 * 288, 3 * 288 + 5):
        values = np.array([source[k].values[step] for k in fleet.keys])
        values[1] = np.nan  # one series has no value this window
        fleet.update(values)
        for i, k in enumerate(fleet.keys):
            alone[k].update(values[i : i + 1])
    point, upper = fleet.forecast(H)
    for i, k in enumerate(fleet.keys):
        single = alone[k].predict(H)
        np.testing.assert_allclose(point[i], single.point, rtol=1e-12)
        np.testing.assert_allclose(upper[i], single.upper, rtol=1e-12)


def test_replace_swaps_a_refit_in_place(fits: dict[str, Fitted], nasa: Series) -> None:
    """A refit of the same shape replaces its row; the model name follows."""
    fleet = Fleet(fits)
    key = next(k for k in fits if k.endswith("/ets"))
    refit = SeasonalNaive().fit(nasa.values[: 3 * 288], FitSpec(288, H, 0))
    same_shape = Ets().fit(nasa.values[: 3 * 288] * 2, FitSpec(288, H, 0))
    assert fleet.replace({key: same_shape}) is fleet
    i = fleet.keys.index(key)
    np.testing.assert_allclose(fleet.forecast(H)[0][i], same_shape.predict(H).point)
    other = fleet.replace({key: refit})
    assert dict(other.items())[key] == "snaive"
    np.testing.assert_allclose(other.forecast(H)[0][other.keys.index(key)], refit.predict(H).point)


def test_series_at_different_steps_cannot_share_a_fleet(nasa: Series) -> None:
    """Kernels must share one clock."""
    a = SeasonalNaive().fit(nasa.values[:300], FitSpec(288, H, 0))
    b = SeasonalNaive().fit(nasa.values[:301], FitSpec(288, H, 0))
    with pytest.raises(ValueError, match="different steps"):
        Fleet({"a": a, "b": b})


def test_rows_advance_and_swap_series_as_each_would_alone(
    fits: dict[str, Fitted], nasa: Series, elb: Series
) -> None:
    """The demand book's rows: series put in batches, one of them refitted (a new model,
    another batch) midway, all advanced together — each forecasts what its own kernel
    advanced alone does, and a swapped series leaves its old batch."""
    names = sorted(fits)
    rows = Rows()
    for i, name in enumerate(names):
        rows.put(np.array([i]), Fleet({name: fits[name]}).fitted(name).kernel)
    alone = {name: Fleet({name: f}).fitted(name).kernel for name, f in fits.items()}
    source = {k: (nasa if k.startswith(nasa.key) else elb) for k in fits}
    swapped = names.index(f"{elb.key}/ets")
    for step in range(3 * 288, 3 * 288 + 4):
        if step == 3 * 288 + 2:  # a refit lands: the series becomes a seasonal naive
            kernel = Fleet({"x": fits[f"{elb.key}/snaive"]}).fitted("x").kernel
            for value in elb.values[3 * 288 : step]:
                kernel.update(np.array([value]))
            rows.put(np.array([swapped]), kernel)
            alone[names[swapped]] = Fleet({"x": fits[f"{elb.key}/snaive"]}).fitted("x").kernel
            for value in elb.values[3 * 288 : step]:
                alone[names[swapped]].update(np.array([value]))
        values = np.array([source[k].values[step] for k in names])
        for group in rows.batches():
            group.kernel.update(values[group.positions])
        for name, kernel in alone.items():
            kernel.update(values[[names.index(name)]])
    assert sum(len(g.positions) for g in rows.batches()) == len(names)
    for i, name in enumerate(names):
        kernel = rows.kernel(i)
        assert kernel is not None
        got, want = kernel.forecast(H), alone[name].forecast(H)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-9, atol=1e-9)
    assert rows.kernel(len(names)) is None
