"""What the last bucket says about the next ones, beyond what the model says.

Models chosen by backtest error (MASE) forecast a smooth mean: on a spiky series whose
spells last a while (load-balancer traffic), a bucket far above the forecast is followed
by more such buckets, which the reactive rule exploits and a smooth forecast misses. The
value rule needs the *expected* demand of each bucket of a shadow's life given everything
known, so this corrects the forecast's mean path by the last bucket's residual:

    path'[h] = path[h] + beta_h * (observed - forecast of the observed bucket)

with beta_h the regression of the residual h buckets later on today's residual, learnt
online per series (exponentially weighted sums, a half-life of `HALF_LIFE` buckets) and
held to [0, 1]. Where residuals do not persist (a random walk forecast by its last value,
an exact periodic series) beta is about 0 and the forecast stands; where they do, the path
follows the spell the way reaction would, and stops where the spells used to end. The cost
is O(steps) per series per window, nothing CPU-heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HALF_LIFE = 576  # buckets: two days of 5-minute buckets
SeriesKey = tuple[str, str]


@dataclass(slots=True)
class _Residuals:
    start: int  # bucket index of path[0] of the last call
    path: npt.NDArray[np.float64]
    past: npt.NDArray[np.float64]  # residuals of the last `steps` buckets, newest last
    sxy: npt.NDArray[np.float64]
    sxx: npt.NDArray[np.float64]
    last: int = -1  # bucket index of past[-1]
    residual: float = 0.0


class Persistence:
    """Per series: the forecast path corrected by how its residuals persist."""

    def __init__(self, steps: int, half_life: float = HALF_LIFE) -> None:
        self.steps = max(1, steps)
        self.decay = math.exp(-math.log(2) / half_life)
        self.state: dict[SeriesKey, _Residuals] = {}

    def correct(self, key: SeriesKey, start: int, path: npt.NDArray[np.float64],
                observed: float) -> npt.NDArray[np.float64]:
        """`path` (expected demand of buckets start, start+1, …) corrected by the last
        bucket's residual; `observed` is bucket start - 1."""
        n = self.steps
        st = self.state.get(key)
        if st is None:
            st = self.state[key] = _Residuals(start, path.copy(), np.zeros(n), np.zeros(n),
                                              np.zeros(n))
            return path
        idx = start - 1
        if idx > st.last and st.start <= idx < st.start + len(st.path):
            r = observed - float(st.path[idx - st.start])
            gap = idx - st.last
            if st.last < 0 or gap > n:
                st.past[:] = 0.0
            elif gap > 1:  # buckets without a forecast: no residual, nothing learnt
                st.past = np.roll(st.past, -(gap - 1))
                st.past[n - gap + 1:] = 0.0
            lagged = st.past[::-1]  # lagged[h - 1]: the residual h buckets back
            st.sxy = st.sxy * self.decay + lagged * r
            st.sxx = st.sxx * self.decay + lagged ** 2
            st.past = np.roll(st.past, -1)
            st.past[-1] = r
            st.last = idx
            st.residual = r
        elif idx != st.last:
            st.residual = 0.0  # no forecast of that bucket: nothing to correct by
        st.start, st.path = start, path.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            beta = np.where(st.sxx > 0, st.sxy / st.sxx, 0.0)
        beta = np.clip(beta, 0.0, 1.0)
        h = min(len(path), n)
        out = path.copy()
        out[:h] += beta[:h] * st.residual
        return np.maximum(out, 0.0)

    def forget(self, keep: set[SeriesKey]) -> None:
        for key in [k for k in self.state if k not in keep]:
            del self.state[key]
