"""Demand that never stops: `shadowdns serve` keeps counting, flushing, rolling up and
forgetting whatever it answers, and stops cleanly, all over the real wire.

Each test starts the real server on a copy of the demo zone with a short flush interval
(`--flush-interval 1s`) and reads the store the way operators do (`traffic export`, the
API) or, for the kind of each row, with SQL.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.store import DemandRow
from shadowdns.store.sqlite import SQLiteStore
from tests.serverproc import ServerProcess
from tests.unit.api.support import ZONE, served_api

SHADOWDNS = Path(sys.executable).parent / "shadowdns"
APP = f"app.{ZONE}"
SHOP = f"shop.{ZONE}"  # all_down: nodata; its one primary is forced down below


def zones_with_shop_down(tmp_path: Path) -> Path:
    """The demo zones with shop's only primary (web-us-1) overridden down: shop answers
    NODATA, app answers with its other primary."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    policy = zones / "demo.shadowdns.test.policy.yaml"
    text = policy.read_text()
    line = "web-us-1: {address: 198.51.100.10,"
    assert line in text
    policy.write_text(text.replace(line, "web-us-1: {override: down, address: 198.51.100.10,"))
    return zones


def ask(server: ServerProcess, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)


def export(state: Path, resolution: str = "minute") -> dict[tuple[str, str], int]:
    """`shadowdns traffic export`: {(timestamp, di): queries}."""
    done = subprocess.run([str(SHADOWDNS), "traffic", "export", "--state", str(state),
                           "--resolution", resolution],
                          capture_output=True, text=True, timeout=60, check=True)
    out: dict[tuple[str, str], int] = {}
    for line in done.stdout.splitlines()[1:]:
        ts, di, _region, queries = line.split(",")
        out[(ts, di)] = out.get((ts, di), 0) + int(queries)
    return out


def by_di(rows: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (_, di), queries in rows.items():
        out[di] = out.get(di, 0) + queries
    return out


def kinds(state: Path) -> dict[tuple[str, str], int]:
    """{(di, kind): queries} of the minute table."""
    conn = sqlite3.connect(state)
    try:
        rows = conn.execute("SELECT s.di, d.kind, SUM(d.queries) FROM demand_minute d"
                            " JOIN series s ON s.id = d.series GROUP BY 1, 2").fetchall()
    finally:
        conn.close()
    return {(di, kind): int(q) for di, kind, q in rows}


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               log: list[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} after {timeout}s\n" + "".join(log or []))
        time.sleep(0.2)


def assert_clean_stop(server: ServerProcess) -> None:
    server.signal(signal.SIGTERM)
    assert server.proc is not None
    assert server.proc.wait(20) == 0, "".join(server.log)
    server.stop()
    assert not any("Traceback" in line for line in server.log), "".join(server.log)
    assert any("stopped" in line for line in server.log)


def test_every_answer_kind_is_counted_and_a_failing_flush_is_retried(tmp_path: Path) -> None:
    """NODATA (all_down: nodata with its resources down), NXDOMAIN, REFUSED and static
    answers leave the flush working: the next flush stores the normal DI's demand and the
    NODATA demand under its own kind. A flush the store refuses is logged, its batch kept
    and written by a later flush once the store accepts it; SIGTERM exits 0."""
    zones = zones_with_shop_down(tmp_path)
    state = tmp_path / "state.db"
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--flush-interval", "1s"]).start()
    try:
        server.wait_log(r"serving \d+ zone")
        for _ in range(3):
            nodata = ask(server, SHOP)
            assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
            assert nodata.authority[0].rdtype == dns.rdatatype.SOA
            assert ask(server, f"nope.{ZONE}").rcode() == dns.rcode.NXDOMAIN
            assert ask(server, "example.org.").rcode() == dns.rcode.REFUSED
            assert ask(server, f"www.{ZONE}").answer[0][0].to_text() == "192.0.2.80"
        wait_until(lambda: kinds(state).get((SHOP, "nodata")) == 3, 15,
                   "no NODATA demand stored", server.log)
        for _ in range(4):
            assert ask(server, APP).answer[0][0].to_text() == "192.0.2.10"
        wait_until(lambda: by_di(export(state)).get(APP) == 4, 15,
                   "the normal DI's demand is not in the store", server.log)
        assert kinds(state)[(APP, "primary")] == 4

        # The store refuses demand for a while: the batch waits, the loop goes on.
        conn = sqlite3.connect(state)
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON demand_minute"
                     " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        conn.commit()
        for _ in range(5):
            ask(server, APP)
        server.wait_log(r"demand flush deferred .*refused by the test", timeout=15)
        ask(server, APP)  # counted while the first batch waits
        server.wait_log(r"demand flush deferred \(2 batch", timeout=15)
        conn.execute("DROP TRIGGER refuse")
        conn.commit()
        conn.close()
        wait_until(lambda: by_di(export(state)).get(APP) == 10, 15,
                   "the refused batches were not written later", server.log)
        assert_clean_stop(server)
    finally:
        server.stop()


@pytest.mark.slow
def test_rollups_and_retention_run_in_serve(tmp_path: Path) -> None:
    """A live server rolls demand up: minutes it counted appear as 5-minute actuals in the
    store and the API once their bucket ends (the demand clock is offset so that the end
    is seconds away), minute rows older than --retention-minute are deleted while their
    5-minute and hourly rollups stay. SIGTERM exits 0."""
    now = time.time()
    boundary = (now // 300 + 1) * 300
    if boundary - now < 60:
        boundary += 300
    lead = 20.0  # seconds of demand clock left in the bucket when the server starts
    offset = boundary - lead - now
    old = int((now + offset - 3 * 3600) // 300 * 300)  # three hours back, on the demand clock
    state = tmp_path / "state.db"
    with SQLiteStore(state) as seed:  # history from before a restart, not rolled up
        seed.add_demand([DemandRow(APP, "eu-west", old + 60, "primary", 5)])
    with served_api(tmp_path, "--flush-interval", "1s", "--rollup-interval", "1s",
                    "--retention-minute", "1h", "--retention-5m", "30d",
                    "--clock-offset", repr(offset)) as served:
        served.server.wait_log(r"serving \d+ zone")
        sent_by = time.time() + offset
        for _ in range(6):
            query = dns.message.make_query(APP, "A")
            reply = dns.query.udp(query, "127.0.0.1", port=served.server.port, timeout=2)
            assert reply.answer
        assert time.time() + offset < boundary - 2, "server started too slowly for the test"
        bucket = int(boundary - 300)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(bucket))
        old_stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old))
        old_minute = (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(old + 60)), APP)
        wait_until(lambda: old_minute not in export(state), 10,
                   "retention kept a minute row older than --retention-minute",
                   served.server.log)
        five = export(state, "5m")
        assert five.get((old_stamp, APP)) == 5, five  # rolled up before it was forgotten
        assert export(state, "hour").get(
            (time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(old)), APP)) == 5
        assert (stamp, APP) not in five  # the live bucket is not complete yet
        wait_until(lambda: export(state, "5m").get((stamp, APP)) == 6,
                   boundary - sent_by + 20, "the live 5-minute bucket never rolled up",
                   served.server.log)
        with httpx.Client(base_url=served.url) as http:
            response = http.get("/api/v1/forecasts", params={"di": APP, "resolution": "5m"},
                                headers=served.auth("reader"))
            assert response.status_code == 200, response.text
            actual = {p["ts"]: p["queries"] for s in response.json()
                      if s["region"] == "eu-west" for p in s["actual"]}
            assert actual.get(bucket) == 6, response.json()
        assert_clean_stop(served.server)


def test_metrics_show_demand_and_control_families(tmp_path: Path) -> None:
    """/metrics of a live server carries the demand flush and upkeep counters and the
    allocator's forecast-error (per model), top-up and refit families."""
    with served_api(tmp_path, "--flush-interval", "1s", "--rollup-interval", "1s") as served:
        served.server.wait_log(r"allocator: active")
        with httpx.Client(base_url=served.url) as http:
            def scrape() -> dict[str, list[float]]:
                text = http.get("/metrics").text
                return {f.name: [s.value for s in f.samples]
                        for f in text_string_to_metric_families(text)}

            wait_until(lambda: scrape().get("shadowdns_store_rollups", [0])[0] >= 1
                       and scrape().get("shadowdns_allocator_runs", [0])[0] >= 1, 30,
                       "no rollup or allocation run counted", served.server.log)
            families = scrape()
            gc_counts = {s.labels["generation"]: s.value
                         for f in text_string_to_metric_families(http.get("/metrics").text)
                         if f.name == "shadowdns_process_gc_pause_seconds"
                         for s in f.samples if s.name.endswith("_count")}
        assert set(gc_counts) == {"0", "1", "2"}, gc_counts
        assert gc_counts["0"] > 0  # young collections run (and are timed) while serving
        for name in ("shadowdns_allocator_forecast_relative_error",
                     "shadowdns_allocator_forecast_band_coverage",
                     "shadowdns_allocator_topups", "shadowdns_allocator_refits",
                     "shadowdns_allocator_forecast_misses", "shadowdns_allocator_runs",
                     "shadowdns_store_demand_buffered_rows",
                     "shadowdns_store_demand_flush_failures",
                     "shadowdns_store_rollup_failures"):
            assert name in families, sorted(families)
        assert families["shadowdns_store_demand_flush_failures"] == [0.0]
        assert_clean_stop(served.server)


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--retention-minute", "10m", "at least 1h"),
    ("--retention-hour", "0", "must be positive"),
    ("--flush-interval", "7s", "divide a minute"),
    ("--retention-5m", "a month", "is not a duration"),
])
def test_bad_demand_settings_are_refused_naming_the_flag(flag: str, value: str,
                                                         message: str) -> None:
    """serve refuses a demand setting it cannot honour before it starts, naming the flag."""
    done = subprocess.run([str(SHADOWDNS), "serve", "--state", ":memory:",
                           "--listen", "127.0.0.1:0", flag, value],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert flag in done.stderr and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
