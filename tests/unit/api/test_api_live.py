"""Allocations, forecasts, health and traffic over the API, read from and written to the store."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from shadowdns.store import DemandRow, Forecast, ForecastPoint, HealthState, ModelChoice
from tests.unit.api.support import ZONE, Api

APP = f"app.{ZONE}"
S_AP = "203.0.113.20"


def test_pin_and_release_a_shadow(api: Api) -> None:
    """A pin answers eu-west clients from the pinned standby at once; release undoes it."""
    pin = api.call("POST", "/api/v1/allocations/pins",
                   {"di": APP, "resource": "sb-ap-1", "region": "eu-west", "reason": "test"})
    assert pin.status_code == 201, pin.text
    allocation = pin.json()
    assert allocation["pinned"] is True and allocation["state"] == "ready"
    assert api.ask(APP) == [S_AP]
    again = api.call("POST", "/api/v1/allocations/pins",
                     {"di": APP, "resource": "sb-ap-1", "region": "eu-west"})
    assert again.status_code == 409
    active = api.get("/api/v1/allocations", di=APP)
    assert [a["id"] for a in active] == [allocation["id"]]
    released = api.call("DELETE", f"/api/v1/allocations/{allocation['id']}")
    assert released.status_code == 200 and released.json()["state"] == "released"
    assert api.ask(APP) == ["192.0.2.10"]
    assert api.get("/api/v1/allocations") == []
    history = api.get("/api/v1/allocations/history")
    assert [a["state"] for a in history] == ["released"]
    assert api.call("DELETE", f"/api/v1/allocations/{allocation['id']}").status_code == 409
    assert api.call("DELETE", "/api/v1/allocations/999").status_code == 404


def test_pin_of_unknown_things_names_each_bad_field(api: Api) -> None:
    """An unknown resource and region are both reported, by body path."""
    response = api.call("POST", "/api/v1/allocations/pins",
                        {"di": APP, "resource": "nope", "region": "mars"})
    assert response.status_code == 422
    assert sorted(p["path"] for p in response.json()["error"]["problems"]) == [
        "body.region", "body.resource"]


def test_generation_and_diff(api: Api) -> None:
    """The generation view counts active allocations; the diff lists those added since."""
    api.call("POST", "/api/v1/allocations/pins",
             {"di": APP, "resource": "sb-sa-1", "region": "sa-east", "state": "warming"})
    generation = api.get("/api/v1/allocations/generation")
    assert generation["active"] == 1 and generation["by_state"] == {"warming": 1}
    api.in_store(api.service.store.bump_generation)
    diff = api.get("/api/v1/allocations/diff", since_generation=0)
    assert diff["generation"] == 1
    assert diff["added"] == [] and diff["ended"] == []


def test_health_states_and_events_come_from_the_store(api: Api) -> None:
    """What the health monitor writes (states, events) is what the API shows."""
    now = time.time()
    api.in_store(api.service.store.set_health_state,
                 HealthState("web-us-1", "up", now - 60, "probe ok"))
    api.in_store(api.service.store.set_health_state,
                 HealthState("web-us-1", "down", now, "connect refused"))
    health = {h["resource"]: h for h in api.get("/api/v1/health")}
    assert health["web-us-1"]["probe_state"] == "down"
    assert health["web-us-1"]["state"] == "down"
    assert health["web-eu-1"]["probe_state"] is None and health["web-eu-1"]["state"] == "up"
    events = api.get("/api/v1/health/events", resource="web-us-1")
    assert [(e["old"], e["new"]) for e in events] == [(None, "up"), ("up", "down")]


def test_forecasts_vs_actuals_with_model_and_errors(api: Api) -> None:
    """A series shows its model, backtest error, points with bands, actuals and recent error."""
    now = time.time()
    past = int(now // 300 * 300) - 600
    store = api.service.store
    api.in_store(store.add_demand, [DemandRow(APP, "ap-east", past + i * 60, "primary", 10)
                                    for i in range(5)])
    api.in_store(store.rollup, now)
    api.in_store(store.write_forecasts, [Forecast(APP, "ap-east", "5m", now - 700, "ets", (
        ForecastPoint(past, 40.0, 60.0), ForecastPoint(past + 600, 55.0, 80.0)))])
    api.in_store(store.write_model_choices, [ModelChoice(APP, "ap-east", "ets", 0.42, now)])
    series = api.get("/api/v1/forecasts", di=APP)
    assert len(series) == 1
    one = series[0]
    assert (one["di"], one["region"], one["model"], one["model_error"]) == (
        APP, "ap-east", "ets", 0.42)
    assert one["actual"] == [{"ts": past, "queries": 50}]
    assert one["points"][0] == {"ts": past, "point": 40.0, "upper": 60.0}
    assert one["recent_error"] == 10.0


def test_traffic_per_di_and_region(api: Api) -> None:
    """Recent demand comes back per (DI, region) with its minute buckets."""
    minute = int(time.time() // 60 * 60) - 120
    api.in_store(api.service.store.add_demand, [DemandRow(APP, "eu-west", minute, "shadow", 7)])
    traffic = api.get("/api/v1/traffic", minutes=10)
    assert traffic == [{"di": APP, "region": "eu-west",
                        "points": [{"ts": minute, "queries": 7}]}]
    kinds = api.get("/api/v1/traffic/kinds")
    assert kinds["interval"] > 0 and isinstance(kinds["points"], list)


def test_deleting_a_di_retires_its_series_forecasts_and_allocations(api: Api) -> None:
    """After DELETE of a DI, its demand, forecasts, model choices and active allocations are
    gone from the API (and so from the dashboard's charts); other DIs keep theirs."""
    now = time.time()
    past = int(now // 300 * 300) - 600
    shop = f"shop.{ZONE}"
    store = api.service.store
    for di in (APP, shop):
        api.in_store(store.add_demand, [DemandRow(di, "ap-east", past + i * 60, "primary", 10)
                                        for i in range(5)])
        api.in_store(store.write_forecasts, [Forecast(di, "ap-east", "5m", now - 700, "ets", (
            ForecastPoint(past, 40.0, 60.0),))])
        api.in_store(store.write_model_choices, [ModelChoice(di, "ap-east", "ets", 0.4, now)])
    api.in_store(store.rollup, now)
    pin = api.call("POST", "/api/v1/allocations/pins",
                   {"di": APP, "resource": "sb-ap-1", "region": "eu-west"})
    assert pin.status_code == 201, pin.text
    assert {s["di"] for s in api.get("/api/v1/forecasts")} == {APP, shop}
    assert api.call("DELETE", f"/api/v1/zones/{ZONE}/dis/app").status_code == 204
    deadline = time.monotonic() + 5
    while api.get("/api/v1/allocations", di=APP):  # the store is told right after reload
        assert time.monotonic() < deadline, api.get("/api/v1/allocations")
        time.sleep(0.05)
    assert {s["di"] for s in api.get("/api/v1/forecasts")} == {shop}
    assert {s["di"] for s in api.get("/api/v1/traffic", minutes=30)} == {shop}
    assert api.in_store(store.read_model_choices, APP) == []
    assert [c.di for c in api.in_store(store.read_model_choices)] == [shop]
    history = api.get("/api/v1/allocations/history")
    assert [(a["di"], a["state"]) for a in history] == [(APP, "released")]


def test_health_summary_and_metrics_follow_health_changes(api: Api) -> None:
    """The per-zone counts (/api/v1/health/summary, shadowdns_health_resources) are kept
    per policy, not walked per request, yet a probe going down and up again shows in both
    at the next request; pages of /api/v1/health add up to the whole list."""
    def summary() -> dict[tuple[str, str, str], int]:
        return {(c["location"], c["role"], c["state"]): c["resources"]
                for c in api.get("/api/v1/health/summary")}

    def scraped() -> dict[tuple[str, str, str], float]:
        text = api.http.get("/metrics").text
        return {(s.labels["location"], s.labels["role"], s.labels["state"]): s.value
                for family in text_string_to_metric_families(text)
                if family.name == "shadowdns_health_resources" for s in family.samples}

    before = summary()
    assert before[("us-east", "primary", "up")] == 1
    assert ("us-east", "primary", "down") not in before
    assert sum(before.values()) == 5
    now = time.time()
    api.in_store(api.service.store.set_health_state,
                 HealthState("web-us-1", "down", now, "connect refused"))
    down = summary()
    assert ("us-east", "primary", "up") not in down
    assert down[("us-east", "primary", "down")] == 1
    assert scraped()[("us-east", "primary", "down")] == 1
    api.in_store(api.service.store.set_health_state,
                 HealthState("web-us-1", "up", now + 1, "probe ok"))
    assert summary() == before
    assert scraped()[("us-east", "primary", "up")] == 1
    whole = [h["resource"] for h in api.get("/api/v1/health")]
    pages = [h["resource"] for offset in range(0, 6, 2)
             for h in api.get("/api/v1/health", offset=offset, limit=2)]
    assert pages == whole and len(whole) == 5
    bad = api.http.get("/api/v1/health", headers=api.auth("reader"), params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.text
