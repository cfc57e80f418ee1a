"""Prometheus metrics: a collector that reads the running service at scrape time.

Nothing on the query path calls prometheus-client: the engine keeps plain counters (per
qtype, rcode, answer kind and region; answer-table hits and misses) and this collector turns
them into metric families when /metrics is scraped. What lives in the store (allocations,
model errors, health) is read once per scrape on the store's thread into a `StoreView`
before the registry renders. Names follow ``shadowdns_<component>_<what>_<unit>``.
API requests are counted by a middleware with ordinary prometheus-client metrics on the
same registry (never the global one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import dns.rcode
import dns.rdatatype
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shadowdns.gcwatch import WATCH
from shadowdns.health.summary import PER_RESOURCE_LIMIT, HealthSummaries, effective_state
from shadowdns.store import HealthState, Store

if TYPE_CHECKING:
    from shadowdns.allocator.controller import Controller
    from shadowdns.fleet import DemandOutbox
    from shadowdns.health.monitor import HealthMonitor
    from shadowdns.resolver.counters import DemandCounters
    from shadowdns.resolver.engine import QueryEngine
    from shadowdns.resolver.rrl import RateLimiter
    from shadowdns.resolver.snapshot import Config
    from shadowdns.runtime import ReloadStatus
    from shadowdns.upkeep import DemandUpkeep


class MetricsSource(Protocol):
    """What the collector reads from the running service at scrape time."""

    @property
    def engine(self) -> QueryEngine: ...
    @property
    def generation(self) -> int: ...  # of the answer snapshot served
    @property
    def counters(self) -> DemandCounters: ...
    @property
    def loaded(self) -> Config: ...
    @property
    def reload_status(self) -> ReloadStatus: ...
    @property
    def outbox(self) -> DemandOutbox: ...  # demand rows waiting for the store
    @property
    def upkeep(self) -> DemandUpkeep: ...
    # The parts that run only where configured (None elsewhere):
    @property
    def rrl(self) -> RateLimiter | None: ...
    @property
    def control(self) -> Controller | None: ...
    @property
    def health(self) -> HealthMonitor | None: ...


@dataclass(frozen=True, slots=True)
class StoreView:
    """What the collector needs from the store, read on the store's thread."""

    generation: int = 0
    allocations: Mapping[str, int] = field(default_factory=dict)
    model_errors: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    health: tuple[HealthState, ...] = ()
    read_at: float = 0.0
    ok: bool = False


def read_store_view(store: Store) -> StoreView:
    allocations: dict[str, int] = {}
    for a in store.list_allocations(True, None):
        allocations[a.state] = allocations.get(a.state, 0) + 1
    errors: dict[str, list[float]] = {}
    for c in store.read_model_choices(None):
        errors.setdefault(c.model, []).append(c.error)
    model_errors = {}
    for model, values in errors.items():
        finite = [v for v in values if v == v and abs(v) != float("inf")]
        model_errors[model] = (len(values), sum(finite) / len(finite) if finite else float("nan"))
    return StoreView(generation=store.current_generation(), allocations=allocations,
                     model_errors=model_errors, health=tuple(store.health_states()),
                     read_at=time.time(), ok=True)


def _qtype(value: int) -> str:
    return "-" if value == 0 else dns.rdatatype.to_text(dns.rdatatype.RdataType.make(value))


def _rcode(value: int) -> str:
    try:
        return str(dns.rcode.to_text(dns.rcode.Rcode(value)))
    except ValueError:
        return str(value)


class ServiceCollector(Collector):
    """Metric families of one running service, computed when scraped."""

    def __init__(self, service: MetricsSource, summaries: HealthSummaries | None = None) -> None:
        self.service = service
        self.view = StoreView()
        self.summaries = summaries or HealthSummaries()

    def collect(self) -> Iterator[Metric]:
        yield from self._resolver()
        yield from self._zones()
        yield from self._store()
        yield from self._demand()
        yield from self._control()
        yield from self._health()
        yield from self._gc()

    def _gc(self) -> Iterator[Metric]:
        pauses = HistogramMetricFamily(
            "shadowdns_process_gc_pause_seconds",
            "cyclic garbage collections and how long each paused the process (answers too)",
            labels=["generation"])
        for generation in (0, 1, 2):
            buckets, total = WATCH.histogram(generation)
            pauses.add_metric([str(generation)], buckets, total)
        yield pauses

    def _resolver(self) -> Iterator[Metric]:
        engine = self.service.engine
        queries = CounterMetricFamily(
            "shadowdns_resolver_queries", "DNS queries answered, by qtype, rcode, answer kind "
            "(shadow, primary, fallback, nodata, static; slow = parsed the long way) and region",
            labels=["qtype", "rcode", "kind", "region"])
        stats = getattr(engine, "query_stats", None)
        if stats is not None:
            for (qtype, rcode, kind, region), count in stats():
                queries.add_metric([_qtype(qtype), _rcode(rcode), kind, region], count)
        yield queries
        yield CounterMetricFamily("shadowdns_resolver_answer_table_hits",
                                  "queries answered from a precompiled template",
                                  value=engine.stats_hits)
        yield CounterMetricFamily("shadowdns_resolver_answer_table_misses",
                                  "queries that compiled a new template",
                                  value=engine.stats_misses)
        yield CounterMetricFamily("shadowdns_resolver_slow_path",
                                  "queries parsed with dnspython (unusual shapes, errors)",
                                  value=engine.stats_slow)
        yield GaugeMetricFamily("shadowdns_resolver_answer_table_entries",
                                "templates in the current answer table (a DI's own A and "
                                "AAAA: one compact entry)", value=engine.table.size)
        yield CounterMetricFamily(
            "shadowdns_resolver_answer_table_rebuilds", "times the whole answer table was "
            "dropped to be compiled again (a zone file, key or region map change); live "
            "changes and edits of DI entries drop only the answers of the DIs they touch",
            value=engine.rebuilds)
        yield GaugeMetricFamily("shadowdns_resolver_snapshot_generation",
                                "generation of the answer snapshot being served",
                                value=self.service.generation)
        yield GaugeMetricFamily("shadowdns_resolver_answer_table_questions",
                                "questions compiled in the answer table (all shapes; a DI's "
                                "A and AAAA count two)",
                                value=len(engine.table.base) + 2 * len(engine.table.compact))
        yield CounterMetricFamily(
            "shadowdns_resolver_demand_capped", "queries answered but not counted as demand: "
            "their client prefix reached --demand-prefix-cap for that DI and region this "
            "minute", value=self.service.counters.capped)
        rrl = self.service.rrl
        if rrl is not None:
            limited = CounterMetricFamily(
                "shadowdns_rrl_limited", "UDP replies held back by response rate limiting",
                labels=["action"])
            limited.add_metric(["dropped"], rrl.dropped)
            limited.add_metric(["slipped"], rrl.slipped)
            limited.add_metric(["dry_run"], rrl.would_limit)
            yield limited
        latency = getattr(engine, "latency_histogram", None)
        if latency is not None:  # (bucket upper bounds, cumulative counts, sum) if provided
            bounds, counts, total = latency()
            buckets = [(str(b), c) for b, c in zip(bounds, counts, strict=False)]
            buckets.append(("+Inf", counts[-1] if counts else 0))
            yield HistogramMetricFamily("shadowdns_resolver_response_seconds",
                                        "time to answer a query", buckets=buckets,
                                        sum_value=total)

    def _zones(self) -> Iterator[Metric]:
        loaded = self.service.loaded
        serial = GaugeMetricFamily("shadowdns_zones_serial", "SOA serial of each served zone",
                                   labels=["zone"])
        dis = GaugeMetricFamily("shadowdns_zones_dis", "DIs declared per zone", labels=["zone"])
        for origin, zone in loaded.zones.items():
            serial.add_metric([origin.to_text()], zone.serial)
            policy = loaded.policies.get(origin)
            dis.add_metric([origin.to_text()], 0 if policy is None else len(policy.dis))
        yield GaugeMetricFamily("shadowdns_zones_loaded", "zones being served",
                                value=len(loaded.zones))
        reload = self.service.reload_status
        yield CounterMetricFamily("shadowdns_config_reload_failures",
                                  "reloads refused (the previous configuration is served)",
                                  value=reload.failures)
        yield GaugeMetricFamily("shadowdns_config_last_reload_success_timestamp_seconds",
                                "when a load of zones and policies last worked",
                                value=reload.last_success)
        yield GaugeMetricFamily("shadowdns_config_last_reload_successful",
                                "1 when the last reload worked",
                                value=0 if reload.error else 1)
        yield serial
        yield dis

    def _store(self) -> Iterator[Metric]:
        view = self.view
        yield GaugeMetricFamily("shadowdns_store_up", "whether the last read of the store worked",
                                value=1 if view.ok else 0)
        yield GaugeMetricFamily("shadowdns_allocator_generation",
                                "the allocator's current generation", value=view.generation)
        states = GaugeMetricFamily("shadowdns_allocator_allocations",
                                   "active allocations by state", labels=["state"])
        for state in ("warming", "ready", "draining"):
            states.add_metric([state], view.allocations.get(state, 0))
        yield states
        error = GaugeMetricFamily("shadowdns_predictor_forecast_error",
                                  "mean error recorded with the model choice of the series "
                                  "each model forecasts (store: every node of a fleet)",
                                  labels=["model"])
        series = GaugeMetricFamily("shadowdns_predictor_series",
                                   "demand series forecast by each model", labels=["model"])
        for model, (count, mean) in sorted(view.model_errors.items()):
            error.add_metric([model], mean)
            series.add_metric([model], count)
        yield error
        yield series

    def _demand(self) -> Iterator[Metric]:
        """The demand flush and its upkeep: a store refusing counts shows here first."""
        outbox = self.service.outbox
        upkeep = self.service.upkeep
        yield GaugeMetricFamily("shadowdns_store_demand_buffered_rows",
                                "demand rows waiting for the store (kept across failed flushes)",
                                value=outbox.rows)
        yield CounterMetricFamily("shadowdns_store_demand_dropped_rows",
                                  "demand rows dropped because the buffer was full",
                                  value=outbox.dropped)
        yield CounterMetricFamily("shadowdns_store_demand_flush_failures",
                                  "demand flushes the store refused (the rows stay buffered)",
                                  value=outbox.failures)
        yield CounterMetricFamily("shadowdns_store_rollups",
                                  "demand rollups and retention runs that worked",
                                  value=upkeep.runs)
        yield CounterMetricFamily("shadowdns_store_rollup_failures",
                                  "demand rollups or retention runs that failed",
                                  value=upkeep.failures)

    def _control(self) -> Iterator[Metric]:
        """The allocation loop of this process (zeros where it does not run it)."""
        c = self.service.control
        for name, value, text in (
            ("shadowdns_allocator_runs", c.runs if c else 0, "allocation runs"),
            ("shadowdns_allocator_shadows_allocated", c.allocations_total if c else 0,
             "shadows allocated"),
            ("shadowdns_allocator_shadows_released", c.releases_total if c else 0,
             "shadows released"),
            ("shadowdns_allocator_forecast_misses", c.book.miss_total if c else 0,
             "buckets whose demand exceeded the forecast's upper band"),
            ("shadowdns_allocator_topups", c.topups if c else 0,
             "reactive top-ups after a streak of forecast misses"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        hook_failures = CounterMetricFamily(
            "shadowdns_allocator_hook_failures",
            "warm-up and drain hooks that failed after every retry", labels=["event"])
        failures = c.hooks.failures if c else {}
        for event in ("warmup", "drain"):
            hook_failures.add_metric([event], failures.get(event, 0))
        yield hook_failures
        yield GaugeMetricFamily("shadowdns_allocator_warmup_blocked",
                                "shadows held out of answers because their warm-up hook "
                                "failed", value=len(c.warmup_failures) if c else 0)
        refits = CounterMetricFamily("shadowdns_allocator_refits",
                                     "model fits applied, by why they ran", labels=["reason"])
        for reason, count in sorted((c.book.refits if c else {}).items()):
            refits.add_metric([reason], count)
        yield refits
        relative = GaugeMetricFamily(
            "shadowdns_allocator_forecast_relative_error",
            "rolling MAE over seasonal-naive MAE, mean over the series each model forecasts "
            "(below 1 beats last season)", labels=["model"])
        coverage = GaugeMetricFamily(
            "shadowdns_allocator_forecast_band_coverage",
            "share of buckets at or below the forecast's upper band, per model",
            labels=["model"])
        for model, figures in (c.model_errors if c else {}).items():
            relative.add_metric([model], figures.relative)
            coverage.add_metric([model], figures.coverage)
        yield relative
        yield coverage

    def _health(self) -> Iterator[Metric]:
        probed = {h.resource: h for h in self.view.health}
        up = GaugeMetricFamily("shadowdns_health_up",
                               "1 when answers may use the resource (override applied)",
                               labels=["zone", "resource", "location", "role"])
        probe = GaugeMetricFamily("shadowdns_health_probe_up",
                                  "1 when the probes last saw the resource up",
                                  labels=["resource"])
        override = GaugeMetricFamily("shadowdns_health_override",
                                     "operator override (1 for the override in force)",
                                     labels=["resource", "override"])
        policies = self.service.loaded.policies
        for origin, policy in policies.items():
            # one by one only where it says something the counts below do not (at most
            # PER_RESOURCE_LIMIT, or the checked and overridden ones): a scrape of five
            # million resources would walk them all on the event loop
            for res in self.summaries.listed(origin, policy, PER_RESOURCE_LIMIT):
                h = probed.get(res.id)
                state = effective_state(res, None if h is None else h.state)
                up.add_metric([origin.to_text(), res.id, res.location, res.role],
                              1 if state == "up" else 0)
                override.add_metric([res.id, res.override], 1)
        for rid, h in sorted(probed.items()):
            probe.add_metric([rid], 1 if h.state == "up" else 0)
        counted = GaugeMetricFamily(
            "shadowdns_health_resources", "resources by zone, location, role and effective "
            "state (override applied), from per-policy counts",
            labels=["zone", "location", "role", "state"])
        states = {rid: h.state for rid, h in probed.items()}
        for labels, count in sorted(self.summaries.counts(policies, states).items()):
            counted.add_metric(list(labels), count)
        yield up
        yield probe
        yield override
        yield counted
        monitor = self.service.health
        if monitor is not None:
            gauge = GaugeMetricFamily("shadowdns_health_probe_latency_seconds",
                                      "duration of each resource's last probe",
                                      labels=["resource"])
            for rid, seconds in sorted(monitor.latencies().items()):
                gauge.add_metric([rid], seconds)
            yield gauge


class ApiMetrics:
    """Request counters of the API itself, on the service's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("shadowdns_api_requests", "API requests answered",
                                ["method", "route", "status"], registry=registry)
        self.duration = Histogram("shadowdns_api_request_duration_seconds",
                                  "time to answer an API request", ["method", "route"],
                                  registry=registry,
                                  buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.login_failures = Counter(
            "shadowdns_api_login_failures", "requests refused for a missing, malformed or "
            "unknown token (result: unauthorized = 401, limited = 429 after too many)",
            ["result"], registry=registry)
