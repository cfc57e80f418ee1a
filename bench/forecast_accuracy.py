"""Forecast accuracy on the real traces, against statsforecast's AutoETS.

Runs the same rolling-origin backtest as ``shadowdns forecast backtest`` (train on the first
70 %, then forecast the horizon at every origin through the rest, updating on what has been
seen) for shadowdns' models and for statsforecast's AutoETS, fitted once on the training
part and run forward at every origin with the fitted parameters (``AutoETS.forward``) — the
same protocol as ours. Prints the table of MASE per series and on average, and checks the
targets of the issue: ``auto`` at most 0.75 x seasonal naive, within 2 % of the best single
model, and better than AutoETS.

statsforecast is a benchmark-only dependency and pins an older pandas, so it may live in
its own virtualenv: point ``--statsforecast-python`` (or ``$SHADOWDNS_STATSFORECAST_PYTHON``)
at that interpreter; this file then runs itself there in ``--autoets-worker`` mode, which
needs only numpy and statsforecast.

    .venv/bin/python bench/forecast_accuracy.py --horizon 1h \\
        --statsforecast-python /tmp/sfvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data" / "traffic"


def autoets_worker(inp: str, out: str) -> None:
    """Rolling-origin AutoETS forecasts for the series in ``inp`` (npz), written to ``out``."""
    import warnings

    from statsforecast.models import AutoETS

    data = np.load(inp)
    result: dict[str, Any] = {}
    for i in range(int(data["n"])):
        y = data[f"values_{i}"]
        cut, horizon, season = (int(v) for v in data[f"meta_{i}"])
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoETS(season_length=season).fit(y[:cut])
            origins = len(y) - cut - horizon + 1
            points = np.empty((origins, horizon))
            uppers = np.empty((origins, horizon))
            for j in range(origins):
                fc = model.forward(y=y[: cut + j], h=horizon, level=[80])
                points[j] = fc["mean"]
                uppers[j] = fc["hi-80"]  # the upper end of the central 80 % = P90
        result[f"points_{i}"] = np.maximum(points, 0.0)
        result[f"uppers_{i}"] = np.maximum(uppers, 0.0)
        result[f"seconds_{i}"] = np.array(time.perf_counter() - began)
        result[f"method_{i}"] = np.array(str(model.model_.get("method", "?")))
    np.savez(out, **result)


def run_autoets(python: str, series: list[Any], horizons: list[int], cut: list[int]) -> Any:
    """Run `autoets_worker` under ``python``; returns the loaded npz."""
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.npz")
        out = os.path.join(tmp, "out.npz")
        arrays: dict[str, Any] = {"n": np.array(len(series))}
        for i, s in enumerate(series):
            arrays[f"values_{i}"] = s.values
            arrays[f"meta_{i}"] = np.array([cut[i], horizons[i], s.season])
        np.savez(inp, **arrays)
        subprocess.run(
            [python, str(Path(__file__).resolve()), "--autoets-worker", inp, out], check=True
        )
        with np.load(out) as loaded:
            return {k: loaded[k] for k in loaded.files}


def serve_check(folder: Path, horizon_text: str) -> int:
    """Does `auto` in `serve` choose what the CLI reports? For each trace file, the model
    and scores of `shadowdns forecast predict --json` (its own process, as users run it)
    against the allocator's fit job (`forecasting.fit_job`, what `serve`'s worker
    processes run), with the LSTM among the candidates when torch is installed, as
    `allocator.yaml` `lstm: true` has it. Exit 1 if any differs."""
    from shadowdns.allocator.forecasting import fit_job
    from shadowdns.predictor.base import DEFAULT_QUANTILE, Horizon
    from shadowdns.predictor.selection import lstm_available
    from shadowdns.predictor.series import read_csv

    horizon = Horizon.parse(horizon_text)
    lstm = lstm_available()
    print(f"horizon {horizon_text}, LSTM among the candidates: {lstm}")
    print("| trace | CLI model | serve model | largest score difference | same |")
    print("|---|---|---|---:|---|")
    differ = 0
    for file in sorted(folder.rglob("*.csv")):
        [series] = read_csv(file)[:1]
        steps = horizon.steps_for(series.step)
        done = subprocess.run([sys.executable, "-m", "shadowdns", "forecast", "predict",
                               "--history", str(file), "--horizon", horizon_text, "--json"],
                              capture_output=True, text=True, check=True)
        cli = json.loads(done.stdout)
        served = fit_job("auto", series.values, series.season, steps, series.start,
                         DEFAULT_QUANTILE, lstm=lstm)
        keys = set(cli["scores"]) | set(served.scores)
        gap = max((abs(cli["scores"].get(k, np.inf) - served.scores.get(k, np.inf))
                   if k in cli["scores"] and k in served.scores else np.inf
                   for k in keys), default=0.0)
        same = cli["model"] == served.model and gap <= 1e-6
        differ += not same
        print(f"| {file.stem} | {cli['model']} | {served.model} | {gap:.2g} | "
              f"{'yes' if same else 'NO'} |", flush=True)
    return 1 if differ else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DATA)
    parser.add_argument("--horizon", default="1h")
    parser.add_argument("--models", default="snaive,ets,sarimax,lstm,auto")
    parser.add_argument(
        "--statsforecast-python",
        default=os.environ.get("SHADOWDNS_STATSFORECAST_PYTHON", sys.executable),
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--autoets-worker", nargs=2, metavar=("IN", "OUT"))
    parser.add_argument("--serve-check", action="store_true",
                        help="only compare auto's choice in serve's fit job with "
                             "`forecast predict --json` on every trace file")
    args = parser.parse_args(argv)
    if args.autoets_worker:
        autoets_worker(*args.autoets_worker)
        return 0
    if args.serve_check:
        return serve_check(args.input, args.horizon)

    from shadowdns.predictor.backtest import evaluate, split_point
    from shadowdns.predictor.base import Horizon
    from shadowdns.predictor.metrics import coverage, mase, naive_scale, smape, windows
    from shadowdns.predictor.names import model_names
    from shadowdns.predictor.selection import make_forecaster
    from shadowdns.predictor.series import read_input

    series = read_input(args.input)
    horizon = Horizon.parse(args.horizon)
    names = [m for m in args.models.split(",") if m in model_names()]
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        scores, seconds = evaluate(make_forecaster(name), series, horizon)
        table[name] = {
            "mase": [s.mase for s in scores],
            "smape": [s.smape for s in scores],
            "coverage": [s.coverage for s in scores],
            "chosen": [s.model for s in scores],
            "seconds_per_series": seconds,
        }
        print(f"{name}: done in {seconds:.1f} s/series", file=sys.stderr, flush=True)

    horizons = [horizon.steps_for(s.step) for s in series]
    cuts = [split_point(len(s.values), 0.7) for s in series]
    try:
        sf = run_autoets(args.statsforecast_python, series, horizons, cuts)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"AutoETS skipped: {exc}", file=sys.stderr)
        sf = None
    if sf is not None:
        entry: dict[str, Any] = {"mase": [], "smape": [], "coverage": [], "chosen": []}
        for i, s in enumerate(series):
            origins = len(s.values) - cuts[i] - horizons[i] + 1
            actual = windows(s.values[cuts[i] :], horizons[i], origins)
            scale = naive_scale(s.values[: cuts[i]], s.season)
            entry["mase"].append(mase(actual, sf[f"points_{i}"], scale))
            entry["smape"].append(smape(actual, sf[f"points_{i}"]))
            entry["coverage"].append(coverage(actual, sf[f"uppers_{i}"]))
            entry["chosen"].append(str(sf[f"method_{i}"]))
        entry["seconds_per_series"] = float(
            np.mean([float(sf[f"seconds_{i}"]) for i in range(len(series))])
        )
        table["statsforecast_autoets"] = entry

    mean = {name: float(np.mean(row["mase"])) for name, row in table.items()}
    singles = {n: v for n, v in mean.items() if n not in ("auto", "statsforecast_autoets")}
    checks: dict[str, Any] = {}
    if "auto" in mean and "snaive" in mean:
        checks["auto_over_snaive"] = round(mean["auto"] / mean["snaive"], 4)
    if "auto" in mean and singles:
        best = min(singles, key=singles.__getitem__)
        checks["best_single"] = best
        checks["auto_over_best_single"] = round(mean["auto"] / singles[best], 4)
    if "auto" in mean and "statsforecast_autoets" in mean:
        checks["auto_over_autoets"] = round(mean["auto"] / mean["statsforecast_autoets"], 4)
    report = {
        "horizon": horizon.to_json(),
        "series": [s.key for s in series],
        "models": table,
        "mean_mase": {k: round(v, 4) for k, v in mean.items()},
        "checks": checks,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    short = [s.key.split("/")[-1][:22] for s in series]
    print(f"MASE at horizon {horizon.to_json()} (rolling origin, last 30 % of each trace)\n")
    print(
        "| model | " + " | ".join(short) + " | mean MASE | mean sMAPE | coverage P90 | s/series |"
    )
    print("|---" * (len(series) + 5) + "|")
    for name, row in table.items():
        cells = " | ".join(f"{v:.3f}" for v in row["mase"])
        print(
            f"| {name} | {cells} | **{mean[name]:.3f}** | {np.mean(row['smape']):.1f} | "
            f"{np.mean(row['coverage']):.3f} | {row['seconds_per_series']:.1f} |"
        )
    if "auto" in table:
        print(f"\nauto chose: {', '.join(table['auto']['chosen'])}")
    if "statsforecast_autoets" in table:
        print(f"AutoETS chose: {', '.join(table['statsforecast_autoets']['chosen'])}")
    print(f"checks: {json.dumps(checks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
