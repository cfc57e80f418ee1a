"""One allocation decision: from demand views, policies, health and the current allocations
to the plan of the next generation (what to keep, add and release, and why).

The safety rules of predictive autoscalers apply here, in this order:

1. operator pins (store rows with `pinned`, and `pins:` in allocator.yaml) always hold; a
   shadow made for a pin of allocator.yaml holds while that pin is there and active, and is
   released when it leaves the file;
2. calendar events ("event at T in region R") raise the planned demand over the model;
3. a shadow is released only after *observed* demand stayed below the threshold for the
   DI's `min_hold` (counted from the end of the last bucket at or above it), and never
   before the window it was allocated for (allocation + lead time + window) is over —
   scale out on the forecast, scale in on evidence, so nothing flaps; while the forecast
   still wants it, it stays;
4. a (DI, region) is wanted when the last observed bucket crossed the threshold, or the
   forecast says demand will cross it over the lead-time window: with the probability of
   crossing known (`DemandView.p_cross`), when it is at least `cross_probability` (0.5: more
   likely than not); otherwise when the forecast upper quantile crosses. What it is sized
   for (capacity) is max(forecast upper quantile, last observed bucket), at least the
   threshold;
5. a shadow on a resource that is down, or no longer in the DI's pool, is released at once
   and its (DI, region) planned again, so a failed shadow is replaced in the same run.

Everything else is the assignment problem (`solver`): capacity, per-DI max shadows,
per-region and global cost caps. The planner is pure (no I/O, no clock): the controller and
the simulator call the same function.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.name
import numpy as np
import numpy.typing as npt

from shadowdns.allocator.settings import AllocatorSettings, CalendarEvent, Pin
from shadowdns.allocator.solver import AssignmentProblem, solve
from shadowdns.geoip.distance import EARTH_RADIUS_KM, haversine_km
from shadowdns.resolver.routing import is_up
from shadowdns.store.base import Allocation
from shadowdns.zones.policy import DI, Policy, Resource, resources_where

STICKINESS = 1.25
"""Weight bonus of keeping a (DI, region) on the resource it already has (no churn).

A pair's weight is `demand × (1 + closeness) × (1 - 0.01 × cost)`, closeness being how
much nearer than the nearest healthy primary the resource is (0..1): serve the most
demand, nearest first; cost breaks ties (budgets are the caps' job)."""


@dataclass(frozen=True, slots=True)
class DemandView:
    """What the allocator knows about one (DI, region) series at decision time."""

    di: str
    region: str
    predicted: float = 0.0
    observed: float = 0.0
    model: str = "none"
    last_above: float | None = None  # last bucket end with observed demand >= threshold
    topup: bool = False  # actual demand beat the forecast band K buckets in a row
    p_cross: float | None = None  # P(demand >= threshold) in the window; None: unknown
    # expected demand per bucket from `path_start` on (the forecast's mean path over a
    # shadow's whole life); None: no forecast, the threshold rule decides
    path: tuple[float, ...] | None = None
    path_start: float = 0.0


@dataclass(frozen=True, slots=True)
class Budget:
    """What shadows may still cost: the shadow-minutes left in the current budget day
    (`allocator.yaml` `budget.shadow_minutes_per_day`), and the price multiplier the
    controller learnt from how the last days spent it (`Controller.price_scale`)."""

    minutes_left: float
    price_scale: float = 1.0


def life_value(path: Sequence[float], start: int, price: float) -> float:
    """The best net value of a shadow serving from bucket `start` of `path` on: the most,
    over every life of H >= 1 buckets, of sum(path[start:start + H] - price). A spell that
    pauses and comes back is worth bridging when what comes back pays for the pause."""
    # By hand, not numpy: plan() asks this of every (DI, region) on every run (60,000
    # series on each health flap), paths are a few dozen buckets, and numpy's per-call
    # cost (asarray, cumsum, max) made a third of the server's CPU under churn.
    tail = path[start:]
    if not tail:
        return -math.inf
    if max(tail) <= price:
        return tail[0] - price  # no bucket pays: the shortest life loses least
    best = -math.inf
    run = 0.0
    for x in tail:
        run += x - price
        if run > best:
            best = run
    return best


@dataclass(frozen=True, slots=True)
class DIView:
    """A DI with its policy and its effective lead time (see `lead_time`)."""

    key: str  # absolute name text
    di: DI
    policy: Policy
    lead: float = 0.0


def lead_time(di: DI, policy: Policy) -> float:
    """The policy's lead time, or the warm-up of the DI's slowest standby plus the answer
    TTL (cache drain), whichever is longer."""
    warmups = [policy.resources[r].warmup for r in di.standby if r in policy.resources]
    if di.standby_within_km is not None:
        warmups += [r.warmup for r in resources_where(policy.resources, _is_standby)]
    return max(di.policy.lead_time, max(warmups, default=0.0) + di.ttl)


def _view(policy: Policy, di: DI, slowest_any: float) -> DIView:
    if di.standby_within_km is not None:
        lead = max(di.policy.lead_time, slowest_any + di.ttl)
    else:
        lead = lead_time(di, policy)
    return DIView(di.name.to_text(), di, policy, lead)


def _slowest_standby(policy: Policy) -> float:
    return max((r.warmup for r in resources_where(policy.resources, _is_standby)),
               default=0.0)


def _is_standby(res: Resource) -> bool:
    return res.role == "standby"


def di_views(policies: Iterable[Policy]) -> list[DIView]:
    out: list[DIView] = []
    for policy in policies:
        slowest_any = _slowest_standby(policy)
        out.extend(_view(policy, di, slowest_any) for di in policy.dis.values())
    return out


class ViewIndex:
    """The DIView of a DI name, made when first asked for.

    Only DIs with demand, allocations, pins or events can get a shadow, and with a million
    DIs building every view each window would cost seconds; the controller asks for those.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = tuple(policies)
        self.count = sum(len(p.dis) for p in self.policies)
        self._slowest = [_slowest_standby(p) for p in self.policies]
        self._views: dict[str, DIView | None] = {}

    def get(self, key: str) -> DIView | None:
        if key in self._views:
            return self._views[key]
        found = None
        try:
            name = dns.name.from_text(key)
        except dns.exception.DNSException:
            name = None
        if name is not None:
            for policy, slowest in zip(self.policies, self._slowest, strict=True):
                di = policy.dis.get(name)
                if di is not None:
                    found = _view(policy, di, slowest)
                    break
        self._views[key] = found
        return found

    def views(self, keys: Iterable[str]) -> list[DIView]:
        """The views of those of `keys` that name a DI, each once, in a stable order."""
        out = []
        for key in sorted(set(keys)):
            view = self.get(key)
            if view is not None:
                out.append(view)
        return out


@dataclass(frozen=True, slots=True)
class Shadow:
    """A shadow the plan adds."""

    di: str
    resource: str
    region: str
    demand: float
    reason: str
    pinned: bool = False
    warmup: float = 0.0
    until: float | None = None  # a pin's end: the allocation is released then


@dataclass(frozen=True, slots=True)
class Release:
    allocation: Allocation
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """The next generation: allocations kept (by id), added and released, with figures."""

    now: float
    keep: tuple[Allocation, ...]
    add: tuple[Shadow, ...]
    release: tuple[Release, ...]
    candidates: int
    pairs: int
    method: str
    seconds: float
    notes: tuple[str, ...] = ()
    wanted: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.add or self.release)

    def diff(self) -> dict[str, object]:
        """The diff to the previous generation, as plain data."""
        return {
            "add": [{"di": s.di, "resource": s.resource, "region": s.region,
                     "demand": round(s.demand, 3), "reason": s.reason} for s in self.add],
            "release": [{"id": r.allocation.id, "di": r.allocation.di,
                         "resource": r.allocation.resource, "region": r.allocation.region,
                         "reason": r.reason} for r in self.release],
            "keep": [a.id for a in self.keep],
        }


def reason_text(**fields: object) -> str:
    """The reason stored with an allocation: compact JSON, keys in a fixed order."""
    return json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                       for k, v in fields.items()}, separators=(",", ":"))


SETTINGS_PIN = reason_text(why="pin")
"""The reason of a shadow made for a pin of allocator.yaml (store pins carry the operator's)."""


class _Geometry:
    """One policy's locations and standby resources as arrays: distances from every
    location to every resource, health, pools; built once per plan."""

    def __init__(self, policy: Policy, down: frozenset[str]) -> None:
        self.locations = list(policy.locations)
        self.loc_row = {name: i for i, name in enumerate(self.locations)}
        self.res = list(resources_where(policy.resources, _is_standby))
        self.res_col = {r.id: i for i, r in enumerate(self.res)}
        lat = np.radians([policy.locations[n].lat for n in self.locations])
        lon = np.radians([policy.locations[n].lon for n in self.locations])
        h = (np.sin((lat[:, None] - lat[None, :]) / 2) ** 2 + np.cos(lat[:, None])
             * np.cos(lat[None, :]) * np.sin((lon[:, None] - lon[None, :]) / 2) ** 2)
        self.loc_km = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
        res_loc = np.array([self.loc_row.get(r.location, -1) for r in self.res],
                           dtype=np.int64)
        self.res_km = np.where(res_loc[None, :] >= 0, self.loc_km[:, np.maximum(res_loc, 0)]
                               if len(self.res) else np.zeros((len(self.locations), 0)),
                               np.inf)
        self.up = np.array([is_up(r, down) for r in self.res], dtype=bool)
        self.standby_up = self.up
        self.policy = policy
        self.down = down
        self._primary: dict[tuple[str, ...], npt.NDArray[np.float64]] = {}
        self._by_rows: dict[frozenset[int], npt.NDArray[np.float64]] = {}
        self._pool: dict[tuple[str, ...], npt.NDArray[np.bool_]] = {}

    def km_primary(self, primaries: tuple[str, ...]) -> npt.NDArray[np.float64]:
        """Per location: km to the nearest healthy primary (inf when none is up)."""
        found = self._primary.get(primaries)
        if found is None:
            rows = frozenset(self.loc_row[r.location] for p in primaries
                             if (r := self.policy.resources.get(p)) is not None
                             and r.location in self.loc_row and is_up(r, self.down))
            # DIs with their own primaries mostly share the primaries' locations: one
            # reduction per set of locations, not per DI (10,000 per plan made half the
            # planner's time, on every health flap)
            found = self._by_rows.get(rows)
            if found is None:
                found = (self.loc_km[:, sorted(rows)].min(axis=1) if rows
                         else np.full(len(self.locations), np.inf))
                self._by_rows[rows] = found
            self._primary[primaries] = found
        return found

    def has_pool(self, di: DI) -> bool:
        """Whether the DI lists a standby of this policy that is not one of its primaries."""
        return any(rid in self.res_col and rid not in di.primaries for rid in di.standby)

    def pool_mask(self, di: DI) -> npt.NDArray[np.bool_]:
        """The DI's listed standbys (not its primaries) as a mask over resources."""
        found = self._pool.get(di.standby)
        if found is None:
            found = np.zeros(len(self.res), dtype=bool)
            for rid in di.standby:
                col = self.res_col.get(rid)
                if col is not None:
                    found[col] = True
            self._pool[di.standby] = found
        if di.primaries and any(p in self.res_col for p in di.primaries):
            found = found.copy()
            for p in di.primaries:
                if p in self.res_col:
                    found[self.res_col[p]] = False
        return found


class _Distances:
    """Great-circle km between a policy's locations, memoised."""

    def __init__(self) -> None:
        self.cache: dict[tuple[int, str, str], float] = {}

    def km(self, policy: Policy, a: str, b: str) -> float:
        key = (id(policy), a, b)
        value = self.cache.get(key)
        if value is None:
            la, lb = policy.locations.get(a), policy.locations.get(b)
            value = (math.inf if la is None or lb is None
                     else haversine_km(la.lat, la.lon, lb.lat, lb.lon))
            self.cache[key] = value
        return value


def _in_pool(view: DIView, resource: Resource, region: str, dist: _Distances) -> bool:
    if resource.role != "standby" or resource.id in view.di.primaries:
        return False
    if resource.id in view.di.standby:
        return True
    km = view.di.standby_within_km
    return km is not None and dist.km(view.policy, region, resource.location) <= km


# (location row, region, value, net, why, predicted, observed, model, p_cross): one wanted
# region of a DI as the value rule or the threshold rule found it
_Valued = tuple[int, str, float, float, str, float, float, str, "float | None"]


# (policy, DI, path start, its bucket at the time valued, the wanted regions)
_Remembered = tuple[Policy, DI, "float | None", "int | None", tuple[_Valued, ...]]


def _start(path_start: float, at: float, bucket: float) -> int:
    """The bucket of a forecast path starting at `path_start` that time `at` falls in."""
    return max(0, math.ceil((at - path_start) / bucket - 1e-9))


@dataclass(slots=True)
class PlanMemo:
    """What `plan` valued per DI, for the next run on the same demand: a run woken by a
    health flap or an operator within the bucket plans on the demand the last run had,
    and valuing 60,000 series again on every flap made most of such a run. An entry holds
    while the DI and its policy are the same objects and its time falls in the same bucket of
    its forecast path; DIs with calendar events are valued afresh (events start and end
    within a bucket)."""

    demand: object = None
    scale: float = 1.0
    settings: object = None
    by_di: dict[str, _Remembered] = field(default_factory=dict)

    def for_run(self, demand: object, scale: float, settings: object
                ) -> dict[str, _Remembered]:
        if demand is not self.demand or scale != self.scale or settings is not self.settings:
            self.demand, self.scale, self.settings, self.by_di = demand, scale, settings, {}
        return self.by_di


def plan(
    now: float,
    dis: Sequence[DIView],
    demand: Mapping[tuple[str, str], DemandView],
    allocations: Sequence[Allocation],
    down: frozenset[str],
    settings: AllocatorSettings,
    window: float | None = None,
    budget: Budget | None = None,
    memo: PlanMemo | None = None,
) -> Plan:
    """Decide the next generation (see the module docstring for the rules). `memo`, kept
    by the caller between runs, lets a run on the same demand reuse what the last one
    valued per DI; the plan is the same with it or without."""
    window = settings.window if window is None else window
    bucket = float(settings.bucket)
    scale = 1.0 if budget is None else budget.price_scale

    def price_of(view: DIView, seen: DemandView | None) -> float | None:
        """Queries a shadow-bucket must serve to pay for itself; None: threshold rule."""
        if settings.decision != "value" or seen is None or seen.path is None:
            return None
        return settings.price * scale * view.di.policy.threshold

    dist = _Distances()
    by_key = {v.key: v for v in dis}
    resources = resource_map(v.policy for v in dis)
    active = [a for a in allocations if a.state in ("warming", "ready")]
    draining = {a.key for a in allocations if a.state == "draining"}

    fixed: list[Allocation] = []
    releasable: dict[tuple[str, str], Allocation] = {}
    release: list[Release] = []
    pins_now = {(p.di, p.resource, p.region) for p in settings.pins if p.active(now)}
    score: dict[int, float] = {}  # allocation id -> what keeping it is worth (budget order)
    pinned_ids: set[int] = set()
    newest_ready: dict[tuple[str, str], float] = {}
    for a in active:
        if a.state == "ready":
            newest_ready[(a.di, a.region)] = max(newest_ready.get((a.di, a.region), -math.inf),
                                                 a.created_at)
    for a in active:
        view = by_key.get(a.di)
        res = resources.get(a.resource)
        if a.key in pins_now or (a.pinned and a.reason != SETTINGS_PIN):
            fixed.append(a)
            pinned_ids.add(a.id)
            continue
        if a.pinned:
            release.append(Release(a, "its pin is no longer in allocator.yaml"))
            continue
        if view is None or res is None or not _in_pool(view, res, a.region, dist):
            release.append(Release(a, "no longer in the DI's standby pool"))
            continue
        if not is_up(res, down):
            release.append(Release(a, f"resource {a.resource} is down: replaced"))
            continue
        if newest_ready.get((a.di, a.region), -math.inf) > a.created_at:
            release.append(Release(a, "replaced: its successor is ready"))
            continue
        seen = demand.get((a.di, a.region))
        last_above = None if seen is None else seen.last_above
        planned_until = a.created_at + view.lead + window
        price = price_of(view, seen)
        if price is not None and seen is not None and seen.path is not None:
            # keep while what it will serve from now (warm: no lead to pay again) pays
            # for its minutes over some life ahead; scale in on the forecast
            at = max(now, a.created_at + view.lead)
            worth = life_value(seen.path, _start(seen.path_start, at, bucket), price)
            score[a.id] = worth
            held = now < planned_until or worth > 0
        else:
            score[a.id] = seen.observed if seen is not None else 0.0
            held = now < planned_until or (
                last_above is not None and now - last_above < view.di.policy.min_hold)
        if held or (a.di, a.region) in releasable:
            fixed.append(a)
        else:
            releasable[(a.di, a.region)] = a

    add: list[Shadow] = []
    fixed_keys = {a.key for a in fixed}
    for p in settings.pins:
        if p.active(now) and (p.di, p.resource, p.region) not in fixed_keys \
                and (p.di, p.resource, p.region) not in draining:
            res = resources.get(p.resource)
            view = by_key.get(p.di)
            if res is None or view is None or p.region not in view.policy.locations:
                continue  # names what no served policy has (logged when the file loads)
            add.append(Shadow(p.di, p.resource, p.region, 0.0, SETTINGS_PIN, True,
                              res.warmup, p.until))

    covered = {(a.di, a.region) for a in fixed} | {(s.di, s.region) for s in add}
    load: dict[str, float] = {}
    per_di: dict[str, int] = {}
    region_cost: dict[str, float] = {}
    global_cost = 0.0
    for a in fixed:
        load[a.resource] = load.get(a.resource, 0.0) + a.demand
        per_di[a.di] = per_di.get(a.di, 0) + 1
        cost = resources[a.resource].cost if a.resource in resources else 0.0
        region_cost[a.region] = region_cost.get(a.region, 0.0) + cost
        global_cost += cost

    # --- candidates -------------------------------------------------------------------
    res_index: dict[str, int] = {}
    dem_value: list[float] = []
    dem_score: list[float] = []
    dem_group: list[int] = []
    dem_region: list[int] = []
    dem_info: list[tuple[DIView, str, str, float, float, str, float | None]] = []
    pair_d: list[int] = []
    pair_r: list[int] = []
    pair_w: list[float] = []
    groups: dict[str, int] = {}
    regions: dict[str, int] = {}
    wanted: dict[tuple[str, str], float] = {}
    notes: list[str] = []
    events = _events_by_series(settings.events)
    draining_by_di: dict[str, set[tuple[str, str]]] = {}
    for di_key, rid, region in draining:
        draining_by_di.setdefault(di_key, set()).add((rid, region))
    geometries: dict[int, _Geometry] = {}
    k = max(1, settings.nearest_resources)
    p_min = settings.cross_probability
    releasable_dis = {di_key for di_key, _ in releasable}
    event_dis = {di_key for di_key, _ in events}
    by_di = None if memo is None else memo.for_run(demand, scale, settings)

    def value_regions(view: DIView, locations: Sequence[str], at: float
                      ) -> tuple[tuple[_Valued, ...], float | None, bool]:
        """The DI's wanted regions, the `path_start` their value depends on (None: no
        forecast path), and whether all its paths start there (else not remembered)."""
        threshold = view.di.policy.threshold
        until = at + window
        out: list[_Valued] = []
        path_start: float | None = None
        one_start = True
        for row, region in enumerate(locations):
            seen = demand.get((view.key, region))
            predicted = seen.predicted if seen else 0.0
            observed = seen.observed if seen else 0.0
            value = max(predicted, observed)
            p_cross = seen.p_cross if seen is not None else None
            price = price_of(view, seen)
            net = value
            if price is not None and seen is not None and seen.path is not None:
                if path_start is None:
                    path_start = seen.path_start
                one_start = one_start and path_start == seen.path_start
                # expected served demand over the best life from when it would be ready,
                # less the price of all its minutes, warm-up included
                start = _start(seen.path_start, at, bucket)
                mean = seen.path
                life = life_value(mean, start, price)
                net = life - price * start
                # and not sooner than needed: a start one window later that nets more
                # (its first bucket does not pay) is left to the next run
                now_pays = net > 0 and life >= life_value(mean, start + 1, price)
                value = max(value, threshold) if now_pays else 0.0
                why = "forecast"
            else:
                if p_cross is not None and p_min is not None:
                    forecast_wants = p_cross >= p_min
                else:
                    forecast_wants = predicted >= threshold
                if forecast_wants:
                    value = max(value, threshold)
                elif observed < threshold:
                    value = 0.0  # neither the forecast nor the last bucket crosses
                why = "forecast" if forecast_wants and (predicted >= observed
                                                        or observed < threshold) else "observed"
            if seen is not None and seen.topup:
                why = "topup"
            for ev in events.get((view.key, region), ()):
                if ev.overlaps(now, until):
                    want = threshold if ev.demand is None else ev.demand
                    if want >= value:
                        value, why = max(want, threshold), "event"
            if value < threshold or value <= 0:
                continue
            out.append((row, region, value, net, why, predicted, observed,
                        seen.model if seen else "none", p_cross))
        return tuple(out), path_start, one_start

    for view in dis:
        limit_reached = view.di.policy.max_shadows - per_di.get(view.key, 0) <= 0
        geo = geometries.get(id(view.policy))
        if geo is None:
            geo = geometries[id(view.policy)] = _Geometry(view.policy, down)
        pooled = view.di.standby_within_km is not None or geo.has_pool(view.di)
        if not pooled and view.key not in releasable_dis:
            continue  # no standby could shadow it, and none to keep or release: no value
        at = now + view.lead
        remembered = None if by_di is None or view.key in event_dis else by_di.get(view.key)
        if (remembered is not None and remembered[0] is view.policy
                and remembered[1] is view.di and (remembered[2] is None or _start(
                    remembered[2], at, bucket) == remembered[3])):
            valued = remembered[4]
        else:
            valued, path_start, one_start = value_regions(view, geo.locations, at)
            if by_di is not None and view.key not in event_dis and one_start:
                by_di[view.key] = (view.policy, view.di, path_start, None if path_start is None
                                   else _start(path_start, at, bucket), valued)
        rows: list[int] = []
        for row, region, value, net, why, predicted, observed, model, p_cross in valued:
            wanted[(view.key, region)] = value
            if limit_reached or (view.key, region) in covered:
                continue
            rows.append(row)
            dem_info.append((view, region, why, predicted, observed, model, p_cross))
            dem_value.append(value)
            dem_score.append(net)
        if not rows:
            continue
        first = len(dem_value) - len(rows)
        row_idx = np.array(rows, dtype=np.int64)
        # Most DIs wanted by their demand can take no shadow (no standby in their pool, or
        # a primary near every wanted region): settle those before any per-DI array work,
        # which for 10,000 DIs made most of a plan, redone on every health flap.
        km_primary = geo.km_primary(view.di.primaries)[row_idx] if pooled else None
        if km_primary is None or not bool((km_primary > settings.serve_well_km).any()):
            del dem_value[first:], dem_info[first:], dem_score[first:]
            continue
        ok_rows = km_primary > settings.serve_well_km
        km = geo.res_km[row_idx]  # (rows, resources)
        eligible = geo.pool_mask(view.di)[None, :] & geo.up[None, :]
        if view.di.standby_within_km is not None:
            eligible = eligible | (geo.standby_up[None, :]
                                   & (km <= view.di.standby_within_km))
        eligible = eligible & (km < km_primary[:, None]) & ok_rows[:, None]
        for rid, region in draining_by_di.get(view.key, ()):
            col = geo.res_col.get(rid)
            r = geo.loc_row.get(region)
            if col is not None and r is not None and r in rows:
                eligible[rows.index(r), col] = False
        masked = np.where(eligible, km, np.inf)
        take = min(k, masked.shape[1])
        if take < masked.shape[1]:
            nearest = np.argpartition(masked, take - 1, axis=1)[:, :take]
        else:
            nearest = np.broadcast_to(np.arange(masked.shape[1]), masked.shape).copy()
        keep_dem: list[int] = []
        for j in range(len(rows)):
            cols = [c for c in nearest[j].tolist() if math.isfinite(masked[j, c])]
            region = geo.locations[rows[j]]
            current = releasable.get((view.key, region))
            if current is not None:
                col = geo.res_col.get(current.resource)
                if col is not None and math.isfinite(masked[j, col]) and col not in cols:
                    cols.append(col)
            if not cols:
                continue
            i = first + len(keep_dem)
            keep_dem.append(first + j)
            value = dem_value[first + j]
            kp = km_primary[j]
            for c in cols:
                res = geo.res[c]
                closeness = 1.0 if math.isinf(kp) else 1.0 - float(masked[j, c]) / kp
                weight = value * (1.0 + closeness) * (1.0 - 0.01 * min(res.cost, 50.0))
                if current is not None and current.resource == res.id:
                    weight *= STICKINESS
                pair_d.append(i)
                pair_r.append(res_index.setdefault(res.id, len(res_index)))
                pair_w.append(weight)
        # drop the wanted rows that found no resource, keeping the order of the rest
        kept_values = [dem_value[i] for i in keep_dem]
        kept_info = [dem_info[i] for i in keep_dem]
        kept_score = [dem_score[i] for i in keep_dem]
        del dem_value[first:], dem_info[first:], dem_score[first:]
        dem_value.extend(kept_values)
        dem_info.extend(kept_info)
        dem_score.extend(kept_score)
        g = groups.setdefault(view.key, len(groups))
        for info in kept_info:
            dem_group.append(g)
            dem_region.append(regions.setdefault(info[1], len(regions)))

    if budget is not None:
        # the budget: every shadow held over the next window costs window minutes and
        # keeps its drain (TTL + grace) in reserve, every released one its drain; pins are
        # the operator's and always hold, the rest go by what keeping them is worth
        wm = window / 60.0
        dm = min(wm, (settings.drain_grace + max((v.di.ttl for v in dis), default=0)) / 60.0)
        movable = sorted((a for a in fixed if a.id not in pinned_ids),
                         key=lambda a: score.get(a.id, 0.0), reverse=True)
        base = (len(fixed) - len(movable) + len(add) + len(releasable)) * (wm + dm) \
            + (len(release) + len(movable)) * dm
        spare = budget.minutes_left - base + 1e-9
        room = max(0, min(len(movable), math.floor(spare / wm)))
        for a in movable[room:]:
            fixed.remove(a)
            release.append(Release(a, reason_text(why="budget",
                                                  minutes_left=round(budget.minutes_left, 1))))
        spare -= room * wm
        free = max(0, math.floor(spare / (wm + dm))) if spare > 0 else 0
        if len(dem_value) > free:
            best = sorted(range(len(dem_value)), key=lambda i: -dem_score[i])[:free]
            pair_d, pair_r, pair_w = _only_rows(sorted(best), pair_d, pair_r, pair_w)
            dem_value = [dem_value[i] for i in sorted(best)]
            dem_info = [dem_info[i] for i in sorted(best)]
            dem_group = [dem_group[i] for i in sorted(best)]
            dem_region = [dem_region[i] for i in sorted(best)]
            if not best:
                notes.append("budget: no shadow-minutes left for new shadows")

    res_ids = list(res_index)
    group_limit = np.zeros(len(groups), dtype=np.int64)
    for key, g in groups.items():
        group_limit[g] = max(0, by_key[key].di.policy.max_shadows - per_di.get(key, 0))
    region_cap = np.full(len(regions), math.inf)
    for name, g in regions.items():
        cap = settings.region_cost_caps.get(name)
        if cap is not None:
            region_cap[g] = cap - region_cost.get(name, 0.0)
    global_cap = (math.inf if settings.global_cost_cap is None
                  else settings.global_cost_cap - global_cost)
    problem = AssignmentProblem(
        demand=np.array(dem_value, dtype=np.float64),
        group=np.array(dem_group, dtype=np.int64),
        region=np.array(dem_region, dtype=np.int64),
        capacity=np.array([resources[r].capacity - load.get(r, 0.0) for r in res_ids],
                          dtype=np.float64),
        cost=np.array([resources[r].cost for r in res_ids], dtype=np.float64),
        pair_demand=np.array(pair_d, dtype=np.int64),
        pair_resource=np.array(pair_r, dtype=np.int64),
        weight=np.array(pair_w, dtype=np.float64),
        group_limit=group_limit,
        region_cap=region_cap,
        global_cap=global_cap,
    )
    solution = solve(problem, settings.solver, settings.milp_max_pairs,
                     settings.solver_time_limit)
    notes.extend(solution.notes)

    kept_releasable: set[int] = set()
    for p in solution.pairs.tolist():
        view, region, why, predicted, observed, model, p_cross = dem_info[pair_d[p]]
        resource = res_ids[pair_r[p]]
        current = releasable.get((view.key, region))
        if current is not None and current.resource == resource:
            kept_releasable.add(current.id)
            continue
        lead = view.lead
        reason = reason_text(
            why=why, predicted=float(predicted), observed=float(observed), model=model,
            threshold=float(view.di.policy.threshold), quantile=view.di.policy.quantile,
            **({} if p_cross is None else {"p_cross": float(p_cross)}),
            window=[round(now + lead), round(now + lead + window)])
        add.append(Shadow(view.key, resource, region, dem_value[pair_d[p]], reason,
                          warmup=resources[resource].warmup))
    keep = list(fixed)
    coming = {(s.di, s.region) for s in add} | {(a.di, a.region) for a in fixed
                                                  if a.state == "warming"}
    for series, a in releasable.items():
        if a.id in kept_releasable:
            keep.append(a)
        elif series in wanted and series in coming and a.state == "ready":
            keep.append(a)  # still wanted: it serves until its replacement is ready
        elif series in wanted:
            release.append(Release(a, "moved to a better resource"))
        elif price_of(by_key[a.di], demand.get(series)) is not None:
            release.append(Release(a, reason_text(
                why="forecast: the spell ends", worth=round(score.get(a.id, 0.0), 3))))
        else:
            view = by_key[a.di]
            release.append(Release(a, reason_text(
                why="below threshold", threshold=view.di.policy.threshold,
                min_hold=view.di.policy.min_hold)))
    return Plan(now, tuple(sorted(keep, key=lambda a: a.id)), tuple(add), tuple(release),
                candidates=len(dem_value), pairs=problem.n_pairs, method=solution.method,
                seconds=solution.seconds, notes=tuple(notes), wanted=wanted)


def _only_rows(rows: Sequence[int], pair_d: list[int], pair_r: list[int],
               pair_w: list[float]) -> tuple[list[int], list[int], list[float]]:
    """The pairs of the kept demand rows, renumbered to the rows' new positions."""
    where = {old: new for new, old in enumerate(rows)}
    out_d, out_r, out_w = [], [], []
    for d, r, w in zip(pair_d, pair_r, pair_w, strict=True):
        if d in where:
            out_d.append(where[d])
            out_r.append(r)
            out_w.append(w)
    return out_d, out_r, out_w


def resource_map(policies: Iterable[Policy]) -> Mapping[str, Resource]:
    """Every resource of the given policies by id; each policy is read once however many
    DIs share it (per-DI copies of a 50,000-resource map cost minutes per window). Nothing
    is copied: one policy's own table is returned, several are looked up through an index
    of ids (a `ResourceTable` makes a `Resource` per lookup, so copying one materialised
    all 50,000 of them, 170 ms on the event loop at each start)."""
    tables: list[Mapping[str, Resource]] = []
    seen: set[int] = set()
    for policy in policies:
        if id(policy) not in seen:
            seen.add(id(policy))
            tables.append(policy.resources)
    if len(tables) == 1:
        return tables[0]
    return MergedResources(tables)


class MergedResources(Mapping[str, Resource]):
    """Several policies' resources as one mapping (a later policy's id wins, as a merge
    would), kept as an index of which table holds each id."""

    __slots__ = ("_owner",)

    def __init__(self, tables: Sequence[Mapping[str, Resource]]) -> None:
        self._owner: dict[str, Mapping[str, Resource]] = {}
        for table in tables:
            self._owner.update(dict.fromkeys(table, table))

    def __getitem__(self, rid: str) -> Resource:
        return self._owner[rid][rid]

    def get(self, rid: str, default: Resource | None = None) -> Resource | None:  # type: ignore[override]
        table = self._owner.get(rid)
        return default if table is None else table[rid]

    def __contains__(self, rid: object) -> bool:
        return rid in self._owner

    def __iter__(self) -> Iterator[str]:
        return iter(self._owner)

    def __len__(self) -> int:
        return len(self._owner)


def _events_by_series(
    events: Iterable[CalendarEvent],
) -> dict[tuple[str, str], list[CalendarEvent]]:
    out: dict[tuple[str, str], list[CalendarEvent]] = {}
    for ev in events:
        out.setdefault((ev.di, ev.region), []).append(ev)
    return out


def active_pins(pins: Iterable[Pin], now: float) -> list[Pin]:
    return [p for p in pins if p.active(now)]
