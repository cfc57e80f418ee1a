"""The names of the forecasters this install can run: the one list every validator reads.

It lives apart from `selection` (which imports statsmodels) so that the policy file, the API
and `check` can validate `policy.model` without loading any model library.
"""

from __future__ import annotations

import importlib.util

STATISTICAL_MODELS = ("snaive", "snaive_weekly", "ets", "sarimax", "last")


def lstm_available() -> bool:
    """Whether the optional extra ``shadowdns[lstm]`` (PyTorch) is installed."""
    return importlib.util.find_spec("torch") is not None


def model_names() -> tuple[str, ...]:
    """Every model this install can run, ``auto`` last."""
    extra = ("lstm",) if lstm_available() else ()
    return (*STATISTICAL_MODELS, *extra, "auto")
