"""What an operator sees from the `shadowdns` command, run as a real subprocess.

Global flags after the subcommand, no library noise, JSON logs with an API access log and a
sampled query log, readable allocation tables, `--zone` everywhere, durations with units,
the real dashboard URL from `token create`, and progress on stderr for long commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from shadowdns.resolver.commands import demo_zones_dir
from tests.dnsclient import udp_query
from tests.serverproc import ServerProcess
from tests.unit.api.support import ZONE, ServedApi, make_tokens

ROOT = Path(__file__).resolve().parents[2]


def shadowdns(*args: str, env: dict[str, str] | None = None,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a fresh interpreter (as an operator runs it)."""
    return subprocess.run([sys.executable, "-m", "shadowdns", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})},
                          input=stdin, cwd=ROOT)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    """A server whose flags all come after the subcommand: JSON logs, every query logged."""
    tmp = tmp_path_factory.mktemp("operator")
    zones = tmp / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    state = tmp / "state.db"
    tokens = make_tokens(state)
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--api", "127.0.0.1:0",
                            "--log-level", "INFO", "--log-format", "json",
                            "--query-log-sample", "1", "--access-log", "all"]).start()
    try:
        line = server.wait_log(r"api listening on", timeout=30)
        url = json.loads(line)["message"].split("api listening on ")[1].split()[0]
        yield ServedApi(server, url, zones, state, tokens)
    finally:
        server.stop()


def api_env(served: ServedApi, role: str = "operator") -> dict[str, str]:
    return {"SHADOWDNS_API": served.url, "SHADOWDNS_TOKEN": served.tokens[role]}


def json_lines(served: ServedApi, logger: str, timeout: float = 10.0) -> list[dict[str, object]]:
    """The server's JSON log records of `logger`, waiting until there is one."""
    deadline = time.monotonic() + timeout
    while True:
        records = [json.loads(line) for line in list(served.server.log) if line.strip()]
        found = [r for r in records if r["logger"] == logger]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_server_logs_one_json_object_per_line(served: ServedApi) -> None:
    """`serve --log-format json` (after the subcommand): every stderr line parses as JSON
    with time, level, logger and message."""
    lines = [line for line in list(served.server.log) if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert {"time", "level", "logger", "message"} <= record.keys()
    assert any("api listening on" in json.loads(line)["message"] for line in lines)


def test_api_access_log_names_the_token_not_its_secret(served: ServedApi) -> None:
    """Each API request logs method, path, status, duration and the token's name."""
    done = shadowdns("zone", "list", env=api_env(served, "reader"))
    assert done.returncode == 0, done.stderr
    access = [r for r in json_lines(served, "shadowdns.api.access")
              if r["path"] == "/api/v1/zones" and r["token"] == "test-reader"]
    assert access, json_lines(served, "shadowdns.api.access")
    record = access[-1]
    assert record["method"] == "GET" and record["status"] == 200
    assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
    refused = shadowdns("zone", "list", env={**api_env(served), "SHADOWDNS_TOKEN": "sdns_x_y"})
    assert refused.returncode == 3
    assert any(r["status"] == 401 and r["token"] == "-"
               for r in json_lines(served, "shadowdns.api.access"))
    log_text = "".join(served.server.log)
    for secret in served.tokens.values():
        assert secret not in log_text


def test_query_log_records_the_question_and_rcode(served: ServedApi) -> None:
    """With `--query-log-sample 1` every answered query gets a line: client, qname, rcode."""
    port = served.server.port
    reply = udp_query(("127.0.0.1", port),
                      dns.message.make_query(f"www.{ZONE}", "A").to_wire())
    assert reply is not None
    records = [r for r in json_lines(served, "shadowdns.queries")
               if r["qname"] == f"www.{ZONE}"]
    assert records
    assert records[-1] | {"rcode": "NOERROR", "qtype": "A", "proto": "udp",
                          "client": "127.0.0.1"} == records[-1]


def test_api_commands_print_no_http_library_lines(served: ServedApi) -> None:
    """At the default level an API command's stderr is empty; `--log-level DEBUG` given
    after the subcommand shows the HTTP library's request lines."""
    quiet = shadowdns("zone", "list", env=api_env(served, "reader"))
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = shadowdns("zone", "list", "--log-level", "DEBUG", env=api_env(served, "reader"))
    assert loud.returncode == 0
    assert "HTTP Request" in loud.stderr


def test_alloc_list_shows_times_and_reasons_for_people(served: ServedApi) -> None:
    """`alloc pin --hold 2h`: the table has UTC times (no epoch floats) and the reason;
    `--json` gives the raw data with valid_until two hours ahead."""
    di = f"app.{ZONE}"
    pinned = shadowdns("alloc", "pin", di, "sb-ap-1", "ap-east", "--hold", "2h",
                       "--reason", "launch in Tokyo", env=api_env(served))
    assert pinned.returncode == 0, pinned.stderr
    shown = shadowdns("alloc", "list", "--di", di, env=api_env(served, "reader"))
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split()[:5] == ["ID", "DI", "RESOURCE", "REGION", "STATE"]
    row = next(r for r in rows if "sb-ap-1" in r)
    assert "launch in Tokyo" in row
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", row)) == 2
    assert not re.search(r"\d{10}\.\d", row)
    raw = shadowdns("alloc", "list", "--di", di, "--json", env=api_env(served, "reader"))
    [alloc] = [a for a in json.loads(raw.stdout) if a["resource"] == "sb-ap-1"]
    assert alloc["valid_until"] - alloc["valid_from"] == pytest.approx(7200, abs=60)


def test_record_list_takes_zone_as_an_option_or_positional(served: ServedApi) -> None:
    """`record list --zone Z` like `record set --zone`; the old positional still works, and
    two different zones are refused with a message."""
    env = api_env(served, "reader")
    by_option = shadowdns("record", "list", "--zone", ZONE, "--name", "www", "--json", env=env)
    by_position = shadowdns("record", "list", ZONE, "--name", "www", "--json", env=env)
    assert by_option.returncode == 0, by_option.stderr
    assert json.loads(by_option.stdout) == json.loads(by_position.stdout) != []
    both = shadowdns("record", "list", ZONE, "--zone", "other.test.", env=env)
    assert both.returncode == 6 and "two zones" in both.stderr
    neither = shadowdns("record", "list", env=env)
    assert neither.returncode == 6 and "--zone" in neither.stderr


def test_token_create_prints_the_dashboard_url(served: ServedApi) -> None:
    """The dashboard link uses the API URL given (or $SHADOWDNS_API), not a placeholder,
    and the link opens the dashboard with that token."""
    made = shadowdns("token", "create", "--role", "reader", "--state", str(served.state),
                     env={"SHADOWDNS_API": served.url})
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert f"Dashboard: {served.url}/#token={secret}" in made.stderr
    assert "HOST:PORT" not in made.stderr
    flagged = shadowdns("token", "create", "--role", "reader", "--api", "10.1.2.3:8053",
                        "--json", "--state", str(served.state))
    out = json.loads(flagged.stdout)
    assert out["dashboard"] == f"http://10.1.2.3:8053/#token={out['token']}"


def test_check_accepts_durations_with_units(tmp_path: Path) -> None:
    """A policy with `lead_time: 2m`, `warmup: 90s` and `interval: 5s` passes `check`; a
    bad duration is reported at its line with the accepted forms."""
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "d.test.zone").write_text(
        "$ORIGIN d.test.\n$TTL 300\n@ SOA ns1 host 1 3600 600 86400 300\n@ NS ns1\n"
        "ns1 A 192.0.2.1\n", encoding="utf-8")
    policy = zones / "d.test.policy.yaml"
    body = ("locations:\n  eu: {lat: 52.4, lon: 4.9}\nregions: {default: eu}\nresources:\n"
            "  p1: {address: 192.0.2.10, location: eu, role: primary,\n"
            "       check: {type: tcp, port: 80, interval: 5s, timeout: 1s}}\n"
            "  s1: {address: 192.0.2.20, location: eu, role: standby, warmup: 90s}\n"
            "dis:\n  app: {primaries: [p1], standby: [s1],\n"
            "        policy: {lead_time: 2m, min_hold: 1h}}\n")
    policy.write_text(body, encoding="utf-8")
    ok = shadowdns("check", str(zones))
    assert ok.returncode == 0, ok.stderr
    policy.write_text(body.replace("lead_time: 2m", "lead_time: 2 weeks"), encoding="utf-8")
    bad = shadowdns("check", str(zones))
    assert bad.returncode == 1
    assert re.search(r"policy\.yaml:10\b.*lead_time.*90s, 15m, 2h, 1d", bad.stderr), bad.stderr


def test_traffic_import_reports_progress_on_stderr(tmp_path: Path) -> None:
    """`traffic import` prints its progress on stderr and only the result on stdout."""
    rows = "".join(f"2026-12-01T00:{m:02d}:00,app.d.test.,eu,{m}\n" for m in range(60))
    state = tmp_path / "state.db"
    done = shadowdns("traffic", "import", "-", "--state", str(state),
                     stdin="timestamp,di,region,queries\n" + rows)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 60 rows of 1 series")
    assert re.search(r"traffic import: 60/60 rows \(100%\)", done.stderr), done.stderr
