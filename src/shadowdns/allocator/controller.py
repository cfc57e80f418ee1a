"""The control loop: read demand, refresh forecasts, plan, write a generation, move states.

Every `window` (and at once after a health change or a forecast miss streak) the
controller

1. reads the demand buckets completed since its last read and feeds them to the
   `DemandBook` (which flags misses and top-ups),
2. starts the fits that are due in a worker process pool (never on the event loop),
3. asks the book for each (DI, region)'s planned demand over [now + lead, now + lead +
   window] and calls the planner (in a worker thread),
4. in `active` mode writes the plan as a new generation — new shadows `warming` with the
   reason of each, released ones `draining` until TTL + grace — records the generation with
   its diff and the answers it changes (audit log, action `allocator.generation`), fires
   the warm-up hooks, asks the health monitor to probe the new shadows now, and recompiles
   answers; in `preview` mode it records the same (action `allocator.preview`) and changes
   nothing.

Every `tick` (1 s) it moves states: `warming` → `ready` once the resource's check passed
`rise` times since allocation (after `warmup` when it has no check), `draining` →
`released` when its time is up (then the drain hook). The simulator drives the same class
on a simulated clock, calling `run_window` and `tick` itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from shadowdns.allocator.forecasting import DemandBook, FitRequest, SeriesParams, fit_job
from shadowdns.allocator.hooks import HookPayload, HookRunner
from shadowdns.allocator.persistence import Persistence
from shadowdns.allocator.planner import (
    Budget,
    DemandView,
    DIView,
    Plan,
    PlanMemo,
    ViewIndex,
    di_views,
    plan,
    resource_map,
)
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.clock import Clock
from shadowdns.gcwatch import WATCH
from shadowdns.health.monitor import sleep_or_wake
from shadowdns.predictor.base import Fitted
from shadowdns.predictor.last import LastValue
from shadowdns.resolver.routing import decide, group_shadows
from shadowdns.runtime import IO
from shadowdns.store.base import (
    ANSWERING_STATES,
    RESOLUTION_SECONDS,
    Allocation,
    AllocationState,
    AuditEntry,
    Forecast,
    ForecastPoint,
    ModelChoice,
    NewAllocation,
    Resolution,
    Store,
)
from shadowdns.store.demand_columns import DemandColumns
from shadowdns.zones.policy import Policy, Resource

log = logging.getLogger(__name__)

# Up to this many DIs every DI's view is built once per policy load; above it, only the
# views of DIs that can get a shadow are (see `Controller._views`).
ALL_VIEWS_UP_TO = 50_000
# (DI, region) series the book follows at most: the busiest when more have demand.
MAX_SERIES = 100_000
# Settings the demand book is built with: a reload that changes one starts a new book.
BOOK_SETTINGS = ("bucket", "history", "refit_every", "topup_after", "error_window",
                 "degrade_factor", "plan_on")

FITS_IN_FLIGHT = 8  # fits submitted to the process pool at once (see `Controller`)
LOG_EACH_UP_TO = 20  # state changes in one tick logged one by one; more are summed up
T = TypeVar("T")
MINUTE_RETENTION_USED = 36 * 3600.0  # read minute buckets this far back, older from 5m
HISTORY_SLICE = 72  # buckets of the history read at once at start: 6 h of 5-minute rows
TOLIST_ROWS = 4096  # forecast rows converted to Python at once (a few ms holding the GIL)
LAST = LastValue().name  # the book's model of a series with nothing better known


class Readiness(Protocol):
    """What the controller asks the health monitor."""

    def has_check(self, rid: str) -> bool: ...
    def ready_since(self, rid: str, ts: float) -> bool: ...
    def probe_now(self, rid: str) -> None: ...


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One state change of one allocation, at the time it took effect."""

    allocation: int
    di: str
    resource: str
    region: str
    state: AllocationState
    ts: float


@dataclass(frozen=True, slots=True)
class TTLCut:
    """Answers of (di, region) carry `ttl` from `start` until `until`, when their answer
    changes (a shadow ready, or gone), so caches let go of the old one in time."""

    di: str
    region: str
    start: float
    until: float
    ttl: int

    def to_config(self) -> dict[str, Any]:
        """The entry as the audit log and `Service.apply_ttl_plan` take it."""
        return {"di": self.di, "region": self.region, "from": self.start,
                "until": self.until, "ttl": self.ttl}


@dataclass(frozen=True, slots=True)
class AnswerChange:
    """A (DI, region) whose answer a generation changes once its shadows are ready and
    the released ones drained."""

    di: str
    region: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    reason: str

    def to_config(self) -> dict[str, Any]:
        return {"di": self.di, "region": self.region, "before": list(self.before),
                "after": list(self.after), "reason": self.reason}


@dataclass(frozen=True, slots=True)
class GenerationRecord:
    """What one allocation run decided: recorded in the audit log (`to_config`), kept for
    the API, and handed to `on_record` (the TTL plan). `generation` is set once written
    (the store's generation in active mode, a counter of previews in preview mode)."""

    ts: float
    mode: str
    method: str
    seconds: float
    candidates: int
    pairs: int
    notes: tuple[str, ...]
    diff: Mapping[str, Any]
    answers: tuple[AnswerChange, ...]
    ttl: tuple[TTLCut, ...]
    generation: int | None = None

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ts": self.ts, "mode": self.mode, "method": self.method, "seconds": self.seconds,
            "candidates": self.candidates, "pairs": self.pairs, "notes": list(self.notes),
            "diff": self.diff, "answers": [a.to_config() for a in self.answers],
            "ttl": [c.to_config() for c in self.ttl]}
        if self.generation is not None:
            out["generation"] = self.generation
        return out


async def _direct(fn: Callable[..., Any], *args: object) -> Any:
    return fn(*args)


class _LazyParams(Mapping[str, SeriesParams]):
    """Series parameters of a big fleet's DIs, made for the DIs whose demand shows up."""

    def __init__(self, controller: Controller, index: ViewIndex) -> None:
        self._controller = controller
        self._index = index
        self._made: dict[str, SeriesParams] = {}

    def __getitem__(self, key: str) -> SeriesParams:
        made = self._made.get(key)
        if made is None:
            view = self._index.get(key)
            if view is None:
                raise KeyError(key)
            made = self._made[key] = self._controller.series_params(view)
        return made

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._index.get(key) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._made)

    def __len__(self) -> int:
        return len(self._made)


class Controller:
    """See the module docstring."""

    def __init__(
        self,
        store: Store,
        policies: Callable[[], Iterable[Policy]],
        settings: AllocatorSettings,
        clock: Clock,
        io: IO | None = None,
        refresh: Callable[[], Awaitable[object]] | None = None,
        health: Readiness | None = None,
        hooks: HookRunner | None = None,
        fit_executor: Executor | None = None,
        solve_in_thread: bool = True,
        wait_for_fits: bool = False,
        settle: float = 12.0,
        journal_size: int | None = 1000,
        write_forecasts: bool = True,
        source: Literal["model", "observed", "oracle"] = "model",
        oracle: Callable[[tuple[str, str], float, float], float] | None = None,
        leader: Callable[[], bool] | None = None,
        on_record: Callable[[GenerationRecord], None] | None = None,
        all_views_up_to: int = ALL_VIEWS_UP_TO,
        max_series: int = MAX_SERIES,
        book_in_thread: bool | None = None,
        minute_retention: float | None = None,
    ) -> None:
        self.store = store
        self.policies = policies
        self.settings = settings
        self.clock = clock
        self.io: IO = io or _direct
        self.refresh = refresh
        self.health = health
        self.hooks = hooks or HookRunner()
        # Shadows whose warm-up hook has not reported yet, or failed after its retries
        # (allocation id -> why): they stay warming, so they never answer.
        self.warmups_pending: set[int] = set()
        self.warmup_failures: dict[int, str] = {}
        self.fit_executor = fit_executor
        self.solve_in_thread = solve_in_thread
        self.wait_for_fits = wait_for_fits
        self.settle = settle
        self.write_forecasts = write_forecasts
        self.source = source
        self.oracle = oracle
        self.leader = leader or (lambda: True)
        self.on_record = on_record
        # How far back the minute table is read on the first read (older history comes
        # from the 5-minute rollups): never further than the store keeps minutes, less the
        # time between two retention runs and the read's own lag.
        self.minute_retention = minute_retention
        self.minute_span = self._minute_span(settings)
        self.book = self._new_book(settings)
        # settings of a reload, taken at the top of the loop's next turn (`use_settings`)
        self._next_settings: AllocatorSettings | None = None
        self.read_until: int | None = None  # bucket start of the first bucket not read
        self.generations: deque[GenerationRecord] = deque(maxlen=100)
        self.journal: deque[JournalEntry] = deque(maxlen=journal_size)
        self.last_plan: Plan | None = None
        self.preview_generation = 0
        self.runs = 0
        self.topups = 0
        self.model_errors: dict[str, ModelErrors] = {}  # as of the last window, for metrics
        self.allocations_total = 0
        self.releases_total = 0
        self._wake = asyncio.Event()
        self._fits: set[asyncio.Task[None]] = set()
        # Fits handed to the pool at once: submitting a window's 1,389 first fits of a
        # 100,000-series fleet in one go blocked the event loop 20 s in the pool's wake-up
        # pipe; the others wait in `_feed_fits`.
        self._fit_slots = asyncio.Semaphore(FITS_IN_FLIGHT)
        self._topup_seen: set[tuple[str, str]] = set()
        self.all_views_up_to = all_views_up_to
        self.max_series = max_series
        self._over_max = 0  # the series count last logged as over max_series
        self._view_index: ViewIndex | None = None
        # bumped whenever the book's forecasts may have changed; forecasts are written once
        # per version
        self.book_version = 0
        self._written_version = -1
        self._demand_cache: tuple[tuple[int, int, int], dict[tuple[str, str], DemandView]] \
            | None = None
        self._plan_memo = PlanMemo()  # what the last plan valued, for runs on its demand
        self._resource_cache: tuple[tuple[Policy, ...], Mapping[str, Resource]] | None = None
        self._all_views: list[DIView] | None = None
        # The book's work is numpy over all series, but digesting two weeks of history for
        # 100,000 series still takes minutes, and its Python between the array operations
        # would stop DNS answers on the event loop. One thread owns it, so the book is
        # never touched by two at once.
        self.book_in_thread = solve_in_thread if book_in_thread is None else book_in_thread
        self._book_pool: ThreadPoolExecutor | None = None
        # the shadow-minutes budget: spent in the current day, and the price multiplier
        # each day's spending sets for the next (the Lagrangian price of a shadow-minute)
        self.price_scale = 1.0
        # residual persistence over the longest life a path covers (a 2 h lead at most)
        self.persistence = Persistence(math.ceil((7200.0 + settings.lookahead)
                                                 / settings.bucket) + 1)
        self.budget_day: int | None = None
        self.budget_spent = 0.0
        self._spent_at: float | None = None
        self._drain_ttl = 0

    # --- the loop ------------------------------------------------------------------------

    def wake(self) -> None:
        """Run the allocation now (health change, operator action)."""
        self._wake.set()

    def use_settings(self, settings: AllocatorSettings) -> None:
        """Replace the settings (a reload of `allocator.yaml`): the loop takes them whole
        between two runs, so no run sees half of each, and runs with them at once."""
        self._next_settings = settings
        self.wake()

    def _adopt_settings(self) -> None:
        new = self._next_settings
        if new is None:
            return
        self._next_settings = None
        old, self.settings = self.settings, new
        self._demand_cache = None
        if self.source in ("model", "observed"):
            self.source = "model" if new.plan_on == "forecast" else "observed"
        if new.fit_workers != old.fit_workers:
            log.warning("allocator: fit_workers %d applies at the next start (%d now)",
                        new.fit_workers, old.fit_workers)
        if any(getattr(new, k) != getattr(old, k) for k in BOOK_SETTINGS):
            # The book's buckets and error windows are shaped by these: start a new one
            # from the store's history (fits under way were for the old one).
            for task in list(self._fits):
                task.cancel()
            self.book = self._new_book(new)
            self.minute_span = self._minute_span(new)
            self.read_until = None
            self._topup_seen.clear()
            self.book_version += 1
        log.info("allocator: new settings: %s, window %gs, %d pin(s), %d event(s)", new.mode,
                 new.window, len(new.pins), len(new.events))

    def _new_book(self, settings: AllocatorSettings) -> DemandBook:
        return DemandBook(settings.bucket, settings.history, settings.refit_every,
                          settings.topup_after, settings.error_window,
                          settings.degrade_factor, forecasts=self.source == "model")

    def _minute_span(self, settings: AllocatorSettings) -> float:
        if self.minute_retention is None:
            return MINUTE_RETENTION_USED
        return min(MINUTE_RETENTION_USED,
                   self.minute_retention - 2 * settings.bucket - self.settle)

    async def run(self) -> None:
        """Allocate every window and on wake-ups; move states every tick. Until cancelled."""
        next_window = self.clock.now()
        next_read = next_window
        while True:
            now = self.clock.now()
            try:
                self._adopt_settings()
                if not self.leader():  # in a fleet only the leader allocates
                    self._wake.clear()
                    next_window = now + self.settings.tick  # run soon after taking over
                elif now >= next_window or self._wake.is_set():
                    self._wake.clear()
                    await self.run_window(now)
                    next_window = now + self.settings.window
                    next_read = self._next_read_time()
                elif now >= next_read:
                    if await self.read_demand(now):
                        self._wake.set()
                    next_read = self._next_read_time()
                if self.settings.mode == "active" and self.leader():
                    await self.tick(self.clock.now())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("allocator run failed; trying again next tick")
            delay = min(self.settings.tick, next_window - self.clock.now(),
                        max(0.0, next_read - self.clock.now()) or self.settings.tick)
            await sleep_or_wake(self.clock, delay, self._wake)

    def _next_read_time(self) -> float:
        if self.read_until is None:
            return self.clock.now() + self.settings.bucket
        return self.read_until + self.settings.bucket + self.settle

    async def close(self) -> None:
        for task in list(self._fits):
            task.cancel()
        await asyncio.gather(*self._fits, return_exceptions=True)
        await self.hooks.drain()
        if self._book_pool is not None:
            self._book_pool.shutdown(wait=False, cancel_futures=True)

    async def _on_book(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` where the book lives: its thread, or inline (the simulator)."""
        if not self.book_in_thread:
            return fn(*args)
        if self._book_pool is None:
            self._book_pool = ThreadPoolExecutor(1, thread_name_prefix="shadowdns-book")
        return await asyncio.get_running_loop().run_in_executor(
            self._book_pool, _uncollected, fn, *args)

    # --- demand and forecasts ------------------------------------------------------------

    def _resources(self) -> Mapping[str, Resource]:
        """Every resource by id, looked up again only when the policies change (each tick
        reads it; `resource_map` copies nothing)."""
        policies = tuple(self.policies())
        cached = self._resource_cache
        if cached is None or len(cached[0]) != len(policies) or any(
                a is not b for a, b in zip(cached[0], policies, strict=True)):
            cached = self._resource_cache = (policies, resource_map(policies))
        return cached[1]

    def _index(self) -> ViewIndex:
        policies = list(self.policies())
        index = self._view_index
        if index is None or len(index.policies) != len(policies) or any(
                a is not b for a, b in zip(index.policies, policies, strict=True)):
            index = self._view_index = ViewIndex(policies)
            self._all_views = di_views(policies) if index.count <= self.all_views_up_to else None
        return index

    def _views(self, allocations: Sequence[Allocation] = ()) -> list[DIView]:
        """Every DI's view; in a big fleet only those that can get a shadow now: with
        demand in the book, an allocation, a pin or a calendar event (the planner skips
        every other DI anyway, and a million views per window would cost seconds)."""
        index = self._index()
        if self._all_views is not None:
            return self._all_views
        keys = {key[0] for key in self.book.series}
        keys.update(a.di for a in allocations)
        keys.update(p.di for p in self.settings.pins)
        keys.update(e.di for e in self.settings.events)
        return index.views(keys)

    def _params(self, views: Sequence[DIView]) -> dict[str, SeriesParams]:
        return {v.key: self.series_params(v) for v in views}

    def series_params(self, v: DIView) -> SeriesParams:
        horizon = math.ceil((v.lead + self.settings.window) / self.settings.bucket) + 1
        quantile = self.settings.quantile or v.di.policy.quantile
        return SeriesParams(v.di.policy.model, v.di.policy.threshold, quantile, horizon)

    async def read_demand(self, now: float) -> bool:
        """Feed completed buckets to the book; True when a new top-up is flagged."""
        bucket = self.settings.bucket
        cut = math.floor((now - self.settle) / bucket) * bucket
        index = await self._on_book(self._index)  # 10k DIs: ~100 ms, off the loop
        params: Mapping[str, SeriesParams]
        if self._all_views is not None:
            params = await self._on_book(self._params, self._all_views)
            dis: list[str] | None = list(params)
            if not dis:
                return False
        else:  # a big fleet: read every series with demand, then keep those of DIs
            params = _LazyParams(self, index)
            dis = None
        if self.read_until is None:
            return await self._read_history(cut, dis, params, now)
        if cut <= self.read_until:
            return False
        rows = await self.io(self.store.demand_columns, "minute", self.read_until, cut, dis)
        self.read_until = cut
        fresh = await self._on_book(self._feed_settled, rows, cut, params)
        self.book_version += 1
        return fresh

    async def _read_history(self, cut: int, dis: list[str] | None,
                            params: Mapping[str, SeriesParams], now: float) -> bool:
        """The first read: the history the models need, up to `cut`, a slice of time at
        a time (two weeks of 100,000 series are tens of millions of points: read whole,
        they took gigabytes), older buckets from the 5-minute rollups where the minutes
        are no longer kept."""
        bucket = self.settings.bucket
        since = math.floor(cut - self.settings.history)
        split = since
        if bucket % 300 == 0 and cut - since > self.minute_span:
            split = math.ceil((cut - self.minute_span) / bucket) * bucket
        pieces = [*_slices("5m", since, split, bucket), *_slices("minute", split, cut, bucket)]
        fresh = False
        for i, (resolution, lo, hi) in enumerate(pieces):
            # collections paused: the cursor's tuples would make the collector walk them,
            # holding the GIL from the query path (see `gcwatch`)
            rows = await self.io(_uncollected, self.store.demand_columns, resolution, lo,
                                 hi, dis)
            if i < len(pieces) - 1:
                await self._on_book(self._feed_history, rows, hi, params)
            else:
                fresh = await self._on_book(self._feed_settled, rows, cut, params)
        self.read_until = cut
        self.book_version += 1
        log.info("allocator: demand history read: %d series up to %s, %.1f s",
                 len(self.book.series), cut, self.clock.now() - now)
        return fresh

    def _feed_history(self, rows: DemandColumns, cut: int,
                      params: Mapping[str, SeriesParams]) -> None:
        """A slice of the history: the book steps through it (no top-up is flagged for
        the past: the last slice, fed as any new bucket, does that)."""
        self.book.advance(self._bounded(rows), cut // self.settings.bucket - 1, params)
        WATCH.settle(rebase=True)

    def _feed_settled(self, rows: DemandColumns, cut: int,
                      params: Mapping[str, SeriesParams]) -> bool:
        fresh = self.feed(self._bounded(rows), cut, params)
        # the book's series live on and hold no cycles: frozen, full collections never walk
        # them, and their growth is no reason for one (see `gcwatch`)
        WATCH.settle(rebase=True)
        return fresh

    def _bounded(self, rows: DemandColumns) -> DemandColumns:
        """`rows` of the series followed already and of the busiest new ones, up to
        `max_series` in all: forecasting costs per series each window, so past that bound
        the quietest series are left to the reactive rule (their DIs keep their answers)."""
        followed = self.book.series
        new = [j for j, k in enumerate(rows.keys) if k not in followed]
        room = max(0, self.max_series - len(followed))
        if len(new) <= room:
            return rows
        totals = rows.totals()
        new.sort(key=lambda j: int(totals[j]), reverse=True)
        if len(followed) + len(new) != self._over_max:  # once, not for every slice
            self._over_max = len(followed) + len(new)
            log.warning("demand for %d series; forecasting the busiest %d (max_series)",
                        self._over_max, self.max_series)
        dropped = {rows.keys[j] for j in new[room:]}
        return rows.only(k for k in rows.keys if k not in dropped)

    def feed(self, rows: DemandColumns | Mapping[tuple[str, str], Sequence[tuple[int, float]]],
             cut: int, params: Mapping[str, SeriesParams]) -> bool:
        """Observe `rows` (minute or coarser buckets) up to `cut`; new top-up flagged?"""
        self.book.advance(rows, cut // self.settings.bucket - 1, params)
        flagged = self.book.topup_keys()
        fresh = False
        for key in sorted(flagged - self._topup_seen):
            state = self.book.series[key]
            self.topups += 1
            fresh = True
            log.info("forecast miss: %s/%s above the %s band %d bucket(s) in a row: "
                     "top-up", key[0], key[1], state.model, state.misses)
        self._topup_seen = flagged
        return fresh

    async def run_fits(self, now: float) -> None:
        """Start due fits in the process pool (inline without one); wait when asked."""
        requests = await self._on_book(self.book.due_fits, now)
        if not requests:
            return
        loop = asyncio.get_running_loop()

        async def one(request: FitRequest) -> None:
            fitted: Fitted | None
            try:
                if self.fit_executor is None:
                    fitted = fit_job(request.model, request.values, request.season,
                                     request.horizon, request.start, request.quantile,
                                     self.settings.lstm)
                else:
                    fitted = await loop.run_in_executor(
                        self.fit_executor, fit_job, request.model, request.values,
                        request.season, request.horizon, request.start,
                        request.quantile, self.settings.lstm)
            except Exception as exc:
                log.warning("fit of %s/%s failed: %s", *request.key, exc)
                fitted = None
            await self._on_book(self.book.apply_fit, request, fitted, self.clock.now())
            self.book_version += 1

        if self.fit_executor is None:
            for request in requests:
                await one(request)
            return
        feeder = loop.create_task(self._feed_fits(requests, one))
        self._fits.add(feeder)
        feeder.add_done_callback(self._fits.discard)
        if self.wait_for_fits:
            await feeder
            await asyncio.gather(*self._fits, return_exceptions=True)

    async def _feed_fits(self, requests: Sequence[FitRequest],
                         one: Callable[[FitRequest], Coroutine[Any, Any, None]]) -> None:
        """Hand `requests` to the pool `FITS_IN_FLIGHT` at a time, from this one task.
        (A task per request waiting on the semaphore cost the event loop O(n²): in
        Python 3.11 each `acquire` scans every waiter, and a window's ~1,000 fits of a
        100,000-series fleet held the loop 215 ms, no answer meanwhile.)"""
        loop = asyncio.get_running_loop()
        for request in requests:
            await self._fit_slots.acquire()
            task = loop.create_task(one(request))
            self._fits.add(task)
            task.add_done_callback(self._fits.discard)
            task.add_done_callback(lambda _: self._fit_slots.release())

    # --- planning ------------------------------------------------------------------------

    async def run_window(self, now: float) -> Plan | None:
        """One allocation run (see the module docstring)."""
        if self.settings.mode == "off":
            return None
        if self.read_until is None or now >= self.read_until + self.settings.bucket:
            await self.read_demand(now)
        if await self._on_book(self.book.refresh_baselines):
            self.book_version += 1
        if self.source == "model":
            await self.run_fits(now)
        allocations = await self.io(self.store.list_allocations, True)
        views = await self._on_book(self._views, allocations)
        # A run woken within the bucket of the last one (a health change, an operator) plans
        # on the demand that run computed, unless the book changed: forecasting 60,000
        # series on every health flap took the rate under churn to half.
        key = (self.book_version, id(views), math.floor(now / self.settings.bucket))
        if self._demand_cache is not None and self._demand_cache[0] == key:
            demand = self._demand_cache[1]
        else:
            demand = await self._on_book(self._demand_settled, views, now)
            self._demand_cache = (key, demand)
        states = await self.io(self.store.health_states)
        down = frozenset(h.resource for h in states if h.state == "down")
        self._drain_ttl = max((v.di.ttl for v in views), default=0)
        budget = self._budget(now)
        args = (now, views, demand, allocations, down, self.settings, None, budget,
                self._plan_memo)
        if self.solve_in_thread:
            result = await asyncio.get_running_loop().run_in_executor(
                None, _uncollected, plan, *args)
        else:
            result = plan(*args)
        self.runs += 1
        self.last_plan = result
        if result.changed or self.runs == 1:
            # the answer diff decides every touched (DI, region) twice: off the event loop
            record = (await asyncio.get_running_loop().run_in_executor(
                None, _uncollected, self._record, result, views, allocations, down)
                if self.solve_in_thread else self._record(result, views, allocations, down))
            if self.on_record is not None and record.mode != "preview":
                self.on_record(record)
            if self.settings.mode == "active" and result.changed:
                record = await self._apply(result, record, views)
            elif result.changed:
                self.preview_generation += 1
                record = replace(record, generation=self.preview_generation)
                await self.io(self.store.add_audit, AuditEntry(
                    now, None, "allocator.preview", f"preview {self.preview_generation}",
                    None, json.dumps(record.to_config())))
            self.generations.append(record)
        if self.write_forecasts and self._written_version != self.book_version:
            # Forecasts change only with the book (new buckets, fits, baselines): a run
            # woken by a health change or an operator writes nothing new (60,000 series
            # each time made a third of the server's CPU under churn).
            self._written_version = self.book_version
            await self._write_forecasts(views, now)
        return result

    def _budget(self, now: float) -> Budget | None:
        """Charge what the last plan held (its shadows for the time since, its releases for
        their drain) to the day's budget; at a new day, move the price by how the last day
        spent (under budget: cheaper, over: dearer)."""
        per_day = self.settings.shadow_minutes_per_day
        if per_day is None:
            return None
        last = self.last_plan
        if self._spent_at is not None and last is not None:
            since = max(0.0, now - self._spent_at) / 60.0
            drain = (self.settings.drain_grace + self._drain_ttl) / 60.0
            self.budget_spent += (len(last.keep) + len(last.add)) * since \
                + len(last.release) * min(since, drain)
        self._spent_at = now
        day = math.floor(now / 86400.0)
        if self.budget_day != day:
            if self.budget_day is not None:
                used = self.budget_spent / per_day
                self.price_scale = min(100.0, max(0.01, self.price_scale
                                                  * min(2.0, max(0.5, used))))
            self.budget_day, self.budget_spent = day, 0.0
        return Budget(max(0.0, per_day - self.budget_spent), self.price_scale)

    def _demand_settled(self, views: Sequence[DIView], now: float
                        ) -> dict[tuple[str, str], DemandView]:
        demand = self.demand_views(views, now)
        # a forecast path per series (a million floats at 60,000 series), acyclic and kept
        # for the bucket: its growth is no reason for a full collection (one took 243 ms of
        # answers under churn, collecting 25 objects; see `gcwatch`)
        WATCH.settle(rebase=True)
        return demand

    def demand_views(self, views: Sequence[DIView], now: float) -> dict[tuple[str, str],
                                                                         DemandView]:
        """Planned demand per series: the model's band (or, in the simulator, the last
        observed bucket alone, or the future itself), with the forecast's mean path over
        the lead time and `lookahead` for the value rule (one batch call for every series,
        as the views are)."""
        window = self.settings.window
        bucket = self.settings.bucket
        lead = {v.key: v.lead for v in views}
        keys = [key for key in self.book.series if key[0] in lead]
        since = np.array([now + lead[key[0]] for key in keys])
        seen = self.book.views(keys, since, since + window)
        value_rule = self.settings.decision == "value"
        if len(self.persistence.state) > len(self.book.series) + 1000:
            self.persistence.forget(set(self.book.series))
        steps = [math.ceil((lead[key[0]] + self.settings.lookahead) / bucket) + 1
                 for key in keys] if value_rule else []
        if self.source == "observed":
            seen = [replace(s, predicted=0.0, p_cross=0.0, model="observed") for s in seen]
        elif self.source == "oracle" and self.oracle is not None:
            # the future itself: demand crosses with certainty or not at all
            oracle = self.oracle
            at = math.floor(now / bucket) * bucket
            told = []
            for i, (key, s, a) in enumerate(zip(keys, seen, since.tolist(), strict=True)):
                s = replace(s, predicted=oracle(key, a, a + window), p_cross=None,
                            model="oracle")
                if value_rule:
                    s = replace(s, path_start=float(at), path=tuple(
                        oracle(key, at + j * bucket, at + (j + 1) * bucket)
                        for j in range(steps[i])))
                told.append(s)
            seen = told
        elif value_rule:
            modelled = [i for i, s in enumerate(seen) if s.model != "none"]
            if modelled:
                start, points, _ = self.book.forecasts_of([keys[i] for i in modelled],
                                                          max(steps[i] for i in modelled))
                # A series forecast by its last bucket (young, or one `auto` found nothing
                # predictable in) is expected to serve over a shadow's life what it did
                # over the last `lookahead`: its last bucket alone would end every spell
                # of a spiky series at its first quiet bucket (the threshold rule's
                # min_hold, which this rule has not, hid that), and the next spike would
                # pay a warm-up again.
                level = [row for row, i in enumerate(modelled) if seen[i].model == LAST]
                if level:
                    points[level, :] = self.book.recent_means(
                        [keys[modelled[row]] for row in level],
                        max(1, round(self.settings.lookahead / bucket)))[:, None]
                for row, i in enumerate(modelled):
                    point = points[row, :steps[i]]
                    if self.settings.persistence:
                        point = self.persistence.correct(keys[i], round(start / bucket),
                                                         point, seen[i].observed)
                    seen[i] = replace(seen[i], path=tuple(point.tolist()),
                                      path_start=float(start))
        return dict(zip(keys, seen, strict=True))

    def _record(self, result: Plan, views: Sequence[DIView], allocations: Sequence[Allocation],
                down: frozenset[str]) -> GenerationRecord:
        return GenerationRecord(
            ts=result.now, mode=self.settings.mode, method=result.method,
            seconds=round(result.seconds, 4), candidates=result.candidates,
            pairs=result.pairs, notes=tuple(result.notes), diff=result.diff(),
            answers=tuple(answer_diff(result, views, allocations, down)),
            ttl=tuple(ttl_plan(result, views, self.settings)),
        )

    async def _apply(self, result: Plan, record: GenerationRecord,
                     views: Sequence[DIView]) -> GenerationRecord:
        """Write the plan as a new generation; returns `record` with its generation."""
        now = result.now
        ttl_of = {v.key: v.di.ttl for v in views}
        grace = self.settings.drain_grace

        def write(store: Store) -> tuple[GenerationRecord, list[Allocation]]:
            generation = store.bump_generation()
            added = store.add_allocations([
                NewAllocation(di=s.di, resource=s.resource, region=s.region, valid_from=now,
                              generation=generation, created_at=now, state="warming",
                              reason=s.reason, demand=s.demand, pinned=s.pinned,
                              valid_until=s.until)
                for s in result.add])
            for r in result.release:
                until = now + ttl_of.get(r.allocation.di, 30) + grace
                store.set_allocation_state(r.allocation.id, "draining", until)
            written = replace(record, generation=generation)
            store.add_audit(AuditEntry(now, None, "allocator.generation",
                                       f"generation {generation}", None,
                                       json.dumps(written.to_config())))
            return written, added

        record, added = await self.io(write, self.store)
        self.allocations_total += len(added)
        self.releases_total += len(result.release)
        warmups = {(s.di, s.resource, s.region): s.warmup for s in result.add}
        for a in added:
            self.journal.append(JournalEntry(a.id, a.di, a.resource, a.region, "warming", now))
            warmup = warmups.get(a.key, 0.0)
            if self.settings.warmup_hook is not None:
                self.warmups_pending.add(a.id)
            self.hooks.fire(self.settings.warmup_hook, HookPayload(
                "warmup", a.di, a.resource, a.region, a.id, now + warmup, a.generation),
                done=functools.partial(self._warmed, a))
            if self.health is not None:
                self.health.probe_now(a.resource)
        for r in result.release:
            a = r.allocation
            self.journal.append(JournalEntry(a.id, a.di, a.resource, a.region, "draining", now))
        log.info("allocator: generation %d: +%d shadow(s), -%d (%s, %d candidate(s), %.3fs)",
                 record.generation, len(added), len(result.release), result.method,
                 result.candidates, result.seconds)
        if self.refresh is not None:
            await self.refresh()
        return record

    # --- state machine -------------------------------------------------------------------

    def _warmed(self, a: Allocation, ok: bool, detail: str) -> None:
        """A warm-up hook's final result: a failed one keeps the shadow warming."""
        self.warmups_pending.discard(a.id)
        if not ok:
            self.warmup_failures[a.id] = f"warm-up hook failed: {detail}"
            log.error("allocator: shadow %d %s/%s for %s stays out of answers: warm-up hook "
                      "failed: %s", a.id, a.di, a.resource, a.region, detail)

    def problem(self, allocation_id: int) -> str | None:
        """Why an allocation is held back from answering, if something holds it."""
        if allocation_id in self.warmup_failures:
            return self.warmup_failures[allocation_id]
        if allocation_id in self.warmups_pending:
            return "waiting for the warm-up hook"
        return None

    async def tick(self, now: float) -> int:
        """Move warming → ready and draining → released when due; returns changes."""
        allocations = await self.io(self.store.list_allocations, True)
        resources = self._resources()
        changes: list[tuple[Allocation, AllocationState, float, float | None]] = []
        active = {a.id for a in allocations}
        for gone in [i for i in self.warmup_failures if i not in active]:
            del self.warmup_failures[gone]
        for a in allocations:
            res = resources.get(a.resource)
            if a.state == "warming":
                if res is None or self.problem(a.id) is not None:
                    continue
                if self.health is not None and self.health.has_check(a.resource):
                    if self.health.ready_since(a.resource, a.created_at):
                        changes.append((a, "ready", now, None))
                elif now >= a.created_at + res.warmup:
                    changes.append((a, "ready", a.created_at + res.warmup, None))
            elif a.valid_until is not None and a.valid_until <= now:
                changes.append((a, "released", a.valid_until, None))
        if not changes:
            return 0

        def write(store: Store) -> None:
            for a, state, _, until in changes:
                store.set_allocation_state(a.id, state, until)

        await self.io(write, self.store)
        for a, state, ts, _ in changes:
            self.journal.append(JournalEntry(a.id, a.di, a.resource, a.region, state, ts))
            if state == "released" and a.state == "draining":
                self.hooks.fire(self.settings.drain_hook, HookPayload(
                    "drain", a.di, a.resource, a.region, a.id, None, a.generation))
            log.log(logging.INFO if len(changes) <= LOG_EACH_UP_TO else logging.DEBUG,
                    "allocator: %s %s/%s for %s -> %s", a.id, a.di, a.resource, a.region, state)
        if len(changes) > LOG_EACH_UP_TO:
            moved: dict[str, int] = {}
            for _, state, _, _ in changes:
                moved[state] = moved.get(state, 0) + 1
            log.info("allocator: %s", ", ".join(f"{n} -> {state}" for state, n in moved.items()))
        if self.refresh is not None:
            await self.refresh()
        return len(changes)

    # --- visibility ----------------------------------------------------------------------

    async def _write_forecasts(self, views: Sequence[DIView], now: float) -> None:
        resolution: Resolution | None = {60: "minute", 300: "5m", 3600: "hour"}.get(
            self.settings.bucket)  # type: ignore[assignment]
        if resolution is None:
            return
        out, choices = await self._on_book(self._forecast_rows, views, now, resolution)
        try:
            if out:
                await self.io(self.store.write_forecasts, out)
            if choices:
                await self.io(self.store.write_model_choices, choices)
        except Exception as exc:
            log.warning("cannot write forecasts: %s", exc)

    def _forecast_rows(self, views: Sequence[DIView], now: float, resolution: Resolution
                       ) -> tuple[list[Forecast], list[ModelChoice]]:
        horizons = {v.key: math.ceil((v.lead + self.settings.window) / self.settings.bucket) + 1
                    for v in views}
        out = []
        keys = [key for key in self.book.series if key[0] in horizons]
        models = self.book.models()
        if keys:
            first, point, upper = self.book.forecasts_of(keys, max(horizons.values()))
            step = self.settings.bucket
            for b in range(0, len(keys), TOLIST_ROWS):
                # `tolist` holds the GIL for all it converts: 100,000 series at once
                # were a 219 ms pause of the event loop
                block = zip(keys[b:b + TOLIST_ROWS], point[b:b + TOLIST_ROWS].tolist(),
                            upper[b:b + TOLIST_ROWS].tolist(), strict=True)
                for key, points, uppers in block:
                    horizon = horizons[key[0]]
                    if math.isnan(points[0]):
                        continue
                    out.append(Forecast(key[0], key[1], resolution, now, models[key], tuple(
                        ForecastPoint(first + i * step, p, u)
                        for i, (p, u) in enumerate(zip(points[:horizon], uppers[:horizon],
                                                       strict=True)))))
        # The model in use per series and its rolling error (MAE over seasonal naive's),
        # for the API and the per-model error metric.
        errors = self.book.errors()
        models = self.book.models()
        choices = [
            ModelChoice(key[0], key[1], models[key], figures["relative"], now)
            for key, figures in errors.items()
            if key in models and math.isfinite(figures["relative"])
        ]
        self.model_errors = errors_by_model(errors, models)
        return out, choices

    def report(self) -> dict[str, Any]:
        """State of the loop for the API and metrics."""
        return {
            "mode": self.settings.mode, "window": self.settings.window,
            "bucket": self.settings.bucket, "runs": self.runs, "topups": self.topups,
            "misses": self.book.miss_total, "allocations": self.allocations_total,
            "releases": self.releases_total, "series": len(self.book.series),
            "refits": dict(self.book.refits),
            "last": self.generations[-1].to_config() if self.generations else None,
            "errors": {f"{k[0]}|{k[1]}": v for k, v in self.book.errors().items()},
        }


@dataclass(frozen=True, slots=True)
class ModelErrors:
    """Rolling forecast figures of the series one model forecasts, averaged over them."""

    series: int
    relative: float  # MAE over seasonal-naive MAE (below 1: better than last season)
    coverage: float  # share of buckets at or below the upper band


def errors_by_model(errors: Mapping[tuple[str, str], Mapping[str, float]],
                    models: Mapping[tuple[str, str], str]) -> dict[str, ModelErrors]:
    """`DemandBook.errors()` per series, summed up per model in use."""
    grouped: dict[str, list[Mapping[str, float]]] = {}
    for key, figures in errors.items():
        model = models.get(key)
        if model is not None:
            grouped.setdefault(model, []).append(figures)
    out = {}
    for model, rows in sorted(grouped.items()):
        relative = [f["relative"] for f in rows if math.isfinite(f["relative"])]
        out[model] = ModelErrors(len(rows),
                                 sum(relative) / len(relative) if relative else math.nan,
                                 sum(f["coverage"] for f in rows) / len(rows))
    return out


def answer_diff(result: Plan, views: Sequence[DIView], allocations: Sequence[Allocation],
                down: frozenset[str]) -> list[AnswerChange]:
    """(DI, region) whose answer the plan changes once its shadows are ready and drained."""
    touched = {s.di for s in result.add} | {r.allocation.di for r in result.release}
    if not touched:
        return []
    released = {r.allocation.id for r in result.release}
    before = group_shadows(a.key for a in allocations if a.state in ANSWERING_STATES)
    after = group_shadows([*(a.key for a in allocations
                        if a.state in ("warming", "ready") and a.id not in released),
                      *((s.di, s.resource, s.region) for s in result.add)])
    out = []
    for view in views:
        if view.key not in touched:
            continue
        for region in view.policy.locations:
            old = decide(view.policy, view.di, region, before.get(view.key, ()), down)
            new = decide(view.policy, view.di, region, after.get(view.key, ()), down)
            if [r.id for r in old.resources] != [r.id for r in new.resources]:
                out.append(AnswerChange(view.key, region, tuple(r.id for r in old.resources),
                                        tuple(r.id for r in new.resources), new.reason))
    return out


LATE_CHANGE_MARGIN = 2.0
"""Seconds a TTL cut holds past the planned change (see `ttl_plan`)."""


def ttl_plan(result: Plan, views: Sequence[DIView],
             settings: AllocatorSettings) -> list[TTLCut]:
    """Shorter TTLs ahead of each planned change of a (DI, region)'s answer.

    A change at time T (a new shadow ready at now + warm-up, a released one gone at
    now + TTL + grace) wants answers given from T - TTL on to carry `ttl_floor`, so caches
    let go of the old answer by T.
    """
    ttl_of = {v.key: v.di.ttl for v in views}
    # The change is seen at the first tick after T and reaches the answers after the live
    # refresh that follows: the cut holds past T by that much and a margin, or a busy
    # server answers the old set with its full TTL in between (seen in the end-to-end
    # test under load).
    late = settings.tick + LATE_CHANGE_MARGIN
    out = []
    for s in result.add:
        ttl = ttl_of.get(s.di, 30)
        at = result.now + s.warmup
        out.append(TTLCut(s.di, s.region, at - ttl, at + late, min(ttl, settings.ttl_floor)))
    for r in result.release:
        ttl = ttl_of.get(r.allocation.di, 30)
        at = result.now + ttl + settings.drain_grace
        out.append(TTLCut(r.allocation.di, r.allocation.region, at - ttl, at + late,
                          min(ttl, settings.ttl_floor)))
    return out


def _slices(resolution: Resolution, since: int, until: int, bucket: int
            ) -> list[tuple[Resolution, int, int]]:
    """[since, until) in pieces of about `HISTORY_SLICE` buckets of `resolution`, cut
    on the book's bucket boundaries (a bucket read in two pieces would lose the first)."""
    step = max(1, HISTORY_SLICE * RESOLUTION_SECONDS[resolution] // bucket) * bucket
    out: list[tuple[Resolution, int, int]] = []
    lo = since
    while lo < until:
        hi = min(until, (lo // step + 1) * step)
        out.append((resolution, lo, hi))
        lo = hi
    return out


def _uncollected(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` with no cyclic collection meanwhile (on a worker thread): its many
    short-lived objects would make the collector walk them, holding the GIL from the
    query path (see `gcwatch`)."""
    with WATCH.paused():
        return fn(*args)
