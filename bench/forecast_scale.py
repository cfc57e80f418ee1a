"""Forecast refresh at fleet scale: 100,000 series of 14 days of 5-minute history.

What a refresh costs, per model family and for a whole mixed fleet, on this machine:

* **fit** (slow schedule): the library fit of a sample of series, per model, extrapolated
  to seconds per 1,000 series (and to the whole fleet on the given number of workers);
* **warm** (after a fit or a restart): running every series' 14 days through the
  vectorised recursion to rebuild its state;
* **window** (every 5 minutes): update each series with its newest value and forecast the
  horizon — the step that must fit in one allocation window.

Series are cut from the real 5-minute traces (``tests/data/traffic``) at random offsets,
scaled and noised, so their shapes are real. Parameters are fitted on a sample and reused
across the fleet (fitting 100,000 series with statsmodels takes hours and is spread over the
refit schedule); each series' *state* is its own, from its own history.

    .venv/bin/python bench/forecast_scale.py --series 100000 --json

Prints a table (or one JSON object with ``--json``); figures go in bench/README-forecast.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shadowdns.predictor.base import FitSpec, Fitted, Forecaster
from shadowdns.predictor.fleet import Fleet, signature, stack
from shadowdns.predictor.names import lstm_available
from shadowdns.predictor.selection import Auto, candidates, make_forecaster
from shadowdns.predictor.series import Series, read_input
from shadowdns.predictor.state import Kernel

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "traffic"
STEP = 300
SEASON = 288


def five_minute_traces(data: Path) -> list[Series]:
    """The traces on a 5-minute grid (the fleet's resolution)."""
    return [s for s in read_input(data) if s.step == STEP]


def make_fleet_data(
    traces: list[Series], n: int, steps: int, rng: np.random.Generator
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``(steps, n)`` float32 demand (time-major, so one step is one contiguous row) and the
    index of the trace each series was cut from."""
    out = np.empty((steps, n), dtype=np.float32)
    source = rng.integers(0, len(traces), n)
    scale = np.exp(rng.normal(0.0, 1.0, n)).astype(np.float32)
    for k, trace in enumerate(traces):
        cols = np.flatnonzero(source == k)
        if len(cols) == 0:
            continue
        starts = rng.integers(0, len(trace.values) - steps, len(cols))
        # align each cut to the time of day of the fleet's clock (t = 0 at midnight)
        starts -= (trace.start + starts) % SEASON
        starts = np.maximum(starts, 0)
        base = trace.values.astype(np.float32)
        for chunk in np.array_split(np.arange(len(cols)), max(1, len(cols) // 2000)):
            idx = starts[chunk][None, :] + np.arange(steps)[:, None]
            block = base[idx] * scale[cols[chunk]][None, :]
            noise = rng.normal(0.0, 1.0, block.shape).astype(np.float32)
            out[:, cols[chunk]] = np.maximum(block + noise * np.sqrt(block + 1.0), 0.0)
    return out, source


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def tile(fitted: list[Fitted], n: int) -> Kernel:
    """A batch kernel of ``n`` rows cycling through the sampled fits of the commonest shape."""
    groups: dict[tuple[Any, ...], list[Kernel]] = {}
    for f in fitted:
        groups.setdefault(signature(f.kernel), []).append(f.kernel)
    same = max(groups.values(), key=len)
    return _take(stack(same), np.arange(n) % len(same))


def store_io(n: int, horizon: int, point: Any, upper: Any) -> dict[str, float]:
    """Seconds to read one window of demand for ``n`` series and write their forecasts."""
    import tempfile

    from shadowdns.store import DemandRow, Forecast, ForecastPoint, open_store

    t0 = 1_700_000_000 - 1_700_000_000 % 86_400
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "state.db")
        rows = [
            DemandRow(f"di{i}.bench.", "EU", t0 + 60 * m, "primary", 3)
            for i in range(n)
            for m in range(5)
        ]
        store.add_demand(rows)
        store.rollup(t0 + 600)
        _, read = timed(lambda: store.demand_series("5m", t0, t0 + 300))
        stamps = [t0 + 300 * (h + 1) for h in range(horizon)]
        forecasts = [
            Forecast(
                f"di{i}.bench.",
                "EU",
                "5m",
                t0 + 301,
                "ets",
                tuple(
                    ForecastPoint(ts, float(p), float(u))
                    for ts, p, u in zip(stamps, point[i], upper[i], strict=True)
                ),
            )
            for i in range(n)
        ]
        _, write = timed(lambda: store.write_forecasts(forecasts))
        store.close()
    return {"read_window_seconds": round(read, 2), "write_forecasts_seconds": round(write, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--horizon", type=int, default=12, help="steps (default 12 = 1 h)")
    parser.add_argument("--windows", type=int, default=5, help="refresh windows to time")
    parser.add_argument("--sample", type=int, default=20, help="series fitted per model")
    parser.add_argument("--models", default="snaive,ets,sarimax,lstm,auto")
    parser.add_argument("--workers", type=int, default=2, help="for the fleet fit estimate")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--store", action="store_true", help="also time one window's store I/O (SQLite)"
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    history = int(args.days * SEASON)
    steps = history + args.windows
    traces = five_minute_traces(args.data)
    (data, _), _ = timed(lambda: make_fleet_data(traces, args.series, steps, rng))
    models = [m for m in args.models.split(",") if m != "lstm" or lstm_available()]
    spec = FitSpec(season=SEASON, horizon=args.horizon, start=0)
    sample_cols = rng.choice(args.series, min(args.sample, args.series), replace=False)
    samples = [data[:history, c].astype(np.float64) for c in sample_cols]

    report: dict[str, Any] = {"series": args.series, "history_steps": history, "models": {}}
    kernels: dict[str, Kernel] = {}
    trained: list[Forecaster] = []
    for name in models:
        forecaster = make_forecaster(name)
        if name == "auto":  # as the refresher runs it: statistical + the trained shared LSTM
            forecaster = Auto(candidates(trained[0] if trained else None))
        train_seconds = 0.0
        if name == "lstm":
            histories = [(v, spec) for v in samples]
            _, train_seconds = timed(lambda f=forecaster, h=histories: f.train(h))  # type: ignore[attr-defined]
            trained.append(forecaster)
        forecaster.fit(samples[0], spec)  # imports and first-call costs, not timed
        fits, fit_seconds = timed(lambda f=forecaster: [f.fit(v, spec) for v in samples])
        fits = [f for f in fits if f.model == name] or fits
        per_series_fit = fit_seconds / len(samples)
        big = tile(fits, args.series)
        big.t = 0

        # warm: run every series' own history through the recursion
        def warm(kernel: Kernel = big) -> None:
            for i in range(history):
                kernel.update(data[i].astype(np.float64))

        _, warm_seconds = timed(warm)
        kernels[name] = big
        window_times = []
        for w in range(args.windows):
            y = data[history + w].astype(np.float64)
            _, seconds = timed(lambda k=big, y=y: (k.update(y), k.forecast(args.horizon)))
            window_times.append(seconds)
        window = float(np.median(window_times))
        report["models"][name] = {
            "fit_seconds_per_1000": round(1000 * per_series_fit, 2),
            "train_seconds": round(train_seconds, 2),
            "fleet_fit_hours": round(args.series * per_series_fit / args.workers / 3600, 2),
            "warm_seconds_per_1000": round(1000 * warm_seconds / args.series, 4),
            "window_seconds_per_1000": round(1000 * window / args.series, 5),
            "window_seconds_total": round(window, 3),
        }
        print(f"{name}: {report['models'][name]}", file=sys.stderr, flush=True)

    # A mixed fleet, as auto would spread it: an equal share of each model, one Fleet.
    singles = [m for m in models if m != "auto"]
    share = np.array_split(np.arange(args.series), len(singles))
    batches = [
        ([f"{name}-{i}" for i in cols], [name] * len(cols), _take(kernels[name], cols))
        for name, cols in zip(singles, share, strict=True)
    ]
    fleet, build_seconds = timed(lambda: Fleet.from_batches(batches))
    order = np.concatenate(share)
    window_times = []
    for w in range(args.windows):
        y = data[history + w, order].astype(np.float64)
        (_, (point, upper)), seconds = timed(
            lambda y=y: (fleet.update(y), fleet.forecast(args.horizon))
        )
        window_times.append(seconds)
    mixed = float(np.median(window_times))
    report["mixed_fleet"] = {
        "models": singles,
        "window_seconds_total": round(mixed, 3),
        "window_seconds_per_1000": round(1000 * mixed / args.series, 5),
        "build_seconds": round(build_seconds, 3),
    }
    if args.store:
        report["store"] = store_io(args.series, args.horizon, point, upper)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.series} series, {history} steps of history, horizon {args.horizon}")
        print(f"{'model':<10}{'fit s/1k':>10}{'warm s/1k':>11}{'window s/1k':>13}{'window s':>10}")
        for name, r in report["models"].items():
            print(
                f"{name:<10}{r['fit_seconds_per_1000']:>10}{r['warm_seconds_per_1000']:>11}"
                f"{r['window_seconds_per_1000']:>13}{r['window_seconds_total']:>10}"
            )
        m = report["mixed_fleet"]
        print(f"mixed fleet window: {m['window_seconds_total']} s total")
        if "store" in report:
            print(f"store I/O per window: {report['store']}")
    return 0


def _take(kernel: Kernel, cols: np.ndarray[Any, Any]) -> Kernel:
    import dataclasses

    changes = {
        f.name: getattr(kernel, f.name)[cols]
        for f in dataclasses.fields(kernel)  # type: ignore[arg-type]
        if isinstance(getattr(kernel, f.name), np.ndarray)
    }
    out: Kernel = dataclasses.replace(kernel, **changes)  # type: ignore[type-var]
    return out


if __name__ == "__main__":
    sys.exit(main())
