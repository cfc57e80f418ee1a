"""Holt-Winters as a state-space ETS model (statsmodels ``ETSModel``): A/Ad/A.

Additive errors, an additive damped trend and an additive daily season. statsmodels
estimates the smoothing parameters and initial states (heuristic initialisation: fast, and
feasible with a 288-step season); `state.EtsKernel` then runs the same recursion, so the
state can be advanced cheaply every window and stacked across series. Fitting looks at the
most recent ``fit_seasons`` days only: older data does not change the parameters much and
costs time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, quiet, single_threaded_blas
from shadowdns.predictor.baseline import fit_on_window
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import EtsKernel


@dataclass(frozen=True, slots=True)
class Ets:
    """ETS(A, Ad, A) fitted by statsmodels; needs two seasons of non-constant history."""

    damped: bool = True
    fit_seasons: int = 21
    name: str = "ets"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        m = spec.season
        window = values[-self.fit_seasons * m :] if m > 1 else values[-2000:]
        return fit_on_window(self.name, values, window, 20, spec, self._estimate)

    def _estimate(self, window: FloatArray, m: int, start: int) -> EtsKernel:
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        single_threaded_blas()

        seasonal = m > 1
        with quiet():
            model = ETSModel(
                window,
                error="add",
                trend="add",
                damped_trend=self.damped,
                seasonal="add" if seasonal else None,
                seasonal_periods=m if seasonal else None,
                initialization_method="heuristic",
            )
            res = model.fit(disp=False)
        season = np.zeros((1, m))
        if seasonal:
            slots = (start + np.arange(m)) % m
            season[0, slots] = np.asarray(res.initial_seasonal, dtype=np.float64)
        params = {
            "alpha": float(res.smoothing_level),
            "beta": float(res.smoothing_trend),
            "gamma": float(res.smoothing_seasonal) if seasonal else 0.0,
            "phi": float(res.damping_trend) if self.damped else 1.0,
        }
        if not all(np.isfinite(v) for v in params.values()):
            raise ValueError(f"non-finite parameters {params}")
        return EtsKernel(
            alpha=np.array([params["alpha"]]),
            beta=np.array([params["beta"]]),
            gamma=np.array([params["gamma"]]),
            phi=np.array([params["phi"]]),
            level=np.array([float(res.initial_level)]),
            trend=np.array([float(res.initial_trend)]),
            season=season,
            offset=np.zeros((1, 1)),
            t=start,
        )
