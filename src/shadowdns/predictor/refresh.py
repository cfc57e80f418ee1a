"""Refreshing the forecasts of every active series in the store (``forecast run``, ``serve``).

Each refresh (one allocation window):

1. advances the state of every known series over the buckets completed since the last
   refresh — one vectorised step per bucket for the whole `Fleet`;
2. refits a slice of the series: new ones, and the longest-unfitted ones so that each is
   refitted (and its model re-chosen) about once per ``refit_every``. Fits run in worker
   processes (the executor) in chunks, never in the caller's thread;
3. forecasts the horizon for every active series and writes the forecasts (with the model
   used) and the new model choices (with their validation error) to the store.

So a window costs one update + forecast per series plus a bounded number of fits: cost is
proportional to the number of active series. The global LSTM, when installed and given a
file to live in (``forecast run`` uses a temporary one without ``--lstm``), is trained in a
worker across the series due (a sample of ``lstm_sample``) before they are fitted, again
every ``retrain_every``, and loaded from disk; `auto` then has it among its candidates.

A series that cannot be read or fitted gets the baseline; one bad series never stops the
refresh of the others.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from shadowdns.durations import duration_arg
from shadowdns.predictor.base import (
    DEFAULT_QUANTILE,
    FitSpec,
    Fitted,
    Forecaster,
    skip_final_collection,
)
from shadowdns.predictor.baseline import baseline
from shadowdns.predictor.fleet import Fleet
from shadowdns.predictor.names import lstm_available
from shadowdns.predictor.selection import (
    Auto,
    candidates,
    fit_all,
    make_forecaster,
)
from shadowdns.predictor.series import SECONDS_PER_DAY, FloatArray
from shadowdns.store.base import (
    RESOLUTION_SECONDS,
    Forecast,
    ForecastPoint,
    ModelChoice,
    Resolution,
    SeriesKey,
    Store,
    bucket_start,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefreshConfig:
    """How the refresher works; durations in seconds, ``horizon`` in steps."""

    resolution: Resolution = "5m"
    horizon: int = 12
    history: float = 14 * SECONDS_PER_DAY
    active_for: float = SECONDS_PER_DAY
    refit_every: float = SECONDS_PER_DAY
    model: str = "auto"
    quantile: float = DEFAULT_QUANTILE
    chunk: int = 32
    lstm_path: str | None = None
    retrain_every: float = 7 * SECONDS_PER_DAY
    lstm_sample: int = 2000

    @property
    def step(self) -> int:
        return RESOLUTION_SECONDS[self.resolution]

    @property
    def season(self) -> int:
        return max(1, SECONDS_PER_DAY // self.step)


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What one refresh did."""

    series: int
    updated_steps: int
    refitted: int
    written: int
    seconds: float
    models: dict[str, int] = field(default_factory=dict)


@lru_cache(maxsize=4)
def _load_lstm(path: str, mtime: float) -> Forecaster:
    from shadowdns.predictor.lstm import Lstm

    return Lstm.load(path)


def shared_lstm(lstm_path: str | None) -> Forecaster | None:
    """The shared LSTM saved at ``lstm_path``, when it has been trained and saved."""
    if lstm_path and lstm_available() and os.path.exists(lstm_path):
        return _load_lstm(lstm_path, os.path.getmtime(lstm_path))
    return None


def fit_chunk(
    model: str, lstm_path: str | None, items: Sequence[tuple[SeriesKey, FloatArray, FitSpec]]
) -> list[tuple[SeriesKey, Fitted]]:
    """Fit a chunk of series (runs in a worker process). Network references are dropped
    from the result; the parent re-attaches its own copy of the shared network.

    ``auto`` chooses from `candidates` with the shared LSTM (it is never trained per chunk
    here: the refresher trains it across the fleet, see `Refresher._maybe_train`)."""
    shared = shared_lstm(lstm_path)
    if model == "auto":
        forecaster: Forecaster = Auto(candidates(shared))
    elif model == "lstm" and shared is not None:
        forecaster = shared
    else:
        forecaster = make_forecaster(model)
    fits = fit_all(forecaster, [(values, spec) for _, values, spec in items])
    out = []
    for (key, _, _), fitted in zip(items, fits, strict=True):
        if hasattr(fitted.kernel, "net"):
            setattr(fitted.kernel, "net", None)  # noqa: B010 - only the LSTM kernel has it
        out.append((key, fitted))
    return out


def train_lstm(histories: Sequence[tuple[FloatArray, FitSpec]], path: str) -> str:
    """Train the shared LSTM on ``histories`` and save it to ``path`` (runs in a worker)."""
    from shadowdns.predictor.lstm import Lstm

    model = Lstm()
    model.train(histories)
    if model.nets:
        tmp = f"{path}.tmp"
        model.save(tmp)
        os.replace(tmp, path)
    return path


class Refresher:
    """Keeps every active series' state and writes fresh forecasts each window."""

    def __init__(
        self,
        store: Store,
        config: RefreshConfig | None = None,
        executor: Executor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or RefreshConfig()
        self.executor = executor
        self.clock = clock
        self.fleet: Fleet[SeriesKey] | None = None
        self.fitted_at: dict[SeriesKey, float] = {}
        self.trained_at: float | None = None

    # -- reading the store

    def _dense(
        self, rows: dict[SeriesKey, list[tuple[int, int]]], key: SeriesKey, end_t: int
    ) -> tuple[FloatArray, int]:
        """A series' values from its first stored bucket up to ``end_t`` (exclusive), zeros
        where no row was stored; and the step index of its first value."""
        step = self.config.step
        points = rows.get(key, [])
        if not points:
            return np.zeros(0), end_t
        first = points[0][0] // step
        values = np.zeros(end_t - first)
        for ts, queries in points:
            i = ts // step - first
            if 0 <= i < len(values):
                values[i] += queries
        return values, first

    def _advance(self, fleet: Fleet[SeriesKey], end_t: int) -> int:
        """Feed the fleet the buckets it has not seen, up to ``end_t``; returns how many."""
        t = fleet.t
        if t is None or t >= end_t:
            return 0
        step = self.config.step
        dis = {di for di, _ in fleet.keys}
        points = self.store.demand_columns(self.config.resolution, t * step, end_t * step, dis)
        index = {k: i for i, k in enumerate(fleet.keys)}
        row = np.array([index.get(k, -1) for k in points.keys], dtype=np.int64)[points.owner]
        ours = row >= 0
        block = np.zeros((end_t - t, len(fleet.keys)))
        np.add.at(block, (points.starts[ours] // step - t, row[ours]), points.queries[ours])
        for values in block:
            fleet.update(values)
        return end_t - t

    # -- fitting

    def _due(self, active: Sequence[SeriesKey], now: float) -> list[SeriesKey]:
        """New series, then the longest-unfitted ones, up to this window's share."""
        new = [k for k in active if self.fleet is None or k not in self.fleet]
        known = [k for k in active if k not in set(new)]
        share = math.ceil(len(active) * self.config.step / self.config.refit_every)
        stale = [
            k for k in known if now - self.fitted_at.get(k, -math.inf) >= self.config.refit_every
        ]
        stale.sort(key=lambda k: self.fitted_at.get(k, -math.inf))
        return new + stale[:share]

    def _histories(
        self, keys: Sequence[SeriesKey], end_t: int
    ) -> list[tuple[SeriesKey, FloatArray, FitSpec]]:
        """The last ``history`` of each series in ``keys``, with its fit spec."""
        cfg = self.config
        step = cfg.step
        since = end_t * step - cfg.history
        rows = self.store.demand_series(cfg.resolution, since, end_t * step, {di for di, _ in keys})
        items = []
        for key in keys:
            values, first = self._dense(rows, key, end_t)
            items.append((key, values, FitSpec(cfg.season, cfg.horizon, first, cfg.quantile)))
        return items

    def _fit(self, items: list[tuple[SeriesKey, FloatArray, FitSpec]]) -> dict[SeriesKey, Fitted]:
        cfg = self.config
        chunks = [items[i : i + cfg.chunk] for i in range(0, len(items), cfg.chunk)]
        lstm_path = cfg.lstm_path if cfg.model in ("auto", "lstm") else None
        results: list[tuple[SeriesKey, Fitted]] = []
        if self.executor is None:
            for chunk in chunks:
                results.extend(fit_chunk(cfg.model, lstm_path, chunk))
        else:
            futures = [self.executor.submit(fit_chunk, cfg.model, lstm_path, c) for c in chunks]
            for future, chunk in zip(futures, chunks, strict=True):
                try:
                    results.extend(future.result())
                except Exception:  # a crashed worker: its series get the baseline
                    log.exception("a fitting worker failed")
                    results.extend((k, baseline(v, s)) for k, v, s in chunk)
        fitted = dict(results)
        self._attach_network(fitted)
        return fitted

    def _attach_network(self, fitted: dict[SeriesKey, Fitted]) -> None:
        """Give LSTM states back the shared network (one object, so they stack together)."""
        cfg = self.config
        for key, f in fitted.items():
            if not hasattr(f.kernel, "net") or getattr(f.kernel, "net") is not None:  # noqa: B009
                continue
            net = None
            if cfg.lstm_path and os.path.exists(cfg.lstm_path):
                shared: Any = _load_lstm(cfg.lstm_path, os.path.getmtime(cfg.lstm_path))
                net = shared.nets.get((cfg.season, cfg.horizon))
            if net is None:  # the file went away: this series starts again from the baseline
                spec = FitSpec(cfg.season, cfg.horizon, f.kernel.t, cfg.quantile)
                fitted[key] = baseline(np.zeros(0), spec)
            else:
                setattr(f.kernel, "net", net)  # noqa: B010

    def _maybe_train(self, histories: list[tuple[FloatArray, FitSpec]], now: float) -> None:
        cfg = self.config
        path = cfg.lstm_path
        if not path or cfg.model not in ("auto", "lstm") or not lstm_available():
            return
        if os.path.exists(path) and now - os.path.getmtime(path) < cfg.retrain_every:
            return
        if self.trained_at is not None and now - self.trained_at < cfg.retrain_every:
            return
        usable = [h for h in histories if len(h[0]) > 2 * cfg.season]
        if not usable:
            return
        rng = np.random.default_rng(0)
        if len(usable) > cfg.lstm_sample:
            usable = [usable[i] for i in rng.choice(len(usable), cfg.lstm_sample, replace=False)]
        if cfg.model == "auto":  # learn from the fitting parts only: auto validates on the rest
            split = Auto([]).split
            usable = [(values[: split(len(values), spec)], spec) for values, spec in usable]
        self.trained_at = now
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self.executor is None:
            train_lstm(usable, path)
        else:
            self.executor.submit(train_lstm, usable, path).result()
        log.info("trained the shared LSTM on %d series into %s", len(usable), path)

    # -- one window

    def refresh(self, now: float | None = None) -> RefreshReport:
        """Advance, refit what is due, forecast and write; see the module docstring."""
        began = time.perf_counter()
        now = self.clock() if now is None else now
        cfg = self.config
        end_t = bucket_start(now, cfg.resolution) // cfg.step  # the current bucket is partial
        active = self.store.active_series(now - cfg.active_for)
        updated = 0
        if self.fleet is not None:
            if self.fleet.t is not None and (end_t - self.fleet.t) * cfg.step > cfg.history:
                self.fleet = None  # asleep too long: start again from the store
                self.fitted_at.clear()
            else:
                updated = self._advance(self.fleet, end_t)
        keys = self._due(active, now)
        due = self._histories(keys, end_t) if keys else []
        self._maybe_train([(values, spec) for _, values, spec in due], now)
        refits = self._fit(due) if due else {}
        if self.fleet is None:
            self.fleet = Fleet(refits)
        elif refits:
            self.fleet = self.fleet.replace(refits)
        if set(self.fleet.keys) != set(active):
            self.fleet = self.fleet.select(active)
        for key in refits:
            self.fitted_at[key] = now
        written = self._write(self.fleet, end_t, now, refits)
        models: dict[str, int] = {}
        for _, model in self.fleet.items():
            models[model] = models.get(model, 0) + 1
        return RefreshReport(
            series=len(self.fleet),
            updated_steps=updated,
            refitted=len(refits),
            written=written,
            seconds=time.perf_counter() - began,
            models=models,
        )

    def _write(
        self, fleet: Fleet[SeriesKey], end_t: int, now: float, refits: dict[SeriesKey, Fitted]
    ) -> int:
        if not len(fleet):
            return 0
        cfg = self.config
        point, upper = fleet.forecast(cfg.horizon)
        stamps = [(end_t + h) * cfg.step for h in range(cfg.horizon)]
        forecasts = [
            Forecast(
                di,
                region,
                cfg.resolution,
                now,
                model,
                tuple(
                    ForecastPoint(ts, float(p), float(u))
                    for ts, p, u in zip(stamps, point[i], upper[i], strict=True)
                ),
            )
            for i, ((di, region), model) in enumerate(fleet.items())
        ]
        written = self.store.write_forecasts(forecasts)
        choices = [
            ModelChoice(di, region, f.model, float(f.scores[f.model]), now)
            for (di, region), f in refits.items()
            if f.model in f.scores
        ]
        if choices:
            self.store.write_model_choices(choices)
        return written


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for fitting (spawned: safe beside threads and event loops), which
    end without a last garbage collection (`skip_final_collection`)."""
    import multiprocessing

    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=skip_final_collection,
    )


def register_run(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``forecast run``."""
    from shadowdns.store.commands import add_state_argument

    run = subparsers.add_parser(
        "run",
        help="refresh the forecasts of every active series in the store",
        description="Fit (in worker processes) and forecast every series with queries in the"
        " last day, and write the forecasts and model choices to the store. With --every,"
        " keep refreshing: state is updated each window and series are refitted on a"
        " slower schedule.",
    )
    add_state_argument(run)
    run.add_argument("--horizon", type=int, default=12, help="steps of 5 minutes (default 12)")
    run.add_argument("--model", default="auto", help="auto (default) or one model name")
    run.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                     help="fit processes (default: up to 2)")
    run.add_argument("--every", type=duration_arg, metavar="DURATION",
                     help="repeat at this interval (e.g. 5m)")
    run.add_argument("--refit-every", type=duration_arg, default=SECONDS_PER_DAY,
                     metavar="DURATION", help="refit each series this often (default 1d)")
    run.add_argument(
        "--lstm",
        metavar="PATH",
        help="where the shared LSTM is saved and loaded (default: a temporary file, so it is "
        "trained afresh every run)",
    )
    run.add_argument("--now", type=float, help=argparse.SUPPRESS)
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``forecast run``: one refresh, or one every ``--every`` seconds."""
    import tempfile

    from shadowdns.store.commands import open_state

    make_forecaster(args.model)  # an unknown model is an error before any work
    store = open_state(args)
    # Without --lstm the shared LSTM still takes part, trained for this run only.
    with tempfile.TemporaryDirectory(prefix="shadowdns-lstm-") as scratch:
        config = RefreshConfig(
            horizon=args.horizon,
            model=args.model,
            refit_every=args.refit_every,
            lstm_path=args.lstm or os.path.join(scratch, "lstm.pt"),
        )
        try:
            with process_pool(args.workers) as pool:
                refresher = Refresher(store, config, executor=pool)
                while True:
                    report = refresher.refresh(args.now)
                    models = ", ".join(f"{m} {n}" for m, n in sorted(report.models.items()))
                    print(
                        f"{report.series} series, {report.refitted} refitted, "
                        f"{report.written} points written in {report.seconds:.2f} s"
                        + (f" ({models})" if models else "")
                    )
                    if not args.every:
                        return 0
                    time.sleep(args.every)
        finally:
            store.close()
