"""The demand history CSV format: `timestamp,di,region,queries`, one row per bucket.

Used to bootstrap history from another system (`shadowdns traffic import`) and to get it
back out (`shadowdns traffic export`). The header line is optional on input and always
written on output. Timestamps are ISO 8601 (`2024-05-01T12:00:00Z`,
`2024-05-01 12:00:00`, with or without an offset); a timestamp without an offset is UTC.
DI names are absolute on output; a DI read without its trailing dot gets one.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import dns.exception
import dns.name

from shadowdns.errors import ConfigError, Problem

HEADER: tuple[str, ...] = ("timestamp", "di", "region", "queries")
_INTEGER = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class TrafficRow:
    """One CSV row once checked: queries of one series at one instant (epoch seconds)."""

    ts: float
    di: str
    region: str
    queries: int


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an ISO 8601 timestamp; naive means UTC. Raises ValueError."""
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"timestamp {value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def format_timestamp(ts: float) -> str:
    """`2024-05-01T12:00:00Z` for an epoch second (whole seconds)."""
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _di_name(text: str) -> str:
    """The absolute text of a DI name; raises ValueError when it is not a domain name."""
    try:
        return dns.name.from_text(text).to_text()
    except dns.exception.DNSException as exc:
        raise ValueError(f"di {text!r} is not a domain name ({exc})") from None


def _queries(text: str) -> int:
    value = text.strip()
    if _INTEGER.fullmatch(value):
        return int(value)
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"queries {value!r} is not an integer") from None
    if math.isnan(number):
        raise ValueError(f"queries {value!r} is not a number (NaN)")
    if number < 0:
        raise ValueError(f"queries {value!r} is negative")
    raise ValueError(f"queries {value!r} is not an integer")


def _is_header(fields: list[str]) -> bool:
    return tuple(f.strip().lower() for f in fields) == HEADER


def _check_row(fields: list[str]) -> tuple[TrafficRow | None, list[str]]:
    """The row, or every reason it is wrong."""
    if len(fields) != len(HEADER):
        return None, [f"expected {len(HEADER)} columns ({','.join(HEADER)}), got {len(fields)}"]
    ts_text, di_text, region_text, queries_text = fields
    reasons: list[str] = []
    ts = di = queries = None
    try:
        ts = parse_timestamp(ts_text)
    except ValueError as exc:
        reasons.append(str(exc))
    else:
        if ts < 0:
            reasons.append(f"timestamp {ts_text.strip()!r} is before 1970")
    if not di_text.strip():
        reasons.append("empty di")
    else:
        try:
            di = _di_name(di_text.strip())
        except ValueError as exc:
            reasons.append(str(exc))
    region = region_text.strip()
    if not region:
        reasons.append("empty region")
    try:
        queries = _queries(queries_text)
    except ValueError as exc:
        reasons.append(str(exc))
    if reasons or ts is None or di is None or queries is None:
        return None, reasons
    return TrafficRow(ts, di, region, queries), []


def read_traffic(lines: Iterable[str], source: str) -> list[TrafficRow]:
    """Every row of a traffic CSV; raises ConfigError listing every bad line and reason.

    Blank lines are skipped; a first line naming the columns is a header.
    """
    rows: list[TrafficRow] = []
    problems: list[Problem] = []
    reader = csv.reader(lines)
    first = True
    try:
        for fields in reader:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if first:
                first = False
                if _is_header(fields):
                    continue
            row, reasons = _check_row(fields)
            problems.extend(Problem(source, reader.line_num, reason) for reason in reasons)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        problems.append(Problem(source, reader.line_num, f"malformed CSV: {exc}"))
    if problems:
        raise ConfigError(problems)
    return rows


def write_traffic(rows: Iterable[tuple[int, str, str, int]], out: IO[str]) -> int:
    """Write (bucket_start, di, region, queries) rows with a header; returns rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    count = 0
    for ts, di, region, queries in rows:
        writer.writerow((format_timestamp(ts), di, region, queries))
        count += 1
    return count


def iter_export_rows(
    series: dict[tuple[str, str], list[tuple[int, int]]],
) -> Iterator[tuple[int, str, str, int]]:
    """Rows of `demand_series` output ordered by time, then di, then region."""
    flat = [
        (ts, di, region, queries)
        for (di, region), points in series.items()
        for ts, queries in points
    ]
    flat.sort()
    return iter(flat)
