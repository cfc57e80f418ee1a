"""Wiring of the health monitor into a running service (called from `app._start_health`).

The service hands over a `HealthInputs` (the store and its thread, the policies served, what
to call when a resource changes state); nothing here reaches into the service itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from shadowdns.clock import SystemClock
from shadowdns.health.monitor import HealthMonitor
from shadowdns.health.state import Transition
from shadowdns.runtime import IO
from shadowdns.store.base import HealthObservation, HealthState, Store
from shadowdns.zones.policy import Policy, Resource, resources_where

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HealthInputs:
    """What the health monitor takes from the running service."""

    store: Store
    io: IO  # runs a store call on the store's thread
    policies: Callable[[], Iterable[Policy]]  # the policies served now (they change on reload)
    refresh: Callable[[], Awaitable[object]]  # recompile answers from the store now
    wake: Callable[[], None]  # a state changed: wake the allocator, where one runs
    tasks: list[asyncio.Task[None]]  # the service's tasks: what starts here joins them
    fleet: bool = False  # nodes share the store: each records its view, a quorum decides
    node: str = "local"  # this node's name in the fleet
    quorum: int = 0  # nodes that must see a resource down (0: a majority)


def _has_check(res: Resource) -> bool:
    return res.check is not None


async def start_health(parts: HealthInputs) -> HealthMonitor:
    """Start probing every checked resource now; a change recompiles answers at once and
    wakes the allocator (when it runs) so a failed shadow is replaced."""

    # The monitor resyncs every few seconds and only probes resources with a check: find
    # those once per loaded policy (policies are immutable), not by walking millions of
    # resources on the event loop each time.
    checked: dict[int, tuple[Policy, dict[str, Resource]]] = {}

    def resources() -> dict[str, Resource]:
        out: dict[str, Resource] = {}
        for policy in parts.policies():
            found = checked.get(id(policy))
            if found is None or found[0] is not policy:
                found = checked[id(policy)] = (policy, {
                    res.id: res for res in resources_where(policy.resources, _has_check)})
            out.update(found[1])
        current = {id(p) for p in parts.policies()}
        for key in [k for k in checked if k not in current]:
            del checked[key]
        return out

    fleet, node, quorum = parts.fleet, parts.node, parts.quorum

    async def write(state: HealthState) -> bool:
        if not fleet:
            return await parts.io(parts.store.set_health_state, state)
        return await parts.io(observe_and_combine, parts.store, node, state.resource,
                              state.state, state.reason, quorum)

    async def changed(_: Transition) -> None:
        await parts.refresh()
        parts.wake()

    async def catch_up() -> None:
        # A health state written while the listeners came up may predate the store's
        # change listener; re-read twice early rather than wait for the consistency check.
        for delay in (0.3, 0.7):
            await asyncio.sleep(delay)
            await parts.refresh()

    monitor = HealthMonitor(resources, SystemClock(), write, changed)

    async def keep_observations_fresh(every: float = OBSERVATION_REFRESH) -> None:
        # Re-state this node's view regularly: a node that dies stops refreshing, its
        # view goes stale and drops out of the quorum.
        while True:
            await asyncio.sleep(every)
            for rid, tracker in list(monitor.trackers.items()):
                if tracker.state not in ("up", "down"):
                    continue
                try:
                    changed_state = await parts.io(
                        observe_and_combine, parts.store, node, rid, tracker.state,
                        "periodic", quorum)
                except Exception as exc:  # the store is away; next round
                    log.debug("health observation not written: %s", exc)
                    break
                if changed_state:
                    await parts.refresh()

    loop = asyncio.get_running_loop()
    parts.tasks.append(loop.create_task(monitor.run(), name="health monitor"))
    if fleet:
        parts.tasks.append(loop.create_task(keep_observations_fresh(), name="health quorum"))
    parts.tasks.append(loop.create_task(catch_up(), name="health catch-up"))
    await monitor.started()
    return monitor


OBSERVATION_REFRESH = 5.0
OBSERVATION_STALE = 30.0


def observe_and_combine(store: Store, node: str, resource: str, state: str, reason: str,
                        quorum: int = 0, now: float | None = None) -> bool:
    """Record this node's view of a resource and write the fleet's combined state.

    A resource is down when at least `quorum` nodes with a fresh view see it down
    (`quorum` 0: a majority of them), so one node's bad network does not fail a resource
    over for everyone. Returns whether the combined state changed. Runs on the store
    thread.
    """
    now = time.time() if now is None else now
    store.record_health_observation(HealthObservation(resource, node, state, now))  # type: ignore[arg-type]
    views = [o for o in store.health_observations(since=now - OBSERVATION_STALE)
             if o.resource == resource]
    down = sum(1 for o in views if o.state == "down")
    need = quorum if quorum > 0 else len(views) // 2 + 1
    combined = "down" if down >= need else "up"
    why = f"{down} of {len(views)} node(s) see it down (quorum {need}); {node}: {reason}"
    return store.set_health_state(HealthState(resource, combined, now, why))  # type: ignore[arg-type]
