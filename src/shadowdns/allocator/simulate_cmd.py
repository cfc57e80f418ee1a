"""`shadowdns simulate`: replay a demand trace through the real allocator (see `simulate`).

    shadowdns simulate --trace FILE.csv --policy predictive --lead-time 15m --bucket 5m \\
        --threshold p75 [--policy-file ORIGIN.policy.yaml] [--json]

The trace is `timestamp,di,region,queries`, or a single `timestamp,value` series (or a
folder of them), which is first spread over four regions by `simulate.multi_region`
(`--write-trace OUT.csv` saves that multi-region trace). `--threshold` is a number of
queries per bucket, or `pNN`: the NN-th percentile of each DI's bucket values.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.name

from shadowdns.allocator.settings import parse_duration
from shadowdns.allocator.simulate import POLICIES, multi_region, simulate
from shadowdns.errors import ConfigError, Problem
from shadowdns.predictor.series import Series, read_input

POLICY_SUFFIX = ".policy.yaml"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    sim = subparsers.add_parser(
        "simulate", help="replay a demand trace through the allocator on a simulated clock",
        description="Replay a trace bucket by bucket through the real predictor and "
        "allocator; print queries served by a ready local shadow and the shadow cost.")
    sim.add_argument("--trace", required=True, type=Path, metavar="FILE.csv|DIR")
    sim.add_argument("--policy", default="predictive", choices=POLICIES)
    sim.add_argument("--lead-time", default="15m", type=parse_duration, metavar="DURATION")
    sim.add_argument("--bucket", default="5m", type=_bucket, metavar="DURATION")
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
    sim.add_argument("--min-hold", default="30m", type=parse_duration, metavar="DURATION")
    sim.add_argument("--ttl", default=30, type=int, help="answer TTL (default 30)")
    sim.add_argument("--refit-every", default="7d", type=parse_duration, metavar="DURATION")
    sim.add_argument("--workers", default=2, type=int, help="fit processes (default 2)")
    sim.add_argument("--write-trace", type=Path, default=None, metavar="OUT.csv",
                     help="also write the multi-region trace that is replayed")
    sim.add_argument("--json", action="store_true", help="print one JSON object")
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


def _bucket(text: str) -> int:
    seconds = int(parse_duration(text))
    if seconds < 60 or seconds % 60:
        raise argparse.ArgumentTypeError("the bucket must be a whole number of minutes")
    return seconds


def load_trace(path: Path, bucket: int = 300) -> list[Series]:
    """Series keyed `di|region`; single-value series are spread over regions. Count rows
    finer than `bucket` are summed into it; a grid that cannot be cut into buckets, or a
    series too short to spread, is a `ConfigError` naming the file."""
    out: list[Series] = []
    for series in read_input(path, bucket=bucket):
        if series.step % bucket and bucket % series.step:
            raise ConfigError([Problem(
                str(path), None, f"{series.key}: its step of {series.step} s and the bucket "
                f"of {bucket} s do not divide each other; choose --bucket accordingly")])
        if "|" in series.key:
            key = series.key.rsplit(":", 1)[-1]
            out.append(Series(key, series.values, series.step, series.start))
            continue
        label = series.key.rsplit("/", 1)[-1].replace("_", "-").lower().strip("-")[:60]
        di = dns.name.from_text(label or "trace", dns.name.from_text("sim."))
        try:
            out.extend(multi_region(series, di.to_text()))
        except ValueError as exc:
            raise ConfigError([Problem(str(path), None, str(exc))]) from None
    if not out:
        raise ConfigError([Problem(str(path), None, "no demand rows")])
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
        from shadowdns.zones.policy_file import load_policy

        name = args.policy_file.name
        if not name.endswith(POLICY_SUFFIX):
            raise ConfigError([Problem(str(args.policy_file), None,
                                       f"name it <origin>{POLICY_SUFFIX}")])
        policy = load_policy(args.policy_file,
                             dns.name.from_text(name[: -len(POLICY_SUFFIX)]))
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
                           executor=executor)
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
