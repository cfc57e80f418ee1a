"""How long ``shadowdns forecast predict`` takes on 40 days of 5-minute history (target < 3 s).

The history is NASA-HTTP July's 27 whole days followed by August's days, relabelled onto
one contiguous 5-minute grid (`long_nasa`; generated, never committed). Each run is the real
command in a fresh process, as a user runs it: wall time from start to exit, and CPU time
(user + system, its worker process included). The load average is printed with the figures:
on a shared machine it is most of the spread.

    .venv/bin/python -m bench.forecast_predict --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

NASA = Path(__file__).resolve().parent.parent / "tests" / "data" / "traffic" / "nasa-http"


def long_nasa(path: Path, days: int = 40) -> Path:
    """Write ``days`` days of 5-minute NASA requests (``timestamp,value``) to ``path``.

    July's whole days come first, then August's, on one grid from 1995-07-01 00:00 so the
    time of day stays right; August's outage (Aug 1-3) is kept, as a server would see it.
    """
    values: list[str] = []
    for name in ("nasa_http_1995-07_5min.csv", "nasa_http_1995-08_5min.csv"):
        rows = (NASA / name).read_text().splitlines()[1:]
        whole = len(rows) // 288 * 288
        values += [row.split(",")[1] for row in rows[:whole]]
    if len(values) < days * 288:
        raise ValueError(f"the NASA traces hold {len(values) // 288} whole days, not {days}")
    start = datetime(1995, 7, 1)
    lines = ["timestamp,value"] + [
        f"{start + timedelta(minutes=5 * i):%Y-%m-%d %H:%M:%S},{value}"
        for i, value in enumerate(values[: days * 288])
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(history: Path, horizon: str, model: str) -> dict[str, Any]:
    """One ``forecast predict --json`` in a fresh process: wall, CPU and its answer."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "shadowdns", "forecast", "predict", "--history", str(history),
         "--horizon", horizon, "--model", model, "--json"],
        capture_output=True, text=True, check=True,
    )
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    answer = json.loads(done.stdout)
    return {"wall": wall, "cpu": cpu, "model": answer["model"], "scores": answer["scores"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=40)
    parser.add_argument("--horizon", default="12")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        history = long_nasa(Path(tmp) / "nasa.csv", args.days)
        load_before = os.getloadavg()[0]
        runs = [run_once(history, args.horizon, args.model) for _ in range(args.runs)]
        load_after = os.getloadavg()[0]
    walls = [r["wall"] for r in runs]
    report = {
        "days": args.days,
        "steps": args.days * 288,
        "horizon": args.horizon,
        "model": args.model,
        "chosen": sorted({r["model"] for r in runs}),
        "scores": runs[-1]["scores"],
        "wall_median": round(statistics.median(walls), 2),
        "wall_min": round(min(walls), 2),
        "wall_max": round(max(walls), 2),
        "cpu_median": round(statistics.median(r["cpu"] for r in runs), 2),
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "cores": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"forecast predict --model {args.model}, {args.days} days of 5-minute history "
        f"({report['steps']} points), horizon {args.horizon}, {args.runs} runs on "
        f"{report['cores']} cores (load {load_before:.1f} -> {load_after:.1f}):\n"
        f"  wall median {report['wall_median']} s (min {report['wall_min']}, max "
        f"{report['wall_max']}), CPU median {report['cpu_median']} s\n"
        f"  chose {', '.join(report['chosen'])}; scores {json.dumps(report['scores'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
