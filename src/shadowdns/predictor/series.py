"""Demand time series: a regular grid of values, read from the CSV shapes the tools accept.

A series is values on a regular grid of ``step`` seconds; ``start`` is the absolute index of
its first step (``timestamp // step``), so that every series on the same step shares one
clock and the same seasonal slot means the same time of day. Input is cleaned once here.

Accepted files:

* ``timestamp,value`` — one series of samples (the format of ``tests/data/traffic/``):
  off-grid timestamps are rounded to the grid of the first one, duplicates averaged, and
  gaps and NaN interpolated linearly (a real counter that stops for a while is not a zero);
* ``timestamp,di,region,queries`` — many series, one per (di, region), of *counts*: each
  row is added into the step that contains its timestamp on the epoch grid, so duplicate
  rows, per-minute rows and one row per query all sum to the queries of each step; a step
  with no row after a series' first row counts zero queries, since counters write only
  what they saw;
* a folder — every ``*.csv`` in it, each of either shape.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from shadowdns.errors import ConfigError, Problem
from shadowdns.predictor.state import FloatArray

__all__ = [
    "SECONDS_PER_DAY",
    "FloatArray",
    "Series",
    "fill_gaps",
    "infer_step",
    "parse_timestamp",
    "parse_value",
    "read_csv",
    "read_input",
    "regularise",
    "sum_counts",
]

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True, slots=True)
class Series:
    """One demand series on a regular grid; ``values`` are oldest first, without NaN."""

    key: str
    values: FloatArray
    step: int
    start: int

    @property
    def season(self) -> int:
        """Steps per day (at least 1): the daily season this series' forecasters use."""
        return max(1, SECONDS_PER_DAY // self.step)

    def head(self, n: int) -> Series:
        """The first ``n`` steps, as a series of their own."""
        return Series(self.key, self.values[:n], self.step, self.start)


def parse_timestamp(text: str) -> float:
    """Seconds since the epoch of an ISO-8601 timestamp (naive ones are read as UTC) or a number."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def parse_value(text: str) -> float:
    """A count; empty, unparsable or infinite text becomes NaN (a gap), never an error."""
    try:
        value = float(text)
    except ValueError:
        return math.nan
    return value if math.isfinite(value) else math.nan


def fill_gaps(values: FloatArray) -> FloatArray:
    """Interpolate NaN linearly (edges take the nearest value); all-NaN becomes empty."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    if ok.all():
        return values
    if not ok.any():
        return np.zeros(0)
    idx = np.arange(len(values))
    filled: FloatArray = np.interp(idx, idx[ok], values[ok])
    return filled


def infer_step(timestamps: FloatArray) -> int:
    """The grid step in seconds: the median spacing of sorted distinct timestamps."""
    distinct = np.unique(timestamps)
    if len(distinct) < 2:
        return 300
    return max(1, round(float(np.median(np.diff(distinct)))))


def regularise(key: str, timestamps: FloatArray, values: FloatArray, step: int) -> Series:
    """Put samples on the grid of ``step`` seconds anchored at the first timestamp.

    Off-grid timestamps are rounded to the nearest step, duplicates averaged, and steps
    without a readable sample interpolated.
    """
    if len(timestamps) == 0:
        return Series(key, np.zeros(0), step, 0)
    order = np.argsort(timestamps, kind="stable")
    ts = timestamps[order]
    vs = values[order]
    first = ts[0]
    idx = np.rint((ts - first) / step).astype(np.int64)
    n = int(idx[-1]) + 1
    sums = np.zeros(n)
    counts = np.zeros(n)
    ok = np.isfinite(vs)
    np.add.at(sums, idx[ok], vs[ok])
    np.add.at(counts, idx[ok], 1.0)
    grid = np.full(n, np.nan)
    grid[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return Series(key, fill_gaps(grid), step, round(first / step))


def sum_counts(key: str, timestamps: FloatArray, values: FloatArray, step: int) -> Series:
    """Counts into steps of ``step`` seconds on the epoch grid: each value is added to the
    step containing its timestamp; steps without a row are zero. A step whose only rows
    are unreadable (NaN) is a gap, interpolated."""
    if len(timestamps) == 0:
        return Series(key, np.zeros(0), step, 0)
    slots = np.floor(np.asarray(timestamps) / step).astype(np.int64)
    first = int(slots.min())
    idx = slots - first
    n = int(idx.max()) + 1
    ok = np.isfinite(values)
    sums = np.zeros(n)
    np.add.at(sums, idx[ok], values[ok])
    counted = np.zeros(n, dtype=bool)
    counted[idx[ok]] = True
    unreadable = np.zeros(n, dtype=bool)
    unreadable[idx[~ok]] = True
    sums[unreadable & ~counted] = np.nan
    return Series(key, fill_gaps(sums), step, first)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise ConfigError([Problem(str(path), None, "empty file")])
    header = [cell.strip().lower() for cell in rows[0]]
    return header, rows[1:]


def _stamp(path: Path, line: int, text: str) -> float:
    try:
        return parse_timestamp(text)
    except ValueError:
        raise ConfigError([Problem(str(path), line, f"bad timestamp {text!r}")]) from None


def read_csv(path: str | Path, step: int | None = None,
             bucket: int | None = None) -> list[Series]:
    """Read one CSV file of either accepted shape into series (see the module docstring).

    ``step`` forces the grid; otherwise it is the median spacing of the timestamps. Count
    files whose spacing is not a whole number of the caller's ``bucket`` (rows every
    minute, one row per query, irregular rows) are summed straight into ``bucket``."""
    path = Path(path)
    header, rows = _read_rows(path)
    if header[:2] == ["timestamp", "value"]:
        ts = np.array([_stamp(path, i, r[0]) for i, r in enumerate(rows, 2)], dtype=np.float64)
        vs = np.array([parse_value(r[1]) if len(r) > 1 else math.nan for r in rows])
        return [regularise(path.stem, ts, vs, step or infer_step(ts))]
    needed = ("timestamp", "di", "region", "queries")
    if all(name in header for name in needed):
        cols = [header.index(name) for name in needed]
        grouped: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        all_ts: list[float] = []
        for line, row in enumerate(rows, start=2):
            if len(row) < len(header):
                raise ConfigError([Problem(str(path), line, "too few columns")])
            stamp = _stamp(path, line, row[cols[0]])
            key = f"{row[cols[1]].strip()}|{row[cols[2]].strip()}"
            grouped[key][0].append(stamp)
            grouped[key][1].append(parse_value(row[cols[3]]))
            all_ts.append(stamp)
        grid_step = step or infer_step(np.array(all_ts))
        if step is None and bucket is not None and grid_step % bucket:
            grid_step = bucket
        return [
            sum_counts(key, np.array(ts), np.array(vs), grid_step)
            for key, (ts, vs) in sorted(grouped.items())
        ]
    reason = "expected columns timestamp,value or timestamp,di,region,queries"
    raise ConfigError([Problem(str(path), 1, reason)])


def read_input(path: str | Path, step: int | None = None,
               bucket: int | None = None) -> list[Series]:
    """Read a CSV file or every ``*.csv`` in a folder (recursively, in name order)."""
    path = Path(path)
    if path.is_dir():
        files: Iterable[Path] = sorted(path.rglob("*.csv"))
        out: list[Series] = []
        for file in files:
            for series in read_csv(file, step, bucket):
                key = str(file.relative_to(path).with_suffix(""))
                name = key if series.key == file.stem else f"{key}:{series.key}"
                out.append(Series(name, series.values, series.step, series.start))
        if not out:
            raise ConfigError([Problem(str(path), None, "no CSV files in folder")])
        return out
    if not path.exists():
        raise ConfigError([Problem(str(path), None, "no such file")])
    return read_csv(path, step, bucket)
