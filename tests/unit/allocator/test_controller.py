"""The control loop over a real (in-memory) store on a simulated clock."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import replace
from typing import Any

import httpx
import numpy as np
import pytest

from shadowdns.allocator.controller import (
    ALL_VIEWS_UP_TO,
    FITS_IN_FLIGHT,
    HISTORY_SLICE,
    Controller,
)
from shadowdns.allocator.forecasting import TIME_MAJOR, DemandBook
from shadowdns.allocator.hooks import HookRunner
from shadowdns.allocator.settings import AllocatorSettings, Hook, Pin
from shadowdns.clock import SimulatedClock
from shadowdns.store.base import DemandRow, Retention
from shadowdns.store.sqlite import SQLiteStore
from shadowdns.zones.policy import Policy

from .conftest import APP, make_policy

T0 = 1_700_000_000.0  # a multiple of 60


class Ready:
    """A stand-in health monitor: s-jp has a check and passes when `ok`."""

    def __init__(self) -> None:
        self.ok = False
        self.probed: list[str] = []

    def has_check(self, rid: str) -> bool:
        return rid == "s-jp"

    def ready_since(self, rid: str, ts: float) -> bool:
        return self.ok

    def probe_now(self, rid: str) -> None:
        self.probed.append(rid)


def seed(store: SQLiteStore, region: str, per_minute: int, minutes: int, end: float) -> None:
    store.add_demand([DemandRow(APP, region, int(end - 60 * (i + 1)), "primary", per_minute)
                      for i in range(minutes)])


def controller(store: SQLiteStore, policy: Policy, clock: SimulatedClock, mode: str = "active",
               health: Ready | None = None, all_views_up_to: int = ALL_VIEWS_UP_TO,
               **extra: Any) -> tuple[Controller, list[Any]]:
    posts: list[Any] = []

    def hook(request: httpx.Request) -> httpx.Response:
        posts.append(json.loads(request.content))
        return httpx.Response(204)

    settings = AllocatorSettings(mode=mode, window=60, bucket=60, drain_grace=10,  # type: ignore[arg-type]
                                 warmup_hook=Hook(url="http://127.0.0.1:9/warm"),
                                 drain_hook=Hook(url="http://127.0.0.1:9/drain"), **extra)
    hooks = HookRunner(transport=httpx.MockTransport(hook))
    return Controller(store, lambda: [policy], settings, clock, health=health, hooks=hooks,
                      solve_in_thread=False, settle=0.0, all_views_up_to=all_views_up_to), posts


@pytest.mark.parametrize("all_views_up_to", [ALL_VIEWS_UP_TO, 0],
                         ids=["every-view", "big-fleet-views"])
def test_generation_lifecycle_with_hooks(all_views_up_to: int) -> None:
    """Demand above the threshold makes a generation with a warming shadow (reason and
    audit diff recorded, warm-up hook called); it is ready after its warm-up; when demand
    has stayed low for min_hold it drains for TTL + grace, is released, and the drain
    hook is called. The same with the big-fleet path, which plans only the DIs with
    demand, allocations, pins or events."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    policy = make_policy(min_hold=120, ttl=30)
    seed(store, "jp", 80, 30, T0)
    store.add_demand([DemandRow("not-a-di.example.", "jp", int(T0 - 60), "primary", 500)])
    ctl, posts = controller(store, policy, clock, all_views_up_to=all_views_up_to)

    async def scenario() -> None:
        result = await ctl.run_window(T0)
        assert result is not None and [(s.resource, s.region) for s in result.add] == [
            ("s-jp", "jp")]
        [a] = store.list_allocations()
        assert (a.state, a.generation, a.demand) == ("warming", 1, 80.0)
        assert json.loads(a.reason)["why"] in ("forecast", "observed")
        [entry] = store.list_audit()
        record = json.loads(entry.after_json or "{}")
        assert entry.action == "allocator.generation" and record["diff"]["add"][0]["region"] == "jp"
        changed = {(c["region"], tuple(c["before"]), tuple(c["after"]))
                   for c in record["answers"]}
        assert changed == {("jp", ("p-eu",), ("s-jp",)),
                           ("kr", ("p-eu",), ("s-jp",))}  # kr's nearest is now jp's shadow
        assert record["ttl"][0]["ttl"] == 5  # shorter TTL ahead of the change
        await ctl.hooks.drain()  # a shadow turns ready only once its warm-up hook worked
        await ctl.tick(T0 + 30)
        assert store.list_allocations()[0].state == "warming"
        await ctl.tick(T0 + 60)  # warm-up of s-jp is 60 s
        assert store.list_allocations()[0].state == "ready"
        # no demand for a while: held for min_hold after the last bucket above, then drained
        t = T0
        while store.list_allocations()[0].state == "ready":
            t += 60
            clock.set(t)
            await ctl.run_window(t)
            assert t < T0 + 7200
        drained = store.list_allocations()[0]
        assert drained.state == "draining" and drained.valid_until == t + 30 + 10
        assert t - T0 >= 120
        await ctl.tick(t + 40)
        assert store.list_allocations() == []
        await ctl.hooks.drain()
        assert [p["event"] for p in posts] == ["warmup", "drain"]
        assert posts[0]["resource"] == "s-jp" and posts[0]["ready_by"] == T0 + 60
        assert [e.state for e in ctl.journal] == ["warming", "ready", "draining", "released"]

    asyncio.run(scenario())


def test_readiness_follows_the_health_check_when_there_is_one() -> None:
    """A shadow with a check becomes ready when rise passes happened after allocation,
    not after its warm-up time; the monitor is asked to probe it at once."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "jp", 80, 30, T0)
    health = Ready()
    ctl, _ = controller(store, make_policy(check_jp=True), clock, health=health)

    async def scenario() -> None:
        await ctl.run_window(T0)
        await ctl.hooks.drain()
        assert health.probed == ["s-jp"]
        await ctl.tick(T0 + 600)
        assert store.list_allocations()[0].state == "warming"
        health.ok = True
        await ctl.tick(T0 + 601)
        assert store.list_allocations()[0].state == "ready"

    asyncio.run(scenario())


def test_preview_mode_records_generations_but_changes_nothing() -> None:
    """preview: the plan and its answer diff are stored (allocator.preview), no
    allocation is written, so no answer changes."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "jp", 80, 30, T0)
    ctl, _ = controller(store, make_policy(), clock, mode="preview")

    async def scenario() -> None:
        await ctl.run_window(T0)
        await ctl.run_window(T0 + 60)

    asyncio.run(scenario())
    assert store.list_allocations() == []
    entries = store.list_audit()
    assert {e.action for e in entries} == {"allocator.preview"}
    record = json.loads(entries[0].after_json or "{}")
    assert record["answers"][0]["after"] == ["s-jp"] and record["mode"] == "preview"
    assert store.current_generation() == 0


def test_forecast_misses_trigger_a_top_up_and_forecasts_are_stored() -> None:
    """Demand that climbs above the forecast band for K buckets in a row is a top-up:
    read_demand says so (the loop then allocates at once) and the misses are counted;
    the controller stores its forecasts for the API. (A young series forecasts its last
    bucket, so a jump that stays is one miss; a climb beats it every bucket.)"""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "br", 1, 30, T0)
    ctl, _ = controller(store, make_policy(), clock, topup_after=2)

    async def scenario() -> list[bool]:
        await ctl.run_window(T0)
        flags = []
        for i in range(3):
            t = T0 + 60 * (i + 1)
            store.add_demand([DemandRow(APP, "br", int(t - 60), "primary", 500 * (i + 1))])
            clock.set(t)
            flags.append(await ctl.read_demand(t))
        return flags

    flags = asyncio.run(scenario())
    assert flags == [False, True, False]
    assert ctl.topups == 1 and ctl.book.miss_total >= 2
    assert ctl.book.view((APP, "br"), T0, T0 + 60).topup
    [forecast] = store.read_forecasts("minute", APP, "br")
    assert forecast.points and forecast.model == "last"


def test_the_loop_allocates_each_window_moves_states_and_waits_for_leadership() -> None:
    """run(): nothing happens while another node leads; once leader, the first window
    allocates, the tick makes the shadow ready after its warm-up, and wake() runs the
    allocation again before the window is over."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "jp", 80, 30, T0)
    ctl, _ = controller(store, make_policy(), clock)
    leading = {"now": False}
    ctl.leader = lambda: leading["now"]

    async def settle() -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def scenario() -> None:
        task = asyncio.create_task(ctl.run())
        await settle()
        await clock.advance(5)
        await settle()
        assert ctl.runs == 0 and store.list_allocations() == []
        leading["now"] = True
        await clock.advance(1)
        await settle()
        assert ctl.runs == 1 and store.list_allocations()[0].state == "warming"
        for _ in range(61):
            await clock.advance(1)
            await settle()
        assert store.list_allocations()[0].state == "ready"
        runs = ctl.runs
        ctl.wake()
        await settle()
        assert ctl.runs == runs + 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ctl.close()

    asyncio.run(scenario())


def test_past_max_series_the_book_follows_the_busiest() -> None:
    """With more series in demand than max_series, the busiest are forecast; the rest
    are left out (and counted in the log), and the allocation still follows demand."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "jp", 80, 30, T0)
    seed(store, "kr", 5, 30, T0)
    settings = AllocatorSettings(mode="active", window=60, bucket=60)  # type: ignore[arg-type]
    ctl = Controller(store, lambda: [make_policy()], settings, clock, solve_in_thread=False,
                     settle=0.0, max_series=1)

    async def scenario() -> None:
        result = await ctl.run_window(T0)
        assert set(ctl.book.series) == {(APP, "jp")}
        assert result is not None and [s.region for s in result.add] == ["jp"]

    asyncio.run(scenario())


def test_book_work_runs_off_the_event_loop() -> None:
    """In the server the book digests demand on its own thread (weeks of history for
    thousands of series would otherwise stop DNS answers); the plan is the same."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    seed(store, "jp", 80, 30, T0)
    ctl, _ = controller(store, make_policy(min_hold=120, ttl=30), clock)
    ctl.book_in_thread = True
    threads: set[int] = set()
    advance = ctl.book.advance

    def spy(*args: Any, **kwargs: Any) -> None:
        threads.add(threading.get_ident())
        advance(*args, **kwargs)

    ctl.book.advance = spy  # type: ignore[method-assign]

    async def scenario() -> tuple[int, Any]:
        result = await ctl.run_window(T0)
        await ctl.close()
        return threading.get_ident(), result

    loop_thread, result = asyncio.run(scenario())
    assert threads and loop_thread not in threads
    assert [(s.di, s.region) for s in result.add] == [(APP, "jp")]


@pytest.mark.parametrize(("minute_retention", "expected"), [(3 * 3600.0, 6000.0),
                                                             (None, 1800.0)],
                         ids=["told-the-retention", "assumes-36h-of-minutes"])
def test_first_read_takes_what_minutes_no_longer_hold_from_the_rollups(
        minute_retention: float | None, expected: float) -> None:
    """After a restart the first read takes minutes only as far back as the store keeps
    them (`minute_retention`, from serve's --retention-minute) and older history from the
    5-minute rollups; assuming 36 h of minutes, hours the store forgot read as zeros."""
    end = int(T0 // 3600 * 3600)
    store = SQLiteStore(":memory:", retention=Retention(minute=3 * 3600))
    seed(store, "jp", 10, 10 * 60, end)  # ten hours, 6000 queries
    store.rollup(end)
    store.apply_retention(end)
    assert sum(q for _, q in store.demand_series("minute", 0, end)[(APP, "jp")]) == 1800
    settings = AllocatorSettings(mode="preview", window=300, bucket=300, history=86400)
    ctl = Controller(store, lambda: [make_policy()], settings, SimulatedClock(end),
                     solve_in_thread=False, settle=0.0, minute_retention=minute_retention)
    asyncio.run(ctl.read_demand(end))
    assert float(ctl.book.series[(APP, "jp")].values.sum()) == expected


def test_a_pin_from_allocator_yaml_ends_at_its_until() -> None:
    """A pin (allocator.yaml) makes its shadow whatever the demand; once the pin's `until`
    passes, the shadow is released and not made again."""
    from shadowdns.allocator.settings import Pin

    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    until = T0 + 600
    ctl, _ = controller(store, make_policy(), clock, pins=(Pin(APP, "s-jp", "jp", until=until),))

    async def scenario() -> None:
        await ctl.run_window(T0)
        [a] = store.list_allocations()
        assert (a.resource, a.region, a.pinned, a.valid_until) == ("s-jp", "jp", True, until)
        await ctl.hooks.drain()  # ready once its warm-up hook worked
        await ctl.tick(T0 + 60)
        assert store.list_allocations()[0].state == "ready"
        await ctl.run_window(until - 60)
        assert [a.state for a in store.list_allocations()] == ["ready"]
        await ctl.tick(until)
        assert store.list_allocations() == []
        await ctl.run_window(until + 60)  # the pin is over: nothing is made again
        assert store.list_allocations() == []

    asyncio.run(scenario())


def test_new_settings_are_taken_whole_between_runs() -> None:
    """`use_settings` changes nothing until the loop's next turn; then planning settings
    (a pin) apply to the same book, and a book-shaping one (bucket) starts a new book that
    reads its history again."""
    store = SQLiteStore(":memory:")
    clock = SimulatedClock(T0)
    policy = make_policy()
    seed(store, "jp", 5, 30, T0)
    ctl, _ = controller(store, policy, clock)

    async def scenario() -> None:
        await ctl.run_window(clock.now())
        book = ctl.book
        pinned = replace(ctl.settings, pins=(Pin(APP, "s-jp", "jp"),))
        ctl.use_settings(pinned)
        assert ctl.settings.pins == () and ctl._wake.is_set()
        ctl._adopt_settings()
        assert ctl.settings is pinned and ctl.book is book
        await ctl.run_window(clock.now())
        assert [(a.resource, a.pinned) for a in store.list_allocations(True)] == [("s-jp", True)]
        ctl.use_settings(replace(pinned, bucket=300))
        ctl._adopt_settings()
        assert ctl.book is not book and ctl.read_until is None

    asyncio.run(scenario())


def _book_state(book: DemandBook) -> str:
    """Every per-series array of `book`, series in key order (as text: NaN equals NaN)."""
    order = sorted(range(len(book.keys)), key=lambda i: book.keys[i])
    parts = [repr(sorted(book.keys)), repr(book.end), repr(sorted(map(repr, book.misses)))]
    for name in sorted(book._specs()):
        a = getattr(book, name)
        parts.append(f"{name}={(a[..., order] if name in TIME_MAJOR else a[order]).tolist()!r}")
    return "\n".join(parts)


def test_the_history_read_in_slices_is_the_book_of_one_whole_read() -> None:
    """The first read takes the history a slice of time at a time (rollups, then
    minutes): the book it builds is the one a single advance over the same points
    builds, series born in later slices included, no bucket lost at a cut."""
    end = int(T0 // 3600 * 3600)
    store = SQLiteStore(":memory:", retention=Retention(minute=3 * 3600))
    rng = np.random.default_rng(7)
    rows = []
    for region, born in (("jp", 40 * 3600), ("eu", 20 * 3600), ("us", 2 * 3600)):
        for m in range(born // 60):
            if rng.random() < 0.3:
                rows.append(DemandRow(APP, region, end - 60 * (m + 1), "primary",
                                      int(rng.integers(1, 90))))
                if rng.random() < 0.5:  # a second kind of the same minute: summed
                    rows.append(DemandRow(APP, region, end - 60 * (m + 1), "shadow", 3))
    store.add_demand(rows)
    store.rollup(end)
    store.apply_retention(end)
    settings = AllocatorSettings(mode="preview", window=300, bucket=300, history=3 * 86400.0)
    ctl = Controller(store, lambda: [make_policy()], settings, SimulatedClock(end),
                     solve_in_thread=False, settle=0.0, minute_retention=3 * 3600.0)
    reads: list[tuple[str, float, float]] = []
    read = store.demand_columns

    def spy(resolution: Any, lo: float, hi: float, dis: Any = None) -> Any:
        reads.append((resolution, lo, hi))
        return read(resolution, lo, hi, dis)

    store.demand_columns = spy  # type: ignore[method-assign]
    asyncio.run(ctl.read_demand(end))
    store.demand_columns = read  # type: ignore[method-assign]
    assert len(reads) > 3 * 86400 / (HISTORY_SLICE * 300)  # in slices, not one read
    split = end - (3 * 3600 - 2 * 300)  # as the controller splits: retention - 2 buckets
    whole = Controller(store, lambda: [make_policy()], settings, SimulatedClock(end),
                       solve_in_thread=False, settle=0.0, minute_retention=3 * 3600.0)
    older = store.demand_columns("5m", end - 3 * 86400, split)
    newer = store.demand_columns("minute", split, end)
    params = {APP: whole.series_params(whole._views()[0])}
    whole.book.advance(older.then(newer), end // 300 - 1, params)
    assert len(ctl.book.keys) == 3
    assert _book_state(ctl.book) == _book_state(whole.book)


def test_fits_are_handed_out_a_few_at_a_time_from_one_task() -> None:
    """A window's fits (1,389 at 100,000 series) wait in one feeder, not as a task each
    on the semaphore (whose waiters Python 3.11 scans on every acquire: O(n²) on the
    event loop). At most FITS_IN_FLIGHT run at once, and every one runs."""
    store = SQLiteStore(":memory:")
    ctl, _ = controller(store, make_policy(), SimulatedClock(T0))
    running = 0
    most = 0
    most_tasks = 0
    done: list[int] = []

    async def one(request: Any) -> None:
        nonlocal running, most, most_tasks
        running += 1
        most = max(most, running)
        most_tasks = max(most_tasks, len(ctl._fits))
        await asyncio.sleep(0.001)
        running -= 1
        done.append(request)

    async def scenario() -> None:
        await ctl._feed_fits(list(range(100)), one)  # type: ignore[arg-type]
        await asyncio.gather(*ctl._fits)

    asyncio.run(scenario())
    assert sorted(done) == list(range(100))
    assert most == FITS_IN_FLIGHT
    assert most_tasks <= FITS_IN_FLIGHT
