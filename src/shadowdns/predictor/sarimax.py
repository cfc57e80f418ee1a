"""SARIMAX in the form that stays feasible with a 288-step season.

A true seasonal ARIMA with a daily season of 288 steps is infeasible (its state has
hundreds of elements), so the season is a regression on daily Fourier terms (and weekly
ones once three weeks of history exist) and the short-term dynamics are ARMA(p, q) errors,
estimated by statsmodels' ``SARIMAX`` (maximum likelihood, started from Hannan-Rissanen)
on the regression residuals. `state.ArmaFourierKernel`
runs the fitted model so the state advances cheaply every window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, quiet, single_threaded_blas
from shadowdns.predictor.baseline import fit_on_window
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import ArmaFourierKernel


@dataclass(frozen=True, slots=True)
class Sarimax:
    """Fourier regression + ARMA(p, q) errors; needs two days of non-constant history."""

    p: int = 2
    q: int = 1
    day_harmonics: int = 8
    week_harmonics: int = 3
    fit_days: int = 28
    arma_days: int = 7
    name: str = "sarimax"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        window = values[-self.fit_days * spec.season :]
        return fit_on_window(self.name, values, window, 30, spec, self._estimate)

    def _estimate(self, window: FloatArray, m: int, start: int) -> ArmaFourierKernel:
        from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        single_threaded_blas()

        day = min(self.day_harmonics, (m - 1) // 2)
        week = self.week_harmonics if len(window) >= 21 * m else 0
        kernel = ArmaFourierKernel(
            intercept=np.zeros(1),
            beta=np.zeros((1, 2 * (day + week))),
            ar=np.zeros((1, self.p)),
            ma=np.zeros((1, self.q)),
            u_lags=np.zeros((1, self.p)),
            e_lags=np.zeros((1, self.q)),
            offset=np.zeros((1, 1)),
            t=start,
            season=m,
            day_harmonics=day,
            week_harmonics=week,
        )
        steps = start + np.arange(len(window))
        design = np.hstack([np.ones((len(window), 1)), kernel.regressors(steps)])
        coef, *_ = np.linalg.lstsq(design, window, rcond=None)
        # The ARMA part models short-term dynamics: its most recent days are enough.
        resid = (window - design @ coef)[-self.arma_days * m :]
        with quiet():
            # Hannan-Rissanen (two regressions) gives start values close to the optimum;
            # with the scale concentrated out, the MLE then needs a handful of iterations.
            # When those start values are unusable (not stationary), statsmodels' own are.
            hr, _ = hannan_rissanen(resid, ar_order=self.p, ma_order=self.q)
            model = SARIMAX(resid, order=(self.p, 0, self.q), trend="n", concentrate_scale=True)
            start = np.r_[hr.ar_params, hr.ma_params]
            res = model.fit(start_params=start, disp=False, maxiter=50)
            if not np.all(np.isfinite(res.params)):
                res = model.fit(disp=False, maxiter=50)
        params = dict(zip(res.model.param_names, np.asarray(res.params), strict=True))
        ar = [params[f"ar.L{i}"] for i in range(1, self.p + 1)]
        ma = [params[f"ma.L{i}"] for i in range(1, self.q + 1)]
        if not np.all(np.isfinite(coef)) or not np.all(np.isfinite(ar + ma)):
            raise ValueError("non-finite parameters")
        kernel.intercept[0] = coef[0]
        kernel.beta[0] = coef[1:]
        kernel.ar[0] = ar
        kernel.ma[0] = ma
        return kernel
