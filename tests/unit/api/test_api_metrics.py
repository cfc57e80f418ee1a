"""/metrics: families read from the service at scrape time, named shadowdns_<part>_<what>."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from shadowdns.allocator.controller import Controller, ModelErrors
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.api.metrics import ServiceCollector
from shadowdns.api.server import is_loopback, plaintext_warning
from shadowdns.clock import SimulatedClock
from shadowdns.store import HealthState, ModelChoice
from shadowdns.store.sqlite import SQLiteStore
from tests.unit.api.support import ZONE, Api


def scrape(api: Api) -> dict[str, list[tuple[dict[str, str], float]]]:
    text = api.http.get("/metrics").text
    return {family.name: [(s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)}


def test_metrics_cover_queries_allocations_models_health_and_api(api: Api) -> None:
    """After a query, a model choice and a health change, each shows in its family."""
    api.ask(f"www.{ZONE}")
    api.ask(f"app.{ZONE}")
    now = time.time()
    api.in_store(api.service.store.write_model_choices,
                 [ModelChoice(f"app.{ZONE}", "eu-west", "ets", 0.5, now),
                  ModelChoice(f"app.{ZONE}", "us-east", "ets", 1.5, now)])
    api.in_store(api.service.store.set_health_state, HealthState("sb-ap-1", "down", now))
    api.get("/api/v1/zones")
    families = scrape(api)
    queries = {(labels["qtype"], labels["kind"], labels["region"]): value
               for labels, value in families["shadowdns_resolver_queries"]
               if labels.get("rcode") == "NOERROR"}
    assert queries[("A", "static", "-")] == 1
    assert queries[("A", "primary", "eu-west")] == 1
    assert ({}, 2.0) in families["shadowdns_resolver_answer_table_misses"]
    assert ({"model": "ets"}, 1.0) in families["shadowdns_predictor_forecast_error"]
    up = {labels["resource"]: value for labels, value in families["shadowdns_health_up"]}
    assert up["sb-ap-1"] == 0 and up["web-eu-1"] == 1
    assert ({"state": "ready"}, 0.0) in families["shadowdns_allocator_allocations"]
    assert ({"zone": ZONE}, 2026112401.0) in families["shadowdns_zones_serial"]
    requests = families["shadowdns_api_requests"]
    assert any(labels == {"method": "GET", "route": "/api/v1/zones", "status": "200"}
               for labels, _ in requests)
    assert all(name.startswith("shadowdns_") for name in families)


def test_control_plane_figures_are_read_at_scrape_time(api: Api) -> None:
    """Forecast error and band coverage per model, top-ups, misses and refits by reason come
    from the running controller when scraped; without one the counters read 0. Every
    family name is served once."""
    before = scrape(api)
    assert before["shadowdns_allocator_topups"] == [({}, 0.0)]
    assert before["shadowdns_allocator_forecast_relative_error"] == []
    controller = Controller(SQLiteStore(":memory:"), list, AllocatorSettings(), SimulatedClock())
    controller.topups = 2
    controller.book.miss_total = 7
    controller.book.refits = {"first": 3, "degraded": 1}
    controller.model_errors = {"ets": ModelErrors(4, 0.8, 0.9),
                               "seasonal_naive": ModelErrors(1, 1.0, 0.5)}
    api.service.control = controller
    families = scrape(api)
    assert families["shadowdns_allocator_topups"] == [({}, 2.0)]
    assert families["shadowdns_allocator_forecast_misses"] == [({}, 7.0)]
    assert sorted(families["shadowdns_allocator_refits"], key=str) == [
        ({"reason": "degraded"}, 1.0), ({"reason": "first"}, 3.0)]
    assert ({"model": "ets"}, 0.8) in families["shadowdns_allocator_forecast_relative_error"]
    assert ({"model": "seasonal_naive"}, 0.5) in \
        families["shadowdns_allocator_forecast_band_coverage"]
    names = [m.name for m in ServiceCollector(api.service).collect()]
    assert len(names) == len(set(names))


def test_plain_http_beyond_loopback_is_warned_about() -> None:
    """The warning fires for a non-loopback address without TLS only."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert plaintext_warning("127.0.0.1", tls=False) is None
    assert plaintext_warning("192.0.2.1", tls=True) is None
    warning = plaintext_warning("192.0.2.1", tls=False)
    assert warning is not None and "without TLS" in warning


# Families that exist only once their source exposes them (the engine's latency histogram,
# the health monitor's probe durations).
OPTIONAL = {"shadowdns_resolver_response_seconds", "shadowdns_health_probe_latency_seconds"}


def test_grafana_dashboard_uses_only_exposed_metrics(api: Api) -> None:
    """Every metric the Grafana dashboard queries is one /metrics serves (or an optional one)."""
    root = Path(__file__).resolve().parents[3]
    dashboard = json.loads((root / "docker" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(total|bucket|sum|count)$", "", name)
            for expr in exprs for name in re.findall(r"shadowdns_\w+", expr)}
    api.get("/api/v1/zones")
    exposed = set(scrape(api))
    assert used - exposed <= OPTIONAL, used - exposed - OPTIONAL
