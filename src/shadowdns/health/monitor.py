"""The health monitor: one probe loop per checked resource, from server start.

Every resource with a `check` in any loaded policy is probed every `interval` seconds
(fixed rate: a slow probe does not push the next one back), and `probe_now` runs one at once
(the allocator asks for it when it allocates a shadow). Each result goes through the
resource's `HealthTracker`; a change of its effective state is written to the store
(`set_health_state`, which also appends to the bounded event log) and then reported to
`on_change`, which recompiles answers at once. Resources without a check are never written:
their state stays whatever an operator or another process set.

The set of probed resources follows the configuration (`resources()` is re-read every
`resync` seconds), so a SIGHUP reload adds and drops probe loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from shadowdns.clock import Clock
from shadowdns.health.probes import ProbeResult, make_probe
from shadowdns.health.state import HealthTracker, Transition
from shadowdns.store.base import HealthState
from shadowdns.zones.policy import HealthCheck, Override, Resource

log = logging.getLogger(__name__)

Writer = Callable[[HealthState], Awaitable[object]]
Listener = Callable[[Transition], Awaitable[None]]


async def sleep_or_wake(clock: Clock, seconds: float, event: asyncio.Event) -> bool:
    """Sleep on `clock` for `seconds` unless `event` is set first; True when woken."""
    if event.is_set():
        return True
    if seconds <= 0:
        return False
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, waiter):
            task.cancel()
        for task in (sleeper, waiter):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return event.is_set()


class HealthMonitor:
    """Probe loops, trackers and state export (see the module docstring)."""

    def __init__(
        self,
        resources: Callable[[], Mapping[str, Resource]],
        clock: Clock,
        write: Writer,
        on_change: Listener | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        resync: float = 5.0,
    ) -> None:
        self.resources = resources
        self.clock = clock
        self.write = write
        self.on_change = on_change
        self.transport = transport
        self.resync = resync
        self.trackers: dict[str, HealthTracker] = {}
        self.checks: dict[str, tuple[Resource, HealthCheck]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._overrides: dict[str, Override] = {}
        self._started = asyncio.Event()
        self._latency: dict[str, float] = {}

    # --- lifecycle ------------------------------------------------------------------------

    def sync(self) -> None:
        """Start probe loops for newly checked resources; stop those no longer checked."""
        wanted = {rid: (res, res.check) for rid, res in self.resources().items()
                  if res.check is not None}
        for rid in list(self._tasks):
            if rid not in wanted or wanted[rid] != self.checks.get(rid):
                self._tasks.pop(rid).cancel()
                self.checks.pop(rid, None)
        for rid, (res, check) in wanted.items():
            if rid in self._tasks:
                continue
            assert check is not None
            old = self.trackers.get(rid)
            tracker = HealthTracker(rid, check.rise, check.fall,
                                    self._overrides.get(rid, res.override))
            if old is not None:
                tracker.probed, tracker.since = old.probed, old.since
                tracker.events.extend(old.events)
            self.trackers[rid] = tracker
            self.checks[rid] = (res, check)
            self._wake[rid] = asyncio.Event()
            self._tasks[rid] = asyncio.get_running_loop().create_task(
                self._probe_loop(rid, res, check), name=f"probe {rid}")
        for rid in list(self.trackers):
            if rid not in wanted:
                del self.trackers[rid]

    async def run(self) -> None:
        """Supervise the probe loops until cancelled."""
        try:
            while True:
                self.sync()
                self._started.set()
                await self.clock.sleep(self.resync)
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()

    async def started(self) -> None:
        await self._started.wait()

    async def _probe_loop(self, rid: str, resource: Resource, check: HealthCheck) -> None:
        probe = make_probe(resource, check, self.transport)
        wake = self._wake[rid]
        while True:
            wake.clear()
            started = self.clock.now()
            result = await probe()
            self._latency[rid] = self.clock.now() - started
            await self.record(rid, result, started)
            delay = started + check.interval - self.clock.now()
            await sleep_or_wake(self.clock, delay, wake)

    # --- results and overrides -----------------------------------------------------------

    async def record(self, rid: str, result: ProbeResult, started: float) -> Transition | None:
        """Count one result; export and announce a change of state."""
        tracker = self.trackers.get(rid)
        if tracker is None:
            return None
        change = tracker.record(result.ok, started, result.detail)
        if change is not None:
            await self._publish(change)
        return change

    async def _publish(self, change: Transition) -> None:
        level = logging.WARNING if change.new == "down" else logging.INFO
        log.log(level, "health: %s %s -> %s (%s)", change.resource, change.old, change.new,
                change.reason)
        if change.new in ("up", "down"):
            try:
                await self.write(HealthState(change.resource, change.new,
                                             change.ts, change.reason))
            except Exception as exc:  # keep probing; the next change retries
                log.error("cannot record health of %s: %s", change.resource, exc)
        if self.on_change is not None:
            await self.on_change(change)

    async def set_override(self, rid: str, override: Override) -> Transition | None:
        """Operator override of one checked resource: up, down or obey (the probes)."""
        self._overrides[rid] = override
        tracker = self.trackers.get(rid)
        if tracker is None:
            return None
        change = tracker.set_override(override, self.clock.now())
        if change is not None:
            await self._publish(change)
        return change

    def probe_now(self, rid: str) -> None:
        """Run the next probe of `rid` at once (no-op for unchecked resources)."""
        event = self._wake.get(rid)
        if event is not None:
            event.set()

    # --- queries -------------------------------------------------------------------------

    def has_check(self, rid: str) -> bool:
        return rid in self.trackers

    def ready_since(self, rid: str, ts: float) -> bool:
        """Whether `rid` has passed `rise` probes started at or after `ts`."""
        tracker = self.trackers.get(rid)
        return tracker is not None and tracker.ready_since(ts)

    def down(self) -> frozenset[str]:
        return frozenset(rid for rid, t in self.trackers.items() if t.state == "down")

    def latencies(self) -> dict[str, float]:
        """Seconds the last probe of each resource took (for the metrics)."""
        return dict(self._latency)

    def report(self) -> list[dict[str, Any]]:
        """Per resource: state, since, counters and recent events (for the API)."""
        out = []
        for rid, t in sorted(self.trackers.items()):
            _, check = self.checks[rid]
            out.append({
                "resource": rid, "state": t.state, "probed": t.probed, "override": t.override,
                "since": t.since, "type": check.type, "interval": check.interval,
                "rise": t.rise, "fall": t.fall, "successes": t.successes,
                "failures": t.failures, "probes": t.probes, "last_probe": t.last_probe,
                "last_ok": t.last_ok, "last_fail": t.last_fail, "detail": t.last_detail,
                "events": [{"ts": e.ts, "old": e.old, "new": e.new, "reason": e.reason}
                           for e in t.events],
            })
        return out
