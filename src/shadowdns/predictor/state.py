"""Vectorised forecasting state: one numpy recursion advances every series at once.

The libraries (statsmodels) fit parameters on a slow schedule; re-filtering a fleet of
100,000 series through them every window is far too slow (see DESIGN.md, "Forecasting at
scale"). The classes here hold the *state* of many series of one model family in arrays of
shape ``(n_series, ...)`` and advance it by one step in O(1) per series with a handful of
numpy operations, and forecast H steps from it.

Every kernel works on one shared clock: ``t`` is the absolute step index (timestamp divided
by the step), so that the seasonal slot ``t % season`` is the same time of day for every
series in a batch. A value that is NaN (a gap) leaves the state to coast on its own forecast.

Forecasts come back as ``(point, upper)`` arrays of shape ``(n_series, horizon)``; ``upper``
is ``point`` plus the per-series, per-step error quantile measured when the model was fitted
(``offset``), so the band is empirical rather than Gaussian. Demand is never negative, so
both are clipped at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Kernel(Protocol):
    """The state of many series of one model family, advanced one step at a time."""

    t: int
    offset: FloatArray

    @property
    def n_series(self) -> int: ...

    def update(self, y: FloatArray) -> None:
        """Advance every series by one observed step ``y`` (shape ``(n,)``, NaN = missing)."""

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        """Point forecast and upper quantile for the next ``horizon`` steps, ``(n, horizon)``."""


def band(point: FloatArray, offset: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Add the per-step quantile offsets (the last one repeats past its end); clip at zero."""
    horizon = point.shape[1]
    idx = np.minimum(np.arange(horizon), offset.shape[1] - 1)
    upper = point + np.maximum(offset[:, idx], 0.0)
    return np.maximum(point, 0.0), np.maximum(upper, 0.0)


@dataclass(eq=False)
class EtsKernel:
    """Additive-error ETS with (damped) additive trend and additive season, A/Ad/A.

    The state-space form is the one statsmodels' ``ETSModel`` uses, so parameters and initial
    states it estimates plug in unchanged::

        yhat = l + phi*b + s[t-m];  e = y - yhat
        l <- l + phi*b + alpha*e;   b <- phi*b + beta*e;   s[t] <- s[t-m] + gamma*e

    ``season`` is a ring buffer indexed by ``t % m``. A model without trend has
    ``beta = phi = 0`` and ``trend = 0``.
    """

    alpha: FloatArray
    beta: FloatArray
    gamma: FloatArray
    phi: FloatArray
    level: FloatArray
    trend: FloatArray
    season: FloatArray
    offset: FloatArray
    t: int

    @property
    def n_series(self) -> int:
        return int(self.level.shape[0])

    def update(self, y: FloatArray) -> None:
        m = self.season.shape[1]
        slot = self.t % m
        z = np.asarray(y, dtype=np.float64)
        s_old = self.season[:, slot]
        damped = self.phi * self.trend
        e = z - (self.level + damped + s_old)
        e = np.where(np.isfinite(e), e, 0.0)
        self.level = self.level + damped + self.alpha * e
        self.trend = damped + self.beta * e
        self.season[:, slot] = s_old + self.gamma * e
        self.t += 1

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        m = self.season.shape[1]
        steps = np.arange(1, horizon + 1)
        # sum_{j=1..h} phi^j, per series
        damp = np.cumsum(self.phi[:, None] ** steps[None, :], axis=1)
        slots = (self.t + steps - 1) % m
        point = self.level[:, None] + damp * self.trend[:, None] + self.season[:, slots]
        return band(point, self.offset)


@dataclass(eq=False)
class SeasonalNaiveKernel:
    """Seasonal naive: the forecast for a step is the value one season (``m`` steps) before.

    ``history`` is a ring buffer of the last ``m`` observations indexed by ``t % m``; a
    missing observation keeps the value of the season before.
    """

    history: FloatArray
    offset: FloatArray
    t: int

    @property
    def n_series(self) -> int:
        return int(self.history.shape[0])

    def update(self, y: FloatArray) -> None:
        slot = self.t % self.history.shape[1]
        z = np.asarray(y, dtype=np.float64)
        self.history[:, slot] = np.where(np.isfinite(z), z, self.history[:, slot])
        self.t += 1

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        m = self.history.shape[1]
        slots = (self.t + np.arange(horizon)) % m
        return band(self.history[:, slots], self.offset)


def fourier_features(t: npt.NDArray[np.int64], period: int, harmonics: int) -> FloatArray:
    """``[sin(2πk t/period), cos(2πk t/period)]`` for k = 1..harmonics, shape ``(len(t), 2K)``."""
    if harmonics <= 0:
        return np.zeros((len(t), 0))
    angle = 2.0 * np.pi * (np.asarray(t) % period)[:, None] / period
    k = np.arange(1, harmonics + 1)[None, :]
    return np.hstack([np.sin(angle * k), np.cos(angle * k)])


@dataclass(eq=False)
class ArmaFourierKernel:
    """Regression on daily (and weekly) Fourier terms with ARMA(p, q) errors.

    ``y_t = c + x_t·beta + u_t`` with ``u_t = sum phi_i u_{t-i} + e_t + sum theta_j e_{t-j}``.
    This is the SARIMAX form that stays feasible with a 288-step season: the season is a
    smooth curve of a few harmonics, the ARMA errors carry the short-term dynamics. The
    state is the last ``p`` regression errors and the last ``q`` innovations, newest first.
    """

    intercept: FloatArray
    beta: FloatArray  # (n, 2*(K_day + K_week))
    ar: FloatArray  # (n, p)
    ma: FloatArray  # (n, q)
    u_lags: FloatArray  # (n, p) newest first
    e_lags: FloatArray  # (n, q) newest first
    offset: FloatArray
    t: int
    season: int
    day_harmonics: int
    week_harmonics: int

    @property
    def n_series(self) -> int:
        return int(self.intercept.shape[0])

    def regressors(self, t: npt.NDArray[np.int64]) -> FloatArray:
        """Fourier terms at absolute steps ``t``, shape ``(len(t), n_features)``."""
        day = fourier_features(t, self.season, self.day_harmonics)
        week = fourier_features(t, 7 * self.season, self.week_harmonics)
        return np.hstack([day, week])

    def _mean(self, t: npt.NDArray[np.int64]) -> FloatArray:
        """Regression part ``c + x_t·beta`` for each series at steps ``t``, ``(n, len(t))``."""
        x = self.regressors(t)
        out: FloatArray = self.intercept[:, None] + self.beta @ x.T
        return out

    def _one_step_u(self) -> FloatArray:
        pred: FloatArray = np.einsum("np,np->n", self.ar, self.u_lags) + np.einsum(
            "nq,nq->n", self.ma, self.e_lags
        )
        return pred

    def update(self, y: FloatArray) -> None:
        z = np.asarray(y, dtype=np.float64)
        mean = self._mean(np.array([self.t]))[:, 0]
        u_hat = self._one_step_u()
        u = z - mean
        missing = ~np.isfinite(u)
        u = np.where(missing, u_hat, u)
        e = np.where(missing, 0.0, u - u_hat)
        if self.u_lags.shape[1]:
            self.u_lags = np.concatenate([u[:, None], self.u_lags[:, :-1]], axis=1)
        if self.e_lags.shape[1]:
            self.e_lags = np.concatenate([e[:, None], self.e_lags[:, :-1]], axis=1)
        self.t += 1

    def forecast(self, horizon: int) -> tuple[FloatArray, FloatArray]:
        n, p = self.u_lags.shape
        q = self.e_lags.shape[1]
        u_lags = self.u_lags.copy()
        e_lags = self.e_lags.copy()
        u_future = np.zeros((n, horizon))
        for h in range(horizon):
            u_hat = np.einsum("np,np->n", self.ar, u_lags)
            if q:
                u_hat = u_hat + np.einsum("nq,nq->n", self.ma, e_lags)
                e_lags = np.concatenate([np.zeros((n, 1)), e_lags[:, :-1]], axis=1)
            if p:
                u_lags = np.concatenate([u_hat[:, None], u_lags[:, :-1]], axis=1)
            u_future[:, h] = u_hat
        point = self._mean(self.t + np.arange(horizon)) + u_future
        return band(point, self.offset)


def rolling_forecasts(
    kernel: Kernel, future: FloatArray, horizon: int
) -> tuple[FloatArray, FloatArray]:
    """Forecast ``horizon`` steps at every origin while feeding ``future`` one step at a time.

    ``future`` has shape ``(n_series, T)``; the result has shape ``(n_series, T - horizon + 1,
    horizon)``: origin ``i`` has seen ``future[:, :i]`` and forecasts ``future[:, i:i+horizon]``.
    This is the "models updating on the data seen so far" loop of a rolling-origin backtest;
    afterwards the kernel has seen all of ``future``.
    """
    batched = getattr(kernel, "rolling", None)
    if batched is not None:  # a kernel that can do all origins at once (the LSTM)
        result: tuple[FloatArray, FloatArray] = batched(future, horizon)
        return result
    n, steps = future.shape
    origins = max(steps - horizon + 1, 0)
    points = np.zeros((n, origins, horizon))
    uppers = np.zeros((n, origins, horizon))
    for i in range(origins):
        points[:, i], uppers[:, i] = kernel.forecast(horizon)
        kernel.update(future[:, i])
    for i in range(origins, steps):
        kernel.update(future[:, i])
    return points, uppers
