"""100,000 (DI, region) series with 14 days of 5-minute history inside a running `serve`.

    python -m bench.serve_scale [--dis 25000] [--days 14] [--every 12] [--buckets 2] \
        [--model auto] [--dnsperf-seconds 20]

Writes a policy of `--dis` DIs over four regions (4 × dis series, each DI with a primary
and four standby resources, the threshold above every burst so the planner weighs every
series and allocates nothing) and seeds a fresh SQLite state *directly* (SQL inserts, not
the server's flush): `--days` of history per series ending at the current bucket, one
burst of 300 queries every `--every` buckets per series (a cron-like hourly job at the
default; the phase differs per series), the last hours in the minute table and the rest
in the 5-minute rollups, as a server that has been running for two weeks holds them. A
dense history (a row in every bucket of every series) would be 400 million rows; the book
still advances every series through every bucket (a bucket without a row is zero).

Then `shadowdns serve` runs in real time with the default allocator settings (5-minute
buckets and window, 12 s settle, one fit worker): it digests the history at start, and
every 5 minutes observes the new bucket for every series, forecasts them, plans and
writes the forecasts. The benchmark measures, from the server's /proc entries, the CPU
time of the serving process (the fit worker is a child process and is counted apart) and
its RSS every second; the longest interval without an answer (bench/gap_probe, one query
every 2 ms, throughout); and dnsperf's rate (one client core, ECS queries of many DIs) for
`--dnsperf-seconds` in a quiet stretch and from the moment a bucket's read starts.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.edns
import dns.message
import numpy as np

from bench import gap_probe
from shadowdns.store import open_store

REGIONS = ("r0", "r1", "r2", "r3")
ZONE = """$ORIGIN sc.test.
$TTL 300
@   SOA ns1 hostmaster 1 3600 600 86400 60
@   NS  ns1
ns1 A   192.0.2.1
"""
BUCKET = 300
SETTLE = 12.0  # the controller's default: a bucket is read this long after it ends
MINUTES_KEPT = 3 * 3600  # serve --retention-minute: minutes this far back, older from 5m
BURST = 300
ECS_HEX = "00011800c61201"  # 198.18.1.0/24 -> region r1


def write_setup(root: Path, dis: int, days: float, every: int, model: str) -> int:
    """The zone, the policy and the seeded state; returns the demand rows written."""
    zones = root / "zones"
    zones.mkdir(parents=True)
    (zones / "sc.test.zone").write_text(ZONE)
    lines = ["locations:", "  home: {lat: 0, lon: -150}"]
    lines += [f"  {r}: {{lat: {10 * i}, lon: {30 * i}}}" for i, r in enumerate(REGIONS)]
    cidrs = ", ".join(f'"198.18.{i}.0/24": {r}' for i, r in enumerate(REGIONS))
    lines += ["regions:", f"  cidr: {{{cidrs}}}", "  default: home", "resources:",
              "  p-home: {address: 192.0.2.10, location: home, role: primary}"]
    lines += [f"  s-{r}: {{address: 203.0.113.{40 + i}, location: {r}, role: standby}}"
              for i, r in enumerate(REGIONS)]
    standby = ", ".join(f"s-{r}" for r in REGIONS)
    lines.append("dis:")
    lines += [f"  app{k}: {{primaries: [p-home], standby: [{standby}], ttl: 30, "
              f"policy: {{threshold: {4 * BURST}, model: {model}}}}}" for k in range(dis)]
    (zones / "sc.test.policy.yaml").write_text("\n".join(lines) + "\n")
    db = root / "state.db"
    open_store(str(db)).close()  # the schema
    end = int(time.time() // BUCKET * BUCKET)  # the current, partial bucket starts here
    first = end - int(days * 86400)
    split = end - MINUTES_KEPT + 2 * BUCKET
    conn = sqlite3.connect(db)
    for pragma in ("synchronous = OFF", "journal_mode = OFF", "cache_size = -1000000"):
        conn.execute(f"PRAGMA {pragma}")
    series = [(k * len(REGIONS) + j + 1, f"app{k}.sc.test.", r, first, end)
              for k in range(dis) for j, r in enumerate(REGIONS)]
    conn.executemany("INSERT INTO series (id, di, region, first_seen, last_seen) "
                     "VALUES (?, ?, ?, ?, ?)", series)
    # every series' bursts, in primary-key order (bucket, series); the series index is
    # built once afterwards: row by row into the index, the seeding took 25x longer
    ids = np.arange(1, len(series) + 1, dtype=np.int64)
    buckets = np.arange(first // BUCKET, end // BUCKET, dtype=np.int64)
    hit = (buckets[:, None] + ids[None, :]) % every == 0
    at, which = np.nonzero(hit)
    starts, sids = buckets[at] * BUCKET, ids[which]
    written = len(starts)
    for table, keep in (("demand_5m", starts < split), ("demand_minute", starts >= split)):
        conn.execute(f"DROP INDEX IF EXISTS {table}_series")
        conn.executemany(
            f"INSERT INTO {table} (bucket_start, series, kind, queries) "
            f"VALUES (?, ?, 'primary', {BURST})",
            zip(starts[keep].tolist(), sids[keep].tolist(), strict=True))
        conn.execute(f"CREATE INDEX {table}_series ON {table} (series, bucket_start)")
    conn.commit()
    conn.execute("PRAGMA journal_mode = WAL")  # as the store keeps it
    conn.close()
    return written


class Sampler(threading.Thread):
    """CPU seconds (user + system) and RSS of one process, every `period` seconds."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float, float]] = []  # (monotonic, cpu s, rss MiB)
        self.stop = threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            cpu = (int(stat[11]) + int(stat[12])) / self.tick
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
            self.samples.append((time.monotonic(), cpu, rss))
            self.stop.wait(self.period)

    def cpu_between(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s[0] <= end]
        return inside[-1][1] - inside[0][1] if len(inside) > 1 else math.nan

    def rss_max(self, start: float, end: float) -> float:
        return max((s[2] for s in self.samples if start <= s[0] <= end), default=math.nan)


def wait_for_quiet(sampler: Sampler, since: float, quiet: float = 20.0,
                   busy: float = 0.3) -> float:
    """When the serving process has used under `busy` of a core for `quiet` seconds since
    `since` (the history is read: the first window's fits and writes are done): the
    monotonic time it went quiet."""
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        if now - since > quiet and sampler.cpu_between(now - quiet, now) < busy * quiet:
            return now - quiet


def dnsperf(port: int, seconds: float, queries: Path) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
         str(queries), "-l", f"{seconds:g}", "-c", "4", "-T", "1", "-q", "64", "-t", "2",
         "-E", f"8:{ECS_HEX}"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    return float(match.group(1)) if match else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dis", type=int, default=25_000)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--every", type=int, default=12, help="one burst every N buckets")
    parser.add_argument("--buckets", type=int, default=2, help="buckets to watch after start")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--dnsperf-seconds", type=float, default=20.0)
    parser.add_argument("--seeded", type=Path, metavar="DIR",
                        help="copy zones/ and state.db from DIR (a --keep of an earlier run) "
                        "instead of seeding: the history then ends when that run seeded it")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="copy the seeded zones/ and state.db to DIR before serving")
    parser.add_argument("--log", type=Path, metavar="FILE",
                        help="write the server's log (with --stall-trace's stacks) to FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shadowdns-scale-") as tmp:
        root = Path(tmp)
        began = time.monotonic()
        if args.seeded:
            shutil.copytree(args.seeded / "zones", root / "zones")
            shutil.copy(args.seeded / "state.db", root / "state.db")
            print(f"seeded state copied from {args.seeded}", flush=True)
        else:
            rows = write_setup(root, args.dis, args.days, args.every, args.model)
            print(f"{4 * args.dis:,} series, {args.days:g} days, {rows:,} demand rows seeded "
                  f"in {time.monotonic() - began:.0f} s", flush=True)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copytree(root / "zones", args.keep / "zones", dirs_exist_ok=True)
                shutil.copy(root / "state.db", args.keep / "state.db")
        queries = root / "queries.txt"
        queries.write_text("".join(f"app{k}.sc.test. A\n" for k in range(min(args.dis, 5000))))
        run(root, args, queries)


def run(root: Path, args: argparse.Namespace, queries: Path) -> None:
    log_path = args.log or root / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shadowdns", "serve", "--zones", str(root / "zones"),
             "--listen", "127.0.0.1:0", "--state", str(root / "state.db"),
             "--retention-minute", f"{MINUTES_KEPT}s", "--stall-trace", "50"],
            stdout=subprocess.DEVNULL, stderr=log, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    probe: subprocess.Popen[bytes] | None = None
    try:
        started = time.monotonic()
        port = 0
        while not port and proc.poll() is None and time.monotonic() - started < 600:
            match = re.search(r"listening on 127\.0\.0\.1:(\d+)", log_path.read_text())
            port = int(match.group(1)) if match else 0
            time.sleep(0.2)
        if not port:
            raise SystemExit("the server did not start:\n" + log_path.read_text()[-3000:])
        listening = time.monotonic()
        print(f"listening after {listening - started:.1f} s", flush=True)
        query = dns.message.make_query("app1.sc.test.", "A", use_edns=0, options=[
            dns.edns.ECSOption("198.18.1.0", 24)]).to_wire()
        trace_path = root / "gaps.bin"
        probe = subprocess.Popen(
            [sys.executable, "-m", "bench.gap_probe", str(port), "--seconds", "7200",
             "--out", str(trace_path), "--interval", "0.002", "--query", query.hex()],
            cwd=Path(__file__).resolve().parent.parent)
        while "demand history read" not in log_path.read_text():
            time.sleep(1.0)
        digested = wait_for_quiet(sampler, time.monotonic())
        print(f"start done (first read of the history, its digestion, the first window) "
              f"{digested - listening:.0f} s after listening: serving process CPU "
              f"{sampler.cpu_between(started, digested):.0f} s, RSS up to "
              f"{sampler.rss_max(started, digested):,.0f} MiB", flush=True)
        wall = time.time()
        next_read = (wall // BUCKET + 1) * BUCKET + SETTLE
        # bucket 1: CPU of the window's work alone (only the probe asks); later buckets:
        # dnsperf from the moment the read starts, and again mid-bucket
        windows: list[float] = []
        during: list[float] = []
        quiet: list[float] = []
        for b in range(args.buckets):
            read_at = next_read + b * BUCKET
            time.sleep(max(0.0, read_at - time.time()))
            windows.append(time.monotonic())
            if b == 0:
                continue
            during.append(dnsperf(port, args.dnsperf_seconds, queries))
            time.sleep(max(0.0, read_at + BUCKET / 2 - time.time()))
            quiet.append(dnsperf(port, args.dnsperf_seconds, queries))
        time.sleep(max(0.0, next_read + args.buckets * BUCKET - 5 - time.time()))
        probe.send_signal(signal.SIGINT)
        probe.wait(timeout=120)
        trace = gap_probe.read(trace_path)
        first_read_at = windows[0]
        since_start = (trace.sends[0], digested)
        steady = (digested, trace.sends[-1])
        for what, (lo, hi) in (("during the start", since_start), ("afterwards", steady)):
            gap, gap_at = gap_probe.longest_gap(trace.replies, lo, hi)
            send_gap, _ = gap_probe.longest_gap(trace.sends, lo, hi)
            print(f"longest gap between answers {what}: {1000 * gap:.1f} ms "
                  f"({gap_at - listening:.0f} s after listening; the probe's own longest "
                  f"send gap {1000 * send_gap:.1f} ms)")
        cpu = sampler.cpu_between(first_read_at - 2, first_read_at + BUCKET - 2)
        # the CPU the server spends without a window (answering the probe's 500 q/s, the
        # store's change listener, timers), from the quiet stretch before the first read
        idle_span = first_read_at - 2 - digested
        idle = (sampler.cpu_between(digested, first_read_at - 2) / idle_span
                if idle_span >= 30 else math.nan)
        print(f"one bucket's window (new bucket, forecasts, plan, writes; no load): serving "
              f"process CPU {cpu:.1f} s in its 5 minutes, RSS "
              f"{sampler.rss_max(first_read_at, first_read_at + BUCKET):,.0f} MiB; without "
              f"a window (the probe answered, {idle_span:.0f} s before the read) "
              f"{100 * idle:.1f} % of a core, so the window's own work "
              f"{cpu - idle * BUCKET:.1f} s")
        for i, (busy, calm) in enumerate(zip(during, quiet, strict=True)):
            print(f"bucket {i + 2}: dnsperf {busy:,.0f} q/s from the read on, "
                  f"{calm:,.0f} q/s mid-bucket ({busy / calm:.2f}x)")
        stalls = re.findall(r"event loop stalled (\d+) ms", log_path.read_text())
        if stalls:
            print(f"event-loop stalls over 50 ms (serve --stall-trace 50): {len(stalls)}, "
                  f"longest {max(float(s) for s in stalls):.0f} ms")
        tail = [line for line in log_path.read_text().splitlines()
                if "Traceback" in line or "ERROR" in line]
        if tail:
            print("server errors:", *tail[:5], sep="\n  ")
    finally:
        sampler.stop.set()
        if probe is not None and probe.poll() is None:
            probe.terminate()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
