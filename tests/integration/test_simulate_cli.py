"""`shadowdns simulate` as a user runs it: CSV in, JSON figures out."""

from __future__ import annotations

import csv
import gzip
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path


def run(*args: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "shadowdns", "simulate", *args],
                         capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def write_multi(path: Path, days: int = 2) -> None:
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["timestamp", "di", "region", "queries"])
        for i in range(days * 288):
            ts = datetime.fromtimestamp(1_700_006_400 + 300 * i, UTC).isoformat()
            hour = (i % 288) / 12
            for region, offset in (("eu-west", 0), ("ap-east", 8)):
                q = 10 + 200 * math.exp(-(((hour + offset) % 24 - 14) ** 2) / 4)
                w.writerow([ts, "app.sim.", region, round(q)])


def test_multi_region_trace_reactive_and_oracle_figures(tmp_path: Path) -> None:
    """The JSON has the documented figures; the oracle serves at least what reactive does
    with the same lead time, and none serves nothing."""
    trace = tmp_path / "trace.csv"
    write_multi(trace)
    common = ["--trace", str(trace), "--lead-time", "15m", "--bucket", "5m",
              "--threshold", "100", "--json"]
    reactive = run("--policy", "reactive", *common)
    oracle = run("--policy", "oracle", *common)
    none = run("--policy", "none", *common)
    for key in ("queries_total", "queries_local", "local_share", "shadow_minutes",
                "allocations", "releases"):
        assert key in reactive
    assert none["queries_local"] == 0 and none["queries_total"] == reactive["queries_total"]
    assert 0 < float(reactive["local_share"]) <= float(oracle["local_share"]) < 1  # type: ignore[arg-type]
    assert reactive["thresholds"] == {"app.sim.": 100.0}


def test_single_series_is_spread_over_regions_and_written_out(tmp_path: Path) -> None:
    """A timestamp,value file becomes a four-region trace (saved with --write-trace)."""
    source = tmp_path / "svc.csv"
    with source.open("w") as handle:
        handle.write("timestamp,value\n")
        for i in range(5 * 288):
            stamp = datetime.fromtimestamp(1_700_006_400 + 300 * i, UTC)
            handle.write(f"{stamp:%Y-%m-%d %H:%M:%S},{50 + (i % 288) // 3}\n")
    out = tmp_path / "multi.csv"
    figures = run("--trace", str(source), "--policy", "always", "--write-trace", str(out),
                  "--json")
    assert figures["local_share"] == 1.0
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["region"] for r in rows} == {"us-east", "eu-west", "ap-east", "sa-east"}
    assert {r["di"] for r in rows} == {"svc.sim."}


def test_query_log_trace_and_a_short_series(tmp_path: Path) -> None:
    """One row per query at any second sums to the queries replayed; a two-day
    timestamp,value file still spreads over the four regions."""
    log = tmp_path / "log.csv"
    with log.open("w") as handle:
        handle.write("timestamp,di,region,queries\n")
        for i in range(2 * 288 * 3):
            region = ("eu-west", "ap-east")[i % 2]
            handle.write(f"{1_700_006_400 + 100 * i + 37 * (i % 3)},app.sim.,{region},1\n")
    figures = run("--trace", str(log), "--policy", "always", "--json")
    assert figures["queries_total"] == 2 * 288 * 3 and figures["buckets"] == 2 * 288
    short = tmp_path / "short.csv"
    with short.open("w") as handle:
        handle.write("timestamp,value\n")
        for i in range(2 * 288):
            handle.write(f"{1_700_006_400 + 300 * i},{10 + i % 288}\n")
    spread = run("--trace", str(short), "--policy", "reactive", "--threshold", "p75",
                 "--json")
    assert spread["buckets"] == 2 * 288 - 14 * 12 and 0 < float(spread["local_share"]) < 1  # type: ignore[arg-type]


def test_a_grid_that_does_not_fit_the_bucket_is_refused(tmp_path: Path) -> None:
    """A 7-minute series cannot be cut into 5-minute buckets: exit 1, file named."""
    trace = tmp_path / "seven.csv"
    with trace.open("w") as handle:
        handle.write("timestamp,value\n")
        for i in range(100):
            handle.write(f"{1_700_006_400 + 420 * i},5\n")
    out = subprocess.run([sys.executable, "-m", "shadowdns", "simulate", "--trace",
                          str(trace), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "seven.csv" in out.stderr and "bucket" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_app_trace_without_regions(tmp_path: Path) -> None:
    """A timestamp,app,invocations file (the Azure Functions shape, per-minute rows, quiet
    minutes left out) replays with one DI per app, all apps over the file's whole span."""
    trace = tmp_path / "apps.csv"
    with trace.open("w") as handle:
        handle.write("timestamp,app,invocations\n")
        for minute in range(6 * 60):
            stamp = datetime.fromtimestamp(1_700_006_400 + 60 * minute, UTC)
            handle.write(f"{stamp:%Y-%m-%d %H:%M:%S},steady,{20 + minute % 7}\n")
            if minute % 60 == 30:
                handle.write(f"{stamp:%Y-%m-%d %H:%M:%S},hourly,50\n")
    out = tmp_path / "multi.csv"
    figures = run("--trace", str(trace), "--policy", "always", "--json",
                  "--write-trace", str(out))
    assert figures["buckets"] == 6 * 12 and figures["local_share"] == 1.0
    assert figures["queries_total"] == 6 * 50 + sum(20 + m % 7 for m in range(360))
    assert set(figures["thresholds"]) == {"steady.sim.", "hourly.sim."}  # type: ignore[arg-type]
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len({r["region"] for r in rows if r["di"] == "hourly.sim."}) == 1
    assert sum(1 for r in rows if r["di"] == "hourly.sim.") == 6 * 12


def test_a_gzipped_app_trace_and_a_gzipped_trace_of_another_shape(tmp_path: Path) -> None:
    """An app trace may be .csv.gz (the Azure one in tests/data is); any other gzipped
    shape is refused with the file named, not a traceback."""
    rows = "timestamp,app,invocations\n" + "".join(
        f"{1_700_006_400 + 60 * m},svc,3\n" for m in range(120))
    good = tmp_path / "apps.csv.gz"
    good.write_bytes(gzip.compress(rows.encode()))
    figures = run("--trace", str(good), "--policy", "always", "--json")
    assert figures["queries_total"] == 360 and figures["buckets"] == 24
    bad = tmp_path / "series.csv.gz"
    bad.write_bytes(gzip.compress(b"timestamp,value\n1700006400,5\n"))
    out = subprocess.run([sys.executable, "-m", "shadowdns", "simulate", "--trace", str(bad),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "series.csv.gz" in out.stderr
    assert "Traceback" not in out.stderr


def test_sweep_prints_each_policys_frontier_next_to_the_ideal(tmp_path: Path) -> None:
    """`--sweep`: reactive over its hold (0 … 12 h) and always, predictive and the oracle
    over the prices, each run with the reactive frontier and the ideal at its minutes; with
    --json one object per run naming its knob. A bad price is a usage error naming it."""
    trace = tmp_path / "trace.csv"
    write_multi(trace)
    common = ["simulate", "--trace", str(trace), "--threshold", "100", "--sweep",
              "--prices", "1", "--model", "snaive", "--workers", "0"]
    out = subprocess.run([sys.executable, "-m", "shadowdns", *common], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    rows = [line for line in out.splitlines() if line.startswith("| trace |")]
    assert rows[0].startswith("| trace | policy | knob | local_share | shadow_minutes")
    knobs = [row.split("|")[3].strip() for row in rows[1:]]
    assert knobs == ["hold 0m", "hold 10m", "hold 20m", "hold 30m", "hold 45m", "hold 1h",
                     "hold 90m", "hold 2h", "hold 3h", "hold 4h", "hold 6h", "hold 8h",
                     "hold 12h", "always", "price 1", "price 1"]
    always = rows[1 + knobs.index("always")].split("|")
    assert float(always[4]) == 1.0 and always[8].strip() == "+0%"
    lines = subprocess.run([sys.executable, "-m", "shadowdns", *common, "--json"],
                           capture_output=True, text=True, check=True,
                           timeout=300).stdout.splitlines()
    runs = [json.loads(line) for line in lines]
    assert [(r["policy"], r["knob"]) for r in runs][-2:] == [("predictive", "price 1"),
                                                             ("oracle", "price 1")]
    assert all("local_share" in r and "shadow_minutes" in r for r in runs)
    bad = subprocess.run([sys.executable, "-m", "shadowdns", *common[:-4], "--prices", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--prices" in bad.stderr and "above 0" in bad.stderr
