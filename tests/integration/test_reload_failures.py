"""A refused reload is seen without reading the log: /readyz, /metrics and /api/v1/status."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.integration.test_api_server import ask
from tests.unit.api.support import ZONE, ServedApi, served_api


def metric(http: httpx.Client, name: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def wait_status(http: httpx.Client, served: ServedApi, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = http.get("/api/v1/status", headers=served.auth("reader")).json()
        if body["status"] == wanted or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_sighup_with_a_broken_policy_degrades_and_a_good_one_recovers(tmp_path: Path) -> None:
    """A SIGHUP that finds a broken policy keeps the old answers, turns /readyz "degraded"
    with the reason, counts the failure and keeps the last success time; a good file and
    another SIGHUP clear it."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        assert http.get("/readyz").json()["status"] == "ready"
        first_success = metric(http, "shadowdns_config_last_reload_success_timestamp_seconds")
        before = ask(served, f"app.{ZONE}")
        assert before
        policy = served.zones / f"{ZONE[:-1]}.policy.yaml"
        good = policy.read_text()
        policy.write_text(good.replace("primaries:", "primaries_typo:", 1))
        served.server.signal(signal.SIGHUP)
        status = wait_status(http, served, "degraded")
        assert status["status"] == "degraded", status
        assert status["reload"]["ok"] is False and status["reload"]["failures"] == 1
        assert "primaries_typo" in status["reload"]["error"]
        ready = http.get("/readyz")
        assert ready.status_code == 200  # still serving: degraded, not down
        assert ready.json()["status"] == "degraded"
        assert "primaries_typo" in ready.json()["degraded"]["config_reload_failed"]
        assert metric(http, "shadowdns_config_reload_failures_total") == 1
        assert metric(http, "shadowdns_config_last_reload_successful") == 0
        assert metric(http, "shadowdns_config_last_reload_success_timestamp_seconds") \
            == first_success
        assert ask(served, f"app.{ZONE}") == before

        policy.write_text(good)
        served.server.signal(signal.SIGHUP)
        status = wait_status(http, served, "ready")
        assert status["status"] == "ready" and status["reload"]["ok"] is True, status
        assert http.get("/readyz").json()["degraded"] == {}
        assert metric(http, "shadowdns_config_reload_failures_total") == 1
        assert metric(http, "shadowdns_config_last_reload_success_timestamp_seconds") \
            > first_success


def test_a_refused_api_edit_leaves_the_server_ready(tmp_path: Path) -> None:
    """A policy the API refuses is never served and never written, so the server is not
    degraded by it; the status endpoint needs a token."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        policy = http.get(f"/api/v1/zones/{ZONE}/policy", headers=served.auth("reader"))
        assert policy.status_code == 200, policy.text
        response = http.put(f"/api/v1/zones/{ZONE}/policy", content=b"dis: [not, a, map]\n",
                            headers={**served.auth("operator"),
                                     "Content-Type": "application/yaml"})
        assert 400 <= response.status_code < 500, response.text
        status = http.get("/api/v1/status", headers=served.auth("reader")).json()
        assert status["status"] == "ready" and status["reload"]["ok"] is True, status
        assert http.get("/readyz").json()["status"] == "ready"
        assert http.get("/api/v1/status").status_code == 401


def test_an_edit_the_server_refuses_is_undone_and_leaves_it_ready(tmp_path: Path) -> None:
    """A CNAME at a DI's name is refused (409) and undone: the DI still answers over DNS and
    /readyz stays "ready", since the files again match what is served."""
    with served_api(tmp_path) as served, httpx.Client(base_url=served.url) as http:
        before = ask(served, f"app.{ZONE}")
        response = http.put(f"/api/v1/zones/{ZONE}/rrsets/app/CNAME",
                            json={"ttl": 30, "rdata": [f"www.{ZONE}"]},
                            headers=served.auth("operator"))
        assert response.status_code == 409, response.text
        assert ask(served, f"app.{ZONE}") == before
        ready = http.get("/readyz").json()
        assert ready["status"] == "ready" and ready["degraded"] == {}, ready
