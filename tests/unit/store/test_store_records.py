"""Zones, forecasts, model choices, health, API tokens and the audit log."""

from __future__ import annotations

import pytest

from shadowdns.errors import StoreError
from shadowdns.store.base import (
    ApiToken,
    AuditEntry,
    Forecast,
    ForecastPoint,
    HealthEvent,
    HealthState,
    ModelChoice,
    Store,
    ZoneRecord,
)

from .conftest import Backend


def test_upsert_zone_replaces_by_origin(store: Store) -> None:
    """One row per origin: a second upsert replaces file, serial and loaded_at."""
    store.upsert_zone(ZoneRecord("b.example.", "b.zone", 1, 10.0))
    store.upsert_zone(ZoneRecord("a.example.", None, 7, 11.0))
    store.upsert_zone(ZoneRecord("b.example.", "b2.zone", 2, 12.0))
    assert store.list_zones() == [
        ZoneRecord("a.example.", None, 7, 11.0),
        ZoneRecord("b.example.", "b2.zone", 2, 12.0),
    ]


def _forecast(di: str, made_at: float, points: list[int], model: str = "ets") -> Forecast:
    return Forecast(
        di,
        "EU",
        "5m",
        made_at,
        model,
        tuple(ForecastPoint(ts, float(ts), float(ts) * 1.5) for ts in points),
    )


def test_write_forecasts_replaces_the_previous_forecast_of_each_series(
    store: Store,
) -> None:
    """A new forecast of a series replaces its old points from its first bucket on; the
    points of earlier buckets stay (what was forecast for them), the series is read with
    the newest forecast's time and model, and other series are kept."""
    store.write_forecasts([_forecast("a.", 1.0, [300, 600, 900]), _forecast("b.", 1.0, [300])])
    assert store.write_forecasts([_forecast("a.", 2.0, [600, 1200], model="lstm")]) == 2
    assert store.read_forecasts("5m", past=True) == [
        _forecast("a.", 2.0, [300, 600, 1200], model="lstm"),
        _forecast("b.", 1.0, [300]),
    ]
    assert store.read_forecasts("5m") == [
        _forecast("a.", 2.0, [600, 1200], model="lstm"),
        _forecast("b.", 1.0, [300]),
    ]
    assert store.read_forecasts("5m", di="b.", region="EU") == [_forecast("b.", 1.0, [300])]
    assert store.read_forecasts("hour") == []


def test_a_failed_forecast_batch_writes_nothing(store: Store, backend: Backend) -> None:
    """Two points for the same bucket fail the whole batch; the old forecast remains."""
    store.write_forecasts([_forecast("a.", 1.0, [300])])
    before = backend.dump()
    with pytest.raises(StoreError):
        store.write_forecasts([_forecast("a.", 2.0, [600]), _forecast("b.", 2.0, [300, 300])])
    assert backend.dump() == before


def test_model_choices_are_one_per_series(store: Store) -> None:
    """The latest choice of a series replaces the previous one."""
    store.write_model_choices([ModelChoice("a.", "EU", "naive", 1.2, 1.0)])
    store.write_model_choices(
        [ModelChoice("a.", "EU", "ets", 0.8, 2.0), ModelChoice("b.", "NA", "lstm", 0.5, 2.0)]
    )
    assert store.read_model_choices() == [
        ModelChoice("a.", "EU", "ets", 0.8, 2.0),
        ModelChoice("b.", "NA", "lstm", 0.5, 2.0),
    ]
    assert store.read_model_choices(di="b.") == [ModelChoice("b.", "NA", "lstm", 0.5, 2.0)]


def test_health_state_changes_are_logged_and_repeats_are_not(store: Store) -> None:
    """A change updates the state and appends an event; repeating a state writes nothing
    and keeps the original `since`."""
    assert store.set_health_state(HealthState("r1", "up", 10.0, "probe ok"))
    assert not store.set_health_state(HealthState("r1", "up", 20.0, "probe ok"))
    assert store.set_health_state(HealthState("r1", "down", 30.0, "timeout"))
    assert store.health_states() == [HealthState("r1", "down", 30.0, "timeout")]
    assert store.health_events() == [
        HealthEvent("r1", 10.0, None, "up", "probe ok"),
        HealthEvent("r1", 30.0, "up", "down", "timeout"),
    ]
    assert store.health_events(since=20.0) == [HealthEvent("r1", 30.0, "up", "down", "timeout")]
    assert store.health_events(resource="r2") == []


def test_the_health_event_log_keeps_only_the_newest_events(backend: Backend) -> None:
    """Beyond health_event_limit events, the oldest are dropped."""
    store = backend.open(health_event_limit=3)
    for i in range(6):
        store.set_health_state(HealthState("r1", "up" if i % 2 else "down", float(i)))
    assert [e.ts for e in store.health_events()] == [3.0, 4.0, 5.0]
    assert [e.ts for e in store.health_events(limit=2)] == [4.0, 5.0]


def test_api_tokens_are_unique_by_id_and_hash(store: Store) -> None:
    """Tokens can be added, found by id or hash, listed and deleted; duplicates fail."""
    token = ApiToken("t1", "ops", "admin", "h1", 5.0)
    store.add_token(token)
    for duplicate in (
        ApiToken("t1", "x", "viewer", "h2", 6.0),
        ApiToken("t2", "x", "v", "h1", 6.0),
    ):
        with pytest.raises(StoreError):
            store.add_token(duplicate)
    assert store.get_token("t1") == token
    assert store.get_token_by_hash("h1") == token
    assert store.list_tokens() == [token]
    assert store.delete_token("t1")
    assert not store.delete_token("t1")
    assert store.get_token("t1") is None


def test_audit_log_reads_back_in_order(store: Store) -> None:
    """Entries come back oldest first, limited to the newest `limit` and to ts >= since."""
    entries = [AuditEntry(float(i), "t1", "update", f"di/{i}", "{}", '{"x":1}') for i in range(5)]
    for entry in entries:
        store.add_audit(entry)
    assert store.list_audit() == entries
    assert store.list_audit(limit=2) == entries[3:]
    assert store.list_audit(since=1.0, limit=10) == entries[1:]


def test_health_observations_keep_each_nodes_latest_view(store: Store) -> None:
    """Each node's observation of a resource replaces its previous one; `since` filters
    out stale ones; other nodes' views are kept."""
    from shadowdns.store import HealthObservation

    store.record_health_observation(HealthObservation("web-1", "node-a", "up", 100.0))
    store.record_health_observation(HealthObservation("web-1", "node-b", "down", 105.0))
    store.record_health_observation(HealthObservation("web-1", "node-a", "down", 110.0))
    seen = store.health_observations()
    assert [(o.node, o.state, o.ts) for o in seen] == [("node-a", "down", 110.0),
                                                       ("node-b", "down", 105.0)]
    assert [o.node for o in store.health_observations(since=108.0)] == ["node-a"]


def test_retention_drops_forecast_points_of_buckets_past_it(store: Store) -> None:
    """Forecast points older than `Retention.forecasts` go with the retention run."""
    keep = store.retention.forecasts
    store.write_forecasts([_forecast("a.", 1.0, [300, 600, 900])])
    store.apply_retention(600 + keep)
    assert store.read_forecasts("5m", past=True) == [_forecast("a.", 1.0, [600, 900])]
