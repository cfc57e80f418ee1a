"""Subcommands of the predictor part (registered by shadowdns.cli): ``shadowdns forecast …``.

* ``forecast predict`` — forecast one ``timestamp,value`` series: H lines on stdout, or
  one JSON object with ``--json``;
* ``forecast backtest`` — rolling-origin evaluation of the models on CSV traces;
* ``forecast run`` — refresh the forecasts of every active series in the store.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from shadowdns.errors import ConfigError, Problem
from shadowdns.predictor.backtest import backtest
from shadowdns.predictor.base import (
    DEFAULT_QUANTILE,
    FitSpec,
    Forecast,
    Forecaster,
    Horizon,
    skip_final_collection,
)
from shadowdns.predictor.baseline import baseline
from shadowdns.predictor.names import model_names
from shadowdns.predictor.selection import Auto, fit_all, is_global, make_forecaster
from shadowdns.predictor.series import FloatArray, Series, read_csv


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``forecast`` and its subcommands."""
    forecast = subparsers.add_parser("forecast", help="forecast demand, backtest models")
    sub = forecast.add_subparsers(dest="forecast_command", metavar="SUBCOMMAND")
    forecast.set_defaults(handler=lambda _args: _help(forecast))

    predict = sub.add_parser(
        "predict",
        help="print H point forecasts for one timestamp,value series",
        description="Read one timestamp,value series (oldest first) and print exactly H "
        "point forecasts, one per line, for the H steps after its last row.",
    )
    predict.add_argument("--history", required=True, metavar="FILE.csv",
                         help="demand history: timestamp,value lines")
    predict.add_argument("--horizon", required=True, type=_horizon, metavar="H", help=HORIZON_HELP)
    predict.add_argument("--season", type=_positive, metavar="S", help="default: steps per day")
    predict.add_argument("--model", default="auto", help="auto (default) or one model name")
    predict.add_argument(
        "--upper", action="store_true", help="print 'point,upper' (the P90 bound) per line"
    )
    predict.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object: the model chosen, auto's scores, and per step its "
        "timestamp (ISO 8601 and epoch), point and upper",
    )
    predict.set_defaults(handler=predict_command)

    bt = sub.add_parser(
        "backtest",
        help="rolling-origin backtest of the models on CSV traces",
        description="Train on the first 70%% of each series, forecast H steps at every "
        "origin through the rest, and report MASE, sMAPE and coverage per model.",
    )
    bt.add_argument("--input", required=True, metavar="FILE.csv|DIR",
                    help="a demand series, or a folder of them (each backtested)")
    bt.add_argument("--horizon", required=True, type=_horizon, metavar="H", help=HORIZON_HELP)
    bt.add_argument("--season", type=_positive, metavar="S", help="default: steps per day")
    bt.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help=f"models to evaluate (default: all of {', '.join(model_names())})",
    )
    bt.add_argument("--train-share", type=float, default=0.7, help="default 0.7")
    bt.add_argument("--json", action="store_true", help="print one JSON object")
    bt.set_defaults(handler=backtest_command)

    from shadowdns.predictor.refresh import register_run

    register_run(sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


HORIZON_HELP = "steps ahead (12), or a duration (1h, 30m) turned into steps per series"


def _horizon(text: str) -> Horizon:
    try:
        return Horizon.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def predict_command(args: argparse.Namespace) -> int:
    """``forecast predict``: exactly ``--horizon`` lines, whatever the history looks like."""
    skip_final_collection()
    [series] = read_csv(args.history)[:1]
    horizon = args.horizon.steps_for(series.step)
    spec = FitSpec(
        season=args.season or series.season,
        horizon=horizon,
        start=series.start,
        quantile=DEFAULT_QUANTILE,
    )
    forecast, scores = predict(make_forecaster(args.model), series.values, spec)
    if args.json:
        print(json.dumps(_forecast_json(series, forecast, scores)))
    else:
        lines = [
            f"{p:.6f},{u:.6f}" if args.upper else f"{p:.6f}"
            for p, u in zip(forecast.point, forecast.upper, strict=True)
        ]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def predict(
    forecaster: Forecaster, values: FloatArray, spec: FitSpec
) -> tuple[Forecast, dict[str, float]]:
    """The forecast of ``spec.horizon`` steps after ``values``, and auto's scores.

    With the LSTM among its candidates, ``auto`` runs the statistical trials in a worker
    process beside it (see `Auto.forecast`). Any failure gives the baseline: the caller
    gets H numbers.
    """
    try:
        if isinstance(forecaster, Auto):
            if not any(is_global(c) for c in forecaster.candidates):
                return forecaster.forecast(values, spec)
            from shadowdns.predictor.refresh import process_pool

            with process_pool(1) as pool:
                return forecaster.forecast(values, spec, pool)
        [fitted] = fit_all(forecaster, [(values, spec)])
        return fitted.predict(spec.horizon, spec.quantile), {}
    except Exception:  # the harness gets H numbers even if a model breaks
        return baseline(values, spec).predict(spec.horizon, spec.quantile), {}


def _forecast_json(series: Series, forecast: Forecast, scores: dict[str, float]) -> dict[str, Any]:
    """``predict --json``: the model, auto's scores and one object per step ahead.

    Timestamps are the starts of the steps after the last row, on the series' grid;
    null when the history has no rows.
    """
    first = series.start + len(series.values)
    steps = []
    for i, (point, upper) in enumerate(zip(forecast.point, forecast.upper, strict=True)):
        epoch = (first + i) * series.step if len(series.values) else None
        stamp = None
        if epoch is not None:
            stamp = datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
        steps.append(
            {"timestamp": stamp, "epoch": epoch, "point": float(point), "upper": float(upper)}
        )
    return {
        "model": forecast.model,
        "scores": {name: round(score, 6) for name, score in scores.items()},
        "step": series.step,
        "horizon": len(steps),
        "quantile": forecast.quantile,
        "forecast": steps,
    }


def backtest_command(args: argparse.Namespace) -> int:
    """``forecast backtest``: one JSON object with ``--json``, else a table."""
    from shadowdns.output import Progress
    from shadowdns.predictor.series import read_input

    names = _model_list(args.models)
    series = read_input(args.input)
    report = backtest(series, args.horizon, names, args.season, args.train_share,
                      progress=lambda model: Progress(f"backtest {model}", "series"))
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"series {report['series']}, horizon {report['horizon']}, season {report['season']}")
    print(f"{'model':<15}{'MASE':>8}{'sMAPE':>8}{'cover':>8}{'s/series':>10}")
    for name, row in report["models"].items():
        cells = [_cell(row[k]) for k in ("mase", "smape", "coverage")]
        print(f"{name:<15}{cells[0]:>8}{cells[1]:>8}{cells[2]:>8}{row['seconds_per_series']:>10}")
    return 0


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _model_list(given: list[str] | None) -> list[str]:
    if not given:
        return list(model_names())
    names = [n for item in given for n in item.split(",") if n]
    known = model_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        reason = f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        raise ConfigError([Problem("--models", None, reason)])
    return names
