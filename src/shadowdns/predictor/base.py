"""The `Forecaster` protocol and what every forecaster shares.

A forecaster *fits* on one series' history (slow: the libraries estimate parameters) and
returns a `Kernel` (see `state`) holding that series' state at the end of the history, with
its prediction band calibrated. The kernel is then *updated* step by step (cheap) and asked
for forecasts. Kernels of one family stack into one batch for the fleet (`fleet`).

Fitting never raises for bad data: a forecaster that cannot fit a series (too short,
constant, the optimiser failed) returns the seasonal-naive baseline instead, and says so in
`Fitted.model`.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import Kernel, rolling_forecasts

log = logging.getLogger(__name__)

DEFAULT_QUANTILE = 0.9
"""The upper quantile forecasts carry: the allocator provisions for P90 demand."""


_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Horizon:
    """How far ahead to forecast: a number of steps (``12``) or a duration (``1h``, ``30m``).

    A duration becomes steps per series (at least one), so one backtest can span traces on
    different steps at the same lead time.
    """

    steps: int | None = None
    seconds: int | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> Horizon:
        text = text.strip().lower()
        if text.isdigit():
            value = cls(steps=int(text), text=text)
        else:
            number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
            unit = text[len(number) :]
            try:
                seconds = round(float(number) * _UNITS[unit])
            except (KeyError, ValueError):
                reason = f"horizon {text!r}: expected steps (12) or a duration (1h, 30m)"
                raise ValueError(reason) from None
            value = cls(seconds=seconds, text=text)
        if (value.steps or value.seconds or 0) < 1:
            raise ValueError(f"horizon {text!r} must be positive")
        return value

    def steps_for(self, step: int) -> int:
        """The horizon in steps of ``step`` seconds."""
        if self.steps is not None:
            return self.steps
        return max(1, (self.seconds or 0) // step)

    def to_json(self) -> int | str:
        """Steps as a number, a duration as it was written."""
        return self.steps if self.steps is not None else self.text or f"{self.seconds}s"


@dataclass(frozen=True, slots=True)
class Forecast:
    """Forecast of one series for ``len(point)`` steps: point forecast and upper quantile."""

    point: FloatArray
    upper: FloatArray
    model: str
    quantile: float = DEFAULT_QUANTILE


@dataclass(frozen=True, slots=True)
class FitSpec:
    """What a fit needs besides the values: the season, the horizon and the band's quantile.

    ``start`` is the absolute step index of the first value (``timestamp // step``), so that
    seasonal slots line up with the time of day.
    """

    season: int
    horizon: int
    start: int = 0
    quantile: float = DEFAULT_QUANTILE


@dataclass(eq=False)
class Fitted:
    """One series' fitted model: which model it really is, and its state.

    ``scores`` holds the validation MASE of every candidate when the model was chosen by
    `selection.Auto` (empty otherwise), so the choice and its error can be stored and shown.
    """

    model: str
    kernel: Kernel
    scores: dict[str, float] = field(default_factory=dict)

    def update(self, values: FloatArray) -> None:
        """Advance the state over newly observed values (oldest first; NaN = missing)."""
        for value in np.asarray(values, dtype=np.float64):
            self.kernel.update(np.array([value]))

    def predict(self, horizon: int, quantile: float = DEFAULT_QUANTILE) -> Forecast:
        """Forecast the next ``horizon`` steps."""
        point, upper = self.kernel.forecast(horizon)
        return Forecast(point[0], upper[0], self.model, quantile)


class Forecaster(Protocol):
    """Fits one series; ``name`` is what `--model` and the store call it."""

    @property
    def name(self) -> str: ...

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        """Fit on ``values`` (oldest first, no NaN) and return the state after the last one."""


class GlobalForecaster(Forecaster, Protocol):
    """A forecaster with one model shared by many series (the LSTM), trained on all of them.

    `fit` then only conditions the shared model on one series; without `train` it trains on
    that series alone.
    """

    def train(self, histories: Sequence[tuple[FloatArray, FitSpec]]) -> None:
        """Train the shared model on many series' histories."""


def calibration_steps(n: int, spec: FitSpec) -> int:
    """How many trailing steps of a history measure the band: two seasons, at most half."""
    return max(0, min(2 * spec.season, n // 2))


def error_quantiles(
    actual: FloatArray, points: FloatArray, quantile: float, horizon: int
) -> FloatArray:
    """Per-step quantile of ``actual - point`` over origins, one row per series.

    ``actual`` is the calibration stretch (``(T,)``, or ``(k, T)`` for k series), ``points``
    the ``(origins, horizon)`` (or ``(k, origins, horizon)``) forecasts made along it; the
    result has shape ``(k, horizon)``. With too few errors the band falls back to zero width.
    """
    actual = np.atleast_2d(actual)
    if points.ndim == 2:
        points = points[None]
    origins = points.shape[1]
    out = np.zeros((actual.shape[0], horizon))
    if origins == 0:
        return out
    windows = np.lib.stride_tricks.sliding_window_view(actual, horizon, axis=1)[:, :origins]
    out[:] = np.quantile(windows - points, quantile, axis=1)
    return out


def warm_up(kernel: Kernel, values: FloatArray, spec: FitSpec) -> Kernel:
    """Run ``kernel`` through ``values`` and set its band from errors on the last stretch.

    The band is the empirical ``spec.quantile`` of the h-step errors the model makes over
    the trailing `calibration_steps` of the history, so it is as wide as the series is
    bursty, whatever the shape of its error distribution. ``values`` is one series, or
    ``(k, n)`` for a batch kernel of k series of one length (the demand book fits its
    baselines that way).
    """
    rows = np.atleast_2d(values)
    n = rows.shape[1]
    tail = calibration_steps(n, spec)
    for i in range(n - tail):
        kernel.update(rows[:, i])
    future = rows[:, n - tail :]
    points, _ = rolling_forecasts(kernel, future, spec.horizon)
    kernel.offset = error_quantiles(future, points, spec.quantile, spec.horizon)
    return kernel


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings the libraries emit while fitting (convergence, bounds, …).

    A poor fit shows in the backtest error, not as a warning that would stop the caller.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


_BLAS_THREADS = (
    "scipy_openblas_set_num_threads64_",  # numpy's own OpenBLAS
    "scipy_openblas_set_num_threads",  # scipy's, which statsmodels' Kalman filter calls
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
)


@functools.cache
def single_threaded_blas() -> None:
    """Run every OpenBLAS loaded in this process on one thread (call it once the libraries
    are imported: statsmodels brings scipy's).

    A library fit makes thousands of BLAS calls on small matrices; with one thread per core
    each call waits for a peer thread that something else on the machine (the LSTM trained
    beside it, another fit worker) keeps off its core. A SARIMAX fit on a busy 2-core
    machine took 1.4-4.5 s with the default threads, 0.55 s with one. The environment
    variables are read only when numpy loads, so this finds the loaded libraries in
    ``/proc/self/maps``, as threadpoolctl does; elsewhere it does nothing.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return
    for path in sorted(set(re.findall(r"/\S*openblas\S*\.so[.\d]*", maps))):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _BLAS_THREADS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(1)
                break


@functools.cache
def skip_final_collection() -> None:
    """End this process without the interpreter's last garbage collection.

    With torch or statsmodels loaded that collection walks every object they built, which
    the exit frees anyway: 0.5 s with torch, 0.3 s with statsmodels, out of the 3 s that
    ``forecast predict`` may take. Exit handlers run before the modules are torn down, so
    freezing the objects there leaves them to the operating system.
    """
    atexit.register(gc.freeze)
