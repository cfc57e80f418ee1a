"""`shadowdns simulate`: replay a demand trace through the real allocator (see `simulate`).

    shadowdns simulate --trace FILE.csv --policy predictive --lead-time 15m --bucket 5m \\
        --threshold p75 [--policy-file ORIGIN.policy.yaml] [--json]

The trace is `timestamp,di,region,queries`; a single `timestamp,value` series, first
spread over four regions by `simulate.multi_region`; or `timestamp,app,invocations` (the
Azure Functions trace: counts of many apps, no regions), each app made a DI in one region
by `simulate.apps_to_regions`; or a folder of such files (`--write-trace OUT.csv` saves
the multi-region trace that is replayed). `--threshold` is a number of
queries per bucket, or `pNN`: the NN-th percentile of each DI's bucket values.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import dns.name
import numpy as np

from shadowdns.allocator.frontier import (
    HOLDS,
    PRICES,
    TABLE_HEAD,
    Point,
    busiest_cells,
    format_duration,
    plot,
    table,
)
from shadowdns.allocator.simulate import (
    POLICIES,
    SIM_ORIGIN,
    PolicyName,
    apps_to_regions,
    label,
    multi_region,
    rebucket,
    simulate,
)
from shadowdns.durations import duration_arg, parse_duration
from shadowdns.errors import ConfigError, Problem
from shadowdns.output import Progress
from shadowdns.predictor.series import Series, parse_timestamp, parse_value, read_input, sum_counts
from shadowdns.zones.policy import Policy


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sim = subparsers.add_parser(
        "simulate", help="replay a demand trace through the allocator on a simulated clock",
        description="Replay a trace bucket by bucket through the real predictor and "
        "allocator; print queries served by a ready local shadow and the shadow cost.")
    sim.add_argument("--trace", required=True, type=Path, metavar="FILE.csv|DIR",
                     help="demand trace (timestamp,di,region,queries or an app trace), "
                          "or a folder of them")
    sim.add_argument("--policy", default="predictive", choices=POLICIES,
                     help="allocation policy to replay (default predictive)")
    sim.add_argument("--lead-time", default="15m", type=duration_arg, metavar="DURATION",
                     help="how far ahead shadows are allocated (default 15m)")
    sim.add_argument("--bucket", default="5m", type=_bucket, metavar="DURATION",
                     help="demand bucket, whole minutes (default 5m)")
    sim.add_argument("--threshold", default="p75", metavar="Q",
                     help="queries per bucket, or pNN: the NN-th percentile of each DI's "
                          "buckets (default p75)")
    sim.add_argument("--policy-file", type=Path, default=None, metavar="F",
                     help="<origin>.policy.yaml describing the trace's DIs and resources")
    sim.add_argument("--model", default="auto", help="forecast model (default auto)")
    sim.add_argument("--quantile", default=0.9, type=float,
                     help="forecast quantile the allocator plans for (default 0.9)")
    sim.add_argument("--cross-probability", default="0.5", type=_probability, metavar="P",
                     help="allocate on the forecast when P(demand >= threshold) in the "
                          "window is at least P (default 0.5); 'off': when the forecast "
                          "quantile crosses")
    sim.add_argument("--price", default=0.5, type=_positive, metavar="X",
                     help="predictive/oracle: a shadow pays when each of its buckets is "
                          "expected to serve X × the threshold (default 0.5)")
    sim.add_argument("--budget", default=None, type=_positive, metavar="MINUTES",
                     help="predictive/oracle: shadow-minutes per day, a hard cap (the "
                          "price then follows the budget day by day)")
    sim.add_argument("--decision", default="value", choices=("value", "threshold"),
                     help="predictive/oracle: the value rule (default) or the threshold "
                          "rule with min_hold (reactive always uses the threshold rule)")
    sim.add_argument("--no-persistence", dest="persistence", action="store_false",
                     help="predictive: plan on the model's path alone, uncorrected by how "
                          "the last bucket's surprise persists")
    sim.add_argument("--min-hold", default="30m", type=duration_arg, metavar="DURATION",
                     help="a shadow is kept at least this long (default 30m)")
    sim.add_argument("--ttl", default=30, type=int, help="answer TTL (default 30)")
    sim.add_argument("--refit-every", default="7d", type=duration_arg, metavar="DURATION",
                     help="refit each series this often (default 7d)")
    sim.add_argument("--workers", default=2, type=int, help="fit processes (default 2)")
    sim.add_argument("--write-trace", type=Path, default=None, metavar="OUT.csv",
                     help="also write the multi-region trace that is replayed")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
    sim.add_argument("--sweep", action="store_true",
                     help="sweep each policy's knob (reactive: min hold 0..2h and always; "
                          "predictive, oracle: --prices) and print the frontiers next to "
                          "the ideal at each run's minutes (Markdown; --json: one object "
                          "per run)")
    sim.add_argument("--prices", default=",".join(str(x) for x in PRICES), type=_floats,
                     metavar="X,...", help=f"--sweep: prices (default {PRICES})")
    sim.add_argument("--lead-times", default=None, type=_durations, metavar="D,...",
                     help="--sweep: one sweep per lead time (e.g. 5m,15m,30m,60m)")
    sim.add_argument("--plot", type=Path, default=None, metavar="OUT.png",
                     help="--sweep: draw the frontiers (needs the `plot` extra: matplotlib)")
    sim.set_defaults(handler=cmd_simulate)


def _probability(text: str) -> float | None:
    if text.strip().lower() == "off":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a probability or 'off'") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("the probability must be above 0 and at most 1")
    return value


def _floats(text: str) -> tuple[float, ...]:
    return tuple(_positive(part) for part in text.split(",") if part.strip())


def _durations(text: str) -> tuple[float, ...]:
    return tuple(duration_arg(part.strip()) for part in text.split(",") if part.strip())


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def _bucket(text: str) -> int:
    seconds = int(parse_duration(text))
    if seconds < 60 or seconds % 60:
        raise argparse.ArgumentTypeError("the bucket must be a whole number of minutes")
    return seconds


APP_COLUMNS = ["timestamp", "app", "invocations"]
GZ = ".gz"


def trace_files(path: Path) -> list[Path]:
    """`path`, or every `*.csv` and `*.csv.gz` under the folder `path`, in name order."""
    if not path.is_dir():
        return [path]
    return sorted([*path.rglob("*.csv"), *path.rglob(f"*.csv{GZ}")])


def load_trace(path: Path, bucket: int = 300) -> list[Series]:
    """Series keyed `di|region`; single-value series are spread over regions, apps each
    get a region. Count rows finer than `bucket` are summed into it; a grid that cannot be
    cut into buckets, or a series too short to spread, is a `ConfigError` naming the file.
    An app trace may be gzipped (`.csv.gz`)."""
    out: list[Series] = []
    for file in trace_files(path):
        if _header(file) == APP_COLUMNS:
            out.extend(apps_to_regions(read_apps(file, bucket)))
            continue
        if file.name.endswith(GZ):
            raise ConfigError([Problem(str(file), 1, "a gzipped trace must have the columns "
                                       + ",".join(APP_COLUMNS))])
        for series in read_input(file, bucket=bucket):
            out.extend(_regions_of(file, series, bucket))
    if not out:
        raise ConfigError([Problem(str(path), None, "no demand rows")])
    return out


def _open(path: Path) -> IO[str]:
    if path.name.endswith(GZ):
        return gzip.open(path, "rt", newline="")
    return path.open(newline="")


def _header(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        with _open(path) as handle:
            first = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # read_input (or the gzip check) says what is wrong with it
    return [cell.strip().lower() for cell in first]


def _regions_of(path: Path, series: Series, bucket: int) -> list[Series]:
    if series.step % bucket and bucket % series.step:
        raise ConfigError([Problem(
            str(path), None, f"{series.key}: its step of {series.step} s and the bucket "
            f"of {bucket} s do not divide each other; choose --bucket accordingly")])
    if "|" in series.key:
        return [Series(series.key.rsplit(":", 1)[-1], series.values, series.step,
                       series.start)]
    di = dns.name.from_text(label(series.key), dns.name.from_text(SIM_ORIGIN))
    try:
        return multi_region(series, di.to_text())
    except ValueError as exc:
        raise ConfigError([Problem(str(path), None, str(exc))]) from None


def read_apps(path: Path, bucket: int) -> list[Series]:
    """A `timestamp,app,invocations` file: one series of counts per app in `bucket`s,
    all on the span of the whole file (an app's quiet buckets, rows left out, are 0)."""
    stamps: dict[str, list[float]] = {}
    counts: dict[str, list[float]] = {}
    try:
        with _open(path) as handle:
            rows = list(csv.reader(handle))[1:]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError([Problem(str(path), None, f"unreadable: {exc}")]) from None
    for line, row in enumerate(rows, start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < len(APP_COLUMNS):
            raise ConfigError([Problem(str(path), line, "too few columns")])
        try:
            stamp = parse_timestamp(row[0])
        except ValueError:
            raise ConfigError([Problem(str(path), line,
                                       f"bad timestamp {row[0]!r}")]) from None
        app = row[1].strip()
        stamps.setdefault(app, []).append(stamp)
        counts.setdefault(app, []).append(parse_value(row[2]))
    if not stamps:
        return []
    first = min(min(ts) for ts in stamps.values())
    last = max(max(ts) for ts in stamps.values())
    out = []
    for app in sorted(stamps):
        # the file's first and last instants as zero rows: every app spans the same grid
        ts = np.array([first, *stamps[app], last], dtype=np.float64)
        vs = np.array([0.0, *counts[app], 0.0], dtype=np.float64)
        out.append(sum_counts(app, ts, vs, bucket))
    return out


def write_trace(series: list[Series], path: Path) -> None:
    rows = []
    for s in series:
        di, _, region = s.key.partition("|")
        for i, value in enumerate(s.values):
            rows.append(((s.start + i) * s.step, di, region, round(float(value))))
    rows.sort()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "di", "region", "queries"])
        for ts, di, region, queries in rows:
            stamp = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            writer.writerow([stamp, di, region, queries])


def cmd_simulate(args: argparse.Namespace) -> int:
    logging.getLogger("shadowdns.allocator").setLevel(logging.WARNING)
    series = load_trace(args.trace, args.bucket)
    if args.write_trace is not None:
        write_trace(series, args.write_trace)
    policy = None
    if args.policy_file is not None:
        from shadowdns.zones.policy_file import POLICY_SUFFIX, load_policy

        name = args.policy_file.name
        if not name.endswith(POLICY_SUFFIX):
            raise ConfigError([Problem(str(args.policy_file), None,
                                       f"name it <origin>{POLICY_SUFFIX}")])
        policy = load_policy(args.policy_file,
                             dns.name.from_text(name[: -len(POLICY_SUFFIX)]))
    if args.sweep:
        return _sweep(args, series, policy)
    executor = None
    if args.policy == "predictive" and args.workers > 0:
        executor = ProcessPoolExecutor(args.workers,
                                       mp_context=multiprocessing.get_context("spawn"))
    try:
        figures = simulate(series, args.policy, args.lead_time, args.bucket, args.threshold,
                           policy=policy, ttl=args.ttl, min_hold=args.min_hold,
                           model=args.model, refit_every=args.refit_every,
                           quantile=args.quantile,
                           cross_probability=args.cross_probability,
                           price=args.price, budget=args.budget, decision=args.decision,
                           persistence=args.persistence,
                           executor=executor,
                           progress=Progress(f"simulate {args.policy}", "buckets"))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    figures["trace"] = str(args.trace)
    if args.json:
        print(json.dumps(figures))
        return 0
    for key, value in figures.items():
        print(f"{key:<16} {value}")
    sys.stdout.flush()
    return 0


def _sweep(args: argparse.Namespace, series: list[Series],
           policy: Policy | None) -> int:
    """`simulate --sweep`: every policy over its knob, per lead time, as frontier tables."""
    cells = busiest_cells([rebucket(s, args.bucket) for s in series])
    executor = None
    if args.workers > 0:
        executor = ProcessPoolExecutor(args.workers,
                                       mp_context=multiprocessing.get_context("spawn"))
    leads = args.lead_times or (args.lead_time,)
    try:
        for lead in leads:
            def run(policy_name: PolicyName, knob: str, lead: float = lead,
                    **kw: Any) -> Point:
                figures = simulate(
                    series, policy_name, lead, args.bucket, args.threshold, policy=policy,
                    ttl=args.ttl, model=args.model, refit_every=args.refit_every,
                    quantile=args.quantile, cross_probability=args.cross_probability,
                    budget=args.budget, decision=args.decision,
                    persistence=args.persistence,
                    executor=executor if policy_name == "predictive" else None,
                    progress=Progress(f"simulate {policy_name} {knob}", "buckets"), **kw)
                if args.json:
                    print(json.dumps({**figures, "knob": knob, "trace": str(args.trace)}),
                          flush=True)
                return Point.from_figures(knob, figures)

            reactive = [run("reactive", f"hold {format_duration(h)}", min_hold=h)
                        for h in HOLDS]
            reactive.append(run("always", "always"))
            curves: dict[str, list[Point]] = {"reactive": reactive}
            names: tuple[PolicyName, ...] = ("predictive", "oracle")
            for name in names:
                curves[name] = [run(name, f"price {x:g}", price=x)
                                for x in args.prices]
            others = [p for name in ("predictive", "oracle") for p in curves[name]]
            if not args.json:
                print(f"lead time {format_duration(lead)}, bucket {args.bucket} s, "
                      f"threshold {args.threshold}\n{TABLE_HEAD}")
                stem = args.trace.name.removesuffix(".gz").removesuffix(".csv")
                print("\n".join(table(stem, reactive, others, cells, args.bucket)),
                      flush=True)
            if args.plot is not None:
                out = args.plot if len(leads) == 1 else args.plot.with_name(
                    f"{args.plot.stem}-{format_duration(lead)}{args.plot.suffix}")
                plot(out, f"{args.trace.name}, lead {format_duration(lead)}", curves, cells,
                     args.bucket)
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return 0
