"""The last observed bucket as a forecast: what a reactive allocator plans on.

Model selection (`selection.Auto`) picks per series the candidate with the lowest
validation error. Where nothing is predictable — a series of unrelated spikes, a random
walk — every model's forecast is worse than "what the last bucket showed", and a
forecast-driven allocator that believes them spends shadow-minutes on false alarms that a
reactive one does not. With this candidate in the running such a series is forecast by
its last value, and the allocator behaves like the reactive rule there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, warm_up
from shadowdns.predictor.series import FloatArray
from shadowdns.predictor.state import SeasonalNaiveKernel


@dataclass(frozen=True, slots=True)
class LastValue:
    """Every step ahead is the last observed value (a seasonal naive with a season of one
    step, so it stacks and updates like the other naive kernels)."""

    name: str = "last"

    def fit(self, values: FloatArray, spec: FitSpec) -> Fitted:
        return Fitted(self.name, last_values(np.asarray(values)[None, :], spec))


def last_values(values: FloatArray, spec: FitSpec) -> SeasonalNaiveKernel:
    """The fitted kernel of `LastValue` for ``(k, n)`` series of one length at once."""
    k, n = values.shape
    first = values[:, :1] if n else np.zeros((k, 1))
    kernel = SeasonalNaiveKernel(first.astype(np.float64), np.zeros((k, 1)), spec.start)
    warm_up(kernel, values, spec)
    return kernel
