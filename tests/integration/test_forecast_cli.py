"""`shadowdns forecast predict|backtest|run` run as the real command in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from bench.forecast_predict import long_nasa

from shadowdns.allocator.forecasting import fit_job
from shadowdns.predictor.selection import lstm_available
from shadowdns.predictor.series import read_csv
from shadowdns.store import DemandRow, open_store

SHADOWDNS = Path(sys.executable).parent / "shadowdns"
TRAFFIC = Path(__file__).resolve().parents[1] / "data" / "traffic"
NASA = TRAFFIC / "nasa-http" / "nasa_http_1995-07_5min.csv"


def shadowdns(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SHADOWDNS), *args], capture_output=True, text=True, timeout=240, check=False
    )


def write_head(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text().splitlines()
    dst.write_text("\n".join(lines[: rows + 1]) + "\n")
    return dst


@pytest.mark.parametrize(
    ("rows", "horizon", "model"),
    [(3 * 288, "12", "auto"), (3 * 288, "7", "sarimax"), (100, "5", "ets"), (0, "3", "auto")],
)
def test_predict_prints_exactly_h_lines(
    tmp_path: Path, rows: int, horizon: str, model: str
) -> None:
    """Whatever the history (three days, less than a season, none), predict prints exactly
    H numbers, one per line, and nothing else."""
    history = write_head(NASA, tmp_path / "h.csv", rows)
    done = shadowdns(
        "forecast", "predict", "--history", str(history), "--horizon", horizon, "--model", model
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == int(horizon)
    assert all(float(line) >= 0 for line in lines)


def test_predict_horizon_as_a_duration(tmp_path: Path) -> None:
    """--horizon 1h on a 5-minute series is 12 steps; --upper adds the P90 bound."""
    history = write_head(NASA, tmp_path / "h.csv", 2 * 288)
    done = shadowdns(
        "forecast",
        "predict",
        "--history",
        str(history),
        "--horizon",
        "1h",
        "--model",
        "snaive",
        "--upper",
    )
    assert done.returncode == 0, done.stderr
    pairs = [tuple(map(float, line.split(","))) for line in done.stdout.splitlines()]
    assert len(pairs) == 12 and all(u >= p for p, u in pairs)


@pytest.fixture(scope="module")
def forty_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 days of 5-minute NASA requests (11,520 rows), generated from the two months."""
    return long_nasa(tmp_path_factory.mktemp("history") / "nasa40.csv", 40)


def test_predict_json_on_forty_days(forty_days: Path) -> None:
    """predict --json on 40 days gives the model auto chose (the lowest score; the LSTM
    among the candidates when installed), and per step its timestamp as ISO 8601 and epoch
    (the steps after the last row), point and upper; the plain output prints the same."""
    args = ("forecast", "predict", "--history", str(forty_days), "--horizon", "1h")
    done = shadowdns(*args, "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    scores = answer["scores"]
    assert answer["model"] == min(scores, key=scores.__getitem__)
    assert {"snaive", "ets", "sarimax"} <= set(scores)
    assert ("lstm" in scores) == lstm_available()
    assert answer["step"] == 300 and answer["horizon"] == 12
    steps = answer["forecast"]
    assert steps[0]["timestamp"] == "1995-08-10T00:00:00Z"  # 40 days after 1995-07-01
    for i, step in enumerate(steps):
        assert step["epoch"] == 808_012_800 + 300 * i
        stamp = datetime.fromisoformat(step["timestamp"].replace("Z", "+00:00"))
        assert stamp.timestamp() == step["epoch"]
        assert step["upper"] >= step["point"] >= 0
    plain = shadowdns(*args)
    assert plain.stdout.splitlines() == [f"{s['point']:.6f}" for s in steps]


def test_serve_fit_job_chooses_what_predict_reports(forty_days: Path) -> None:
    """The allocator's fit job in serve (with allocator.yaml `lstm: true`) and forecast
    predict choose alike on one history: the same model with the same scores."""
    done = shadowdns("forecast", "predict", "--history", str(forty_days), "--horizon", "12",
                     "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    [series] = read_csv(forty_days)
    fitted = fit_job("auto", series.values, 288, 12, series.start, 0.9, lstm=True)
    assert fitted.model == answer["model"]
    assert fitted.scores == pytest.approx(answer["scores"], abs=1e-6)


def test_backtest_json(tmp_path: Path) -> None:
    """backtest --json prints one JSON object with every requested model's errors."""
    folder = tmp_path / "traces"
    folder.mkdir()
    write_head(NASA, folder / "nasa.csv", 4 * 288)
    write_head(
        TRAFFIC / "nab-aws-elb" / "elb_request_count_8c0756.csv", folder / "elb.csv", 4 * 288
    )
    done = shadowdns(
        "forecast",
        "backtest",
        "--input",
        str(folder),
        "--horizon",
        "12",
        "--models",
        "snaive,ets",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["series"] == 2 and report["horizon"] == 12 and report["season"] == 288
    for name in ("snaive", "ets"):
        entry = report["models"][name]
        assert set(entry) == {"mase", "smape", "coverage", "seconds_per_series"}
    assert report["models"]["ets"]["mase"] < report["models"]["snaive"]["mase"]


def test_backtest_rejects_unknown_models(tmp_path: Path) -> None:
    """An unknown model name is an error naming the known ones."""
    history = write_head(NASA, tmp_path / "h.csv", 300)
    done = shadowdns(
        "forecast", "backtest", "--input", str(history), "--horizon", "3", "--models", "prophet"
    )
    assert done.returncode == 1 and "unknown model" in done.stderr


def test_run_writes_forecasts_to_the_store(tmp_path: Path) -> None:
    """forecast run fits in worker processes and writes a forecast per active series."""
    [series] = read_csv(NASA)
    values = series.values[: 3 * 288]
    t0 = 1_700_000_000 - 1_700_000_000 % 86_400
    state = tmp_path / "state.db"
    store = open_store(state)
    store.add_demand(
        DemandRow("app.example.", region, t0 + i * 300, "primary", int(v))
        for region in ("EU", "NA")
        for i, v in enumerate(values)
        if v > 0
    )
    now = t0 + len(values) * 300 + 30
    store.rollup(now)
    store.close()
    done = shadowdns(
        "forecast",
        "run",
        "--state",
        str(state),
        "--model",
        "ets",
        "--workers",
        "1",
        "--now",
        str(now),
    )
    assert done.returncode == 0, done.stderr
    assert "2 series, 2 refitted" in done.stdout
    store = open_store(state)
    try:
        forecasts = store.read_forecasts("5m")
    finally:
        store.close()
    assert {(f.di, f.region, f.model, len(f.points)) for f in forecasts} == {
        ("app.example.", "EU", "ets", 12),
        ("app.example.", "NA", "ets", 12),
    }
