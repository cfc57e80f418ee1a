"""Replaying a demand trace through the real control loop on a simulated clock.

`simulate` feeds a trace (`timestamp,di,region,queries`) bucket by bucket into an
in-memory SQLite store and drives the real `Controller` (demand book, predictor fits,
planner, solver, generations, state machine) with a `SimulatedClock`. At each bucket end
the allocator has seen only the past. A shadow allocated at t is ready at t + warm-up and
serves clients from t + warm-up + TTL = t + lead time (their caches drained).

Policies (the allocator code is the same for the three in the middle; only what it is told
about future demand differs):

* `none` — primaries only;
* `reactive` — no forecast: the planned demand is the last observed bucket;
* `predictive` — the allocator as built (the forecast's probability of crossing the
  threshold, its upper quantile for sizing, and observed);
* `oracle` — the forecast is the future itself: the best this allocator can do with this
  lead time;
* `always` — a shadow in every region for the whole trace.

Without a policy file every DI's primary sits at a *home* location outside the trace's
regions, each region has one standby (capacity unbounded, warm-up = lead time - TTL), and
the threshold is the same for every region of a DI.

`multi_region` turns one real single-series trace into a multi-region one, and
`apps_to_regions` a trace of many apps without regions (the Azure Functions one) into one
DI per app in a region of its own (see their docstrings for how).
"""

from __future__ import annotations

import asyncio
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

import dns.name
import numpy as np

from shadowdns.allocator.controller import Controller
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.clock import SimulatedClock
from shadowdns.predictor.series import FloatArray, Series
from shadowdns.store.base import DemandRow
from shadowdns.zones.policy import (
    DI,
    AllocationPolicy,
    Location,
    Policy,
    Regions,
    Resource,
)

PolicyName = Literal["none", "reactive", "predictive", "oracle", "always"]
POLICIES: tuple[PolicyName, ...] = ("none", "reactive", "predictive", "oracle", "always")
SIM_ORIGIN = "sim."
HOME = "home"


@dataclass(frozen=True, slots=True)
class RegionSpec:
    """A client region of the synthetic multi-region trace."""

    name: str
    lat: float
    lon: float
    utc_offset: float  # hours
    weight: float  # share of the DI's users
    day_shift: int  # days of the source taken for this region (decorrelates noise)


REGIONS: tuple[RegionSpec, ...] = (
    RegionSpec("us-east", 38.9, -77.0, -5.0, 0.35, 0),
    RegionSpec("eu-west", 50.1, 8.7, 1.0, 0.30, 1),
    RegionSpec("ap-east", 35.7, 139.7, 9.0, 0.20, 2),
    RegionSpec("sa-east", -23.5, -46.6, -3.0, 0.15, 3),
)
HOME_LOCATION = Location(HOME, 0.0, -150.0)  # mid-Pacific: far from every region


def multi_region(series: Series, di: str,
                 regions: Sequence[RegionSpec] = REGIONS) -> list[Series]:
    """One real series → one series per region, as if the same service had users there.

    The source's naive timestamps are its local time of day. Region r at UTC time u sees
    `weight_r × source(at local time u + utc_offset_r, day_shift_r days later)`: the
    source's daily (and weekly) shape at each region's own local time (peaks move around
    the globe), each region from different days of the source (its own noise and bursts),
    scaled by the region's share of users. The result covers the span every region has
    data for. A source too short to keep half its length with the full day shifts gets
    smaller ones (none at the end: regions then share days). Series are keyed
    `di|region`.
    """
    step = series.step
    n = len(series.values)
    per_day = 86400 // step
    most = max((spec.day_shift for spec in regions), default=0)
    for cap in range(most, -1, -1):
        lags = [round(spec.utc_offset * 3600 / step) + min(spec.day_shift, cap) * per_day
                for spec in regions]
        lo = max(0, -min(lags))
        hi = min(n, n - max(lags))
        if hi - lo >= (1 if cap == 0 else n // 2):
            break
    else:
        hi = lo = 0
    if hi - lo < 1:
        raise ValueError(f"{series.key}: {n} steps of {step} s are too short to shift to "
                         "every region's local time")
    return [Series(f"{di}|{spec.name}",
                   (series.values[lo + lag: hi + lag] * spec.weight).astype(np.float64),
                   step, series.start + lo)
            for spec, lag in zip(regions, lags, strict=True)]


def apps_to_regions(apps: Sequence[Series], origin: str = SIM_ORIGIN,
                    regions: Sequence[RegionSpec] = REGIONS) -> list[Series]:
    """Many apps without regions → one DI per app, each in one region.

    App `a` becomes the DI `a.<origin>`; its users are all in region
    `regions[crc32(a) % len(regions)]` (deterministic, about a quarter of the apps each);
    its series is the app's own, unscaled, so short bursts of a few invocations keep
    their counts. Unlike `multi_region` nothing is shifted: a one-day trace has no other
    days to take, and a timer fires at the same instant for every user.
    """
    out = []
    for app in apps:
        name = label(app.key)
        spec = regions[zlib.crc32(name.encode()) % len(regions)]
        di = dns.name.from_text(name, dns.name.from_text(origin)).to_text()
        out.append(Series(f"{di}|{spec.name}", app.values, app.step, app.start))
    return out


def label(text: str) -> str:
    """A DNS label from a series or app name."""
    text = re.sub(r"[^a-z0-9-]+", "-", text.rsplit("/", 1)[-1].lower()).strip("-")[:60]
    return text or "trace"


def rebucket(series: Series, bucket: int) -> Series:
    """The series on a grid of `bucket` seconds: coarser steps split evenly, finer summed."""
    if series.step == bucket:
        return series
    if series.step > bucket:
        if series.step % bucket:
            raise ValueError(f"step {series.step}s is not a multiple of bucket {bucket}s")
        k = series.step // bucket
        return Series(series.key, np.repeat(series.values / k, k), bucket, series.start * k)
    if bucket % series.step:
        raise ValueError(f"bucket {bucket}s is not a multiple of step {series.step}s")
    k = bucket // series.step
    skip = (-series.start) % k
    values = series.values[skip:]
    values = values[: len(values) // k * k].reshape(-1, k).sum(axis=1)
    return Series(series.key, values, bucket, (series.start + skip) // k)


def split_key(key: str) -> tuple[str, str]:
    di, _, region = key.partition("|")
    return dns.name.from_text(di).to_text(), region


def threshold_for(spec: str, values: Sequence[FloatArray]) -> float:
    """A number, or `pNN`: the NN-th percentile of the DI's bucket values (all regions),
    at least one query — a DI idle most of the time (most Azure apps) has a percentile of
    zero, and a threshold of zero would want a shadow for no demand and never let it go."""
    text = spec.strip().lower()
    if text.startswith("p"):
        pooled = np.concatenate([np.asarray(v) for v in values])
        return max(1.0, float(np.percentile(pooled, float(text[1:]))))
    return float(text)


def default_policy(dis: Mapping[str, tuple[str, ...]], thresholds: Mapping[str, float],
                   lead: float, ttl: int, min_hold: float, model: str,
                   max_shadows: int | None = None, quantile: float = 0.9) -> Policy:
    """Primaries at home, one unbounded standby per region (warm-up = lead - TTL)."""
    regions = sorted({r for rs in dis.values() for r in rs})
    known = {spec.name: spec for spec in REGIONS}
    locations = {HOME: HOME_LOCATION}
    for i, name in enumerate(regions):
        spec = known.get(name)
        locations[name] = (Location(name, spec.lat, spec.lon) if spec is not None
                           else Location(name, -60.0 + (i * 37) % 120, -170.0 + i * 53 % 340))
    resources = {"primary-home": Resource("primary-home", HOME, "primary", address="192.0.2.1",
                                          capacity=math.inf)}
    for i, name in enumerate(regions):
        rid = f"sb-{name}"
        resources[rid] = Resource(rid, name, "standby", address=f"198.51.100.{i + 1}",
                                  capacity=1e15, warmup=max(0.0, lead - ttl))
    origin = dns.name.from_text(SIM_ORIGIN)
    out_dis: dict[dns.name.Name, DI] = {}
    for di_text in dis:
        di_name = dns.name.from_text(di_text)
        standby = tuple(f"sb-{r}" for r in regions)
        out_dis[di_name] = DI(di_name, ("primary-home",), standby, ttl=ttl,
                              policy=AllocationPolicy(
                               model=model, threshold=thresholds[di_text], lead_time=lead,
                               max_shadows=len(regions) if max_shadows is None else max_shadows,
                               min_hold=min_hold, quantile=quantile))
    return Policy(origin, locations, Regions(default=HOME), resources, out_dis, "<simulate>")


async def _run(
    series: Sequence[Series], policy_name: PolicyName, policy: Policy, bucket: int,
    settings: AllocatorSettings, executor: Executor | None,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    from shadowdns.store.sqlite import SQLiteStore

    keys = [split_key(s.key) for s in series]
    first = min(s.start for s in series)
    last = max(s.start + len(s.values) for s in series)
    n = last - first
    truth = np.zeros((len(series), n))
    for row, s in enumerate(series):
        truth[row, s.start - first: s.start - first + len(s.values)] = s.values
    truth = np.round(truth)
    index = {k: i for i, k in enumerate(keys)}
    starts = (first + np.arange(n)) * float(bucket)
    total = float(truth.sum())
    end_time = (first + n) * float(bucket)
    ttl = {v.name.to_text(): v.ttl for v in policy.dis.values()}

    if policy_name in ("none", "always"):
        everywhere = policy_name == "always"
        figures = _figures(total, float(truth.sum()) if everywhere else 0.0,
                           (len(series) * n * bucket / 60.0) if everywhere else 0.0,
                           len(series) if everywhere else 0, 0, n, bucket)
        by_di: dict[str, float] = {}
        for di, _ in keys:
            by_di[di] = by_di.get(di, 0.0) + (n * bucket / 60.0 if everywhere else 0.0)
        figures["di_shadow_minutes"] = {di: round(m, 1) for di, m in by_di.items()}
        return figures

    def oracle(key: tuple[str, str], since: float, until: float) -> float:
        row = index.get(key)
        if row is None:
            return 0.0
        lo = max(0, math.floor(since / bucket) - first)
        hi = min(n, math.ceil(until / bucket) - first)
        return float(truth[row, lo:hi].max()) if hi > lo else 0.0

    store = SQLiteStore(":memory:")
    clock = SimulatedClock(first * float(bucket))
    source: Literal["model", "observed", "oracle"] = {
        "predictive": "model", "reactive": "observed", "oracle": "oracle"}[policy_name]  # type: ignore[assignment]
    controller = Controller(store, lambda: [policy], settings, clock, solve_in_thread=False,
                            wait_for_fits=True, settle=0.0, journal_size=None,
                            write_forecasts=False, fit_executor=executor, source=source,
                            oracle=oracle)
    try:
        for k in range(n):
            ts = int(starts[k])
            rows = [DemandRow(di, region, ts, "primary", int(truth[i, k]))
                    for i, (di, region) in enumerate(keys) if truth[i, k] > 0]
            if rows:
                store.add_demand(rows)
            now = float(ts + bucket)
            clock.set(now)
            await controller.tick(now)
            await controller.run_window(now)
            if progress is not None and k % 288 == 0:
                progress(k, n)
        if progress is not None:
            progress(n, n)
        clock.set(end_time + 86400)
        await controller.tick(end_time + 86400)  # settle draining ones
    finally:
        store.close()

    lives: dict[int, dict[str, float]] = {}
    where: dict[int, tuple[str, str]] = {}
    for entry in controller.journal:
        lives.setdefault(entry.allocation, {})[entry.state] = entry.ts
        where[entry.allocation] = (entry.di, entry.region)
    served = np.zeros_like(truth, dtype=bool)
    shadow_seconds = 0.0
    di_seconds = dict.fromkeys((di for di, _ in keys), 0.0)
    day_seconds: dict[int, float] = {}
    for alloc, life in lives.items():
        born = life.get("warming")
        if born is None:
            continue
        gone = min(life.get("released", end_time), end_time)
        shadow_seconds += max(0.0, gone - born)
        di = where[alloc][0]
        di_seconds[di] = di_seconds.get(di, 0.0) + max(0.0, gone - born)
        day = math.floor(born / 86400)
        while day * 86400 < gone:  # split over UTC days: what a daily budget counts
            part = min(gone, (day + 1) * 86400) - max(born, day * 86400)
            day_seconds[day] = day_seconds.get(day, 0.0) + max(0.0, part)
            day += 1
        ready = life.get("ready")
        if ready is None:
            continue
        at = index.get(where[alloc])
        if at is None:
            continue
        serving_from = ready + ttl.get(where[alloc][0], 0)
        served[at] |= (starts >= serving_from) & (starts + bucket <= gone)
    local = float(truth[served].sum())
    figures = _figures(total, local, shadow_seconds / 60.0, controller.allocations_total,
                       controller.releases_total, n, bucket)
    figures["misses"] = controller.book.miss_total
    figures["topups"] = controller.topups
    figures["refits"] = dict(controller.book.refits)
    models: dict[str, int] = {}
    for model in controller.book.models().values():
        models[model] = models.get(model, 0) + 1
    figures["models"] = models
    # per DI: what `bench.simulate_bounds` gives its ideal allocator, DI by DI
    figures["di_shadow_minutes"] = {di: round(sec / 60.0, 1) for di, sec in di_seconds.items()}
    figures["day_shadow_minutes"] = {str(day): round(sec / 60.0, 1)
                                     for day, sec in sorted(day_seconds.items())}
    return figures


def _figures(total: float, local: float, shadow_minutes: float, allocations: int,
             releases: int, buckets: int, bucket: int) -> dict[str, Any]:
    return {
        "queries_total": int(total), "queries_local": int(local),
        "local_share": round(local / total, 4) if total else 0.0,
        "shadow_minutes": round(shadow_minutes, 1), "allocations": allocations,
        "releases": releases, "buckets": buckets, "bucket_seconds": bucket,
    }


def simulate(
    series: Sequence[Series],
    policy_name: PolicyName,
    lead: float,
    bucket: int,
    threshold: str = "p75",
    policy: Policy | None = None,
    ttl: int = 30,
    min_hold: float = 1800.0,
    model: str = "auto",
    refit_every: float = 7 * 86400.0,
    history: float = 14 * 86400.0,
    quantile: float = 0.9,
    cross_probability: float | None = 0.5,
    price: float = 0.5,
    budget: float | None = None,
    decision: Literal["value", "threshold"] = "value",
    persistence: bool = True,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Replay `series` (keys `di|region`) under `policy_name`; the figures as plain data."""
    series = [rebucket(s, bucket) for s in series]
    by_di: dict[str, list[Series]] = {}
    for s in series:
        by_di.setdefault(split_key(s.key)[0], []).append(s)
    if policy is None:
        thresholds = {di: threshold_for(threshold, [s.values for s in group])
                      for di, group in by_di.items()}
        regions = {di: tuple(split_key(s.key)[1] for s in group) for di, group in by_di.items()}
        policy = default_policy(regions, thresholds, lead, ttl, min_hold, model,
                                quantile=quantile)
    else:
        thresholds = {name.to_text(): di.policy.threshold for name, di in policy.dis.items()}
    settings = AllocatorSettings(mode="active", window=float(bucket), bucket=bucket,
                                 tick=float(bucket), history=history, refit_every=refit_every,
                                 drain_grace=30.0, serve_well_km=500.0,
                                 cross_probability=cross_probability, price=price,
                                 shadow_minutes_per_day=budget, persistence=persistence,
                                 # reactive is the threshold rule with its hold, by definition
                                 decision="threshold" if policy_name == "reactive"
                                 else decision)
    figures = asyncio.run(_run(series, policy_name, policy, bucket, settings, executor,
                               progress))
    figures = {"policy": policy_name, "lead_time": lead, **figures,
               "thresholds": {k: round(v, 3) for k, v in thresholds.items()}}
    return figures
