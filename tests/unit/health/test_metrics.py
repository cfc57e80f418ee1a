"""Health and allocator metrics are read from the live objects at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from shadowdns.allocator.controller import Controller
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.clock import SimulatedClock
from shadowdns.health.metrics import AllocatorCollector, HealthCollector
from shadowdns.health.monitor import HealthMonitor
from shadowdns.health.state import HealthTracker
from shadowdns.store.sqlite import SQLiteStore


async def _write(_: object) -> bool:
    return True


def test_scrape_shows_current_state() -> None:
    """A resource that went down is exported as shadowdns_health_up 0 with its state;
    allocator counters appear under shadowdns_allocator_*."""
    monitor = HealthMonitor(dict, SimulatedClock(), _write)
    tracker = HealthTracker("s-1", rise=1, fall=1)
    tracker.record(False, 5.0)
    monitor.trackers["s-1"] = tracker
    controller = Controller(SQLiteStore(":memory:"), list, AllocatorSettings(), SimulatedClock())
    registry = CollectorRegistry()
    registry.register(HealthCollector(monitor))
    registry.register(AllocatorCollector(controller))
    text = generate_latest(registry).decode()
    assert 'shadowdns_health_up{resource="s-1",state="down"} 0.0' in text
    assert 'shadowdns_health_state_since_seconds{resource="s-1"} 5.0' in text
    assert "shadowdns_allocator_runs_total 0.0" in text
