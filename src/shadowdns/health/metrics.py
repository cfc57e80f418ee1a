"""Prometheus collectors for health and allocation, read at scrape time.

They hold a reference to the live objects (`HealthMonitor`, `Controller`) and build the
metric families when scraped, so nothing is updated on the hot path. Register them on the
registry the API serves: `registry.register(HealthCollector(service.health))`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shadowdns.health.monitor import HealthMonitor

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shadowdns.allocator.controller import Controller


class HealthCollector(Collector):
    """`shadowdns_health_up`, `_probes_total`, `_failures_total`, `_state_since_seconds`."""

    def __init__(self, monitor: HealthMonitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("shadowdns_health_up",
                               "1 when the resource is up (or unknown), 0 when down",
                               labels=["resource", "state"])
        since = GaugeMetricFamily("shadowdns_health_state_since_seconds",
                                  "epoch seconds of the last state change", labels=["resource"])
        probes = CounterMetricFamily("shadowdns_health_probes", "probes run",
                                     labels=["resource"])
        fails = CounterMetricFamily("shadowdns_health_consecutive_failures",
                                    "failed probes in a row", labels=["resource"])
        for rid, tracker in sorted(self.monitor.trackers.items()):
            up.add_metric([rid, tracker.state], 0.0 if tracker.state == "down" else 1.0)
            since.add_metric([rid], tracker.since)
            probes.add_metric([rid], float(tracker.probes))
            fails.add_metric([rid], float(tracker.failures))
        yield from (up, since, probes, fails)


class AllocatorCollector(Collector):
    """Runs, generations, misses, top-ups and per-series forecast error of the allocator."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterable[Metric]:
        c = self.controller
        for name, value, text in (
            ("shadowdns_allocator_runs", c.runs, "allocation runs"),
            ("shadowdns_allocator_allocations", c.allocations_total, "shadows allocated"),
            ("shadowdns_allocator_releases", c.releases_total, "shadows released"),
            ("shadowdns_allocator_forecast_misses", c.book.miss_total,
             "buckets whose demand exceeded the forecast's upper band"),
            ("shadowdns_allocator_topups", c.topups, "reactive top-ups after K misses"),
        ):
            family = CounterMetricFamily(name, text)
            family.add_metric([], float(value))
            yield family
        error = GaugeMetricFamily("shadowdns_allocator_forecast_relative_error",
                                  "rolling MAE of the model over seasonal-naive's",
                                  labels=["di", "region"])
        coverage = GaugeMetricFamily("shadowdns_allocator_forecast_band_coverage",
                                     "share of buckets at or below the upper band",
                                     labels=["di", "region"])
        for (di, region), figures in sorted(c.book.errors().items()):
            error.add_metric([di, region], figures["relative"])
            coverage.add_metric([di, region], figures["coverage"])
        yield from (error, coverage)
