"""Wiring of the health monitor into a running `Service` (called from `_start_health`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shadowdns.clock import SystemClock
from shadowdns.health.monitor import HealthMonitor
from shadowdns.health.state import Transition
from shadowdns.store.base import HealthState
from shadowdns.zones.policy import Resource

if TYPE_CHECKING:
    from shadowdns.app import Service


async def start_health(service: Service) -> HealthMonitor:
    """Start probing every checked resource now; a change recompiles answers at once and
    wakes the allocator (when it runs) so a failed shadow is replaced."""

    def resources() -> dict[str, Resource]:
        out: dict[str, Resource] = {}
        for policy in service.loaded.policies.values():
            out.update(policy.resources)
        return out

    async def write(state: HealthState) -> bool:
        return await service.run_in_io(service.store.set_health_state, state)

    async def changed(_: Transition) -> None:
        await service.refresh_live()
        control = getattr(service, "control", None)
        if control is not None:
            control.wake()

    async def catch_up() -> None:
        # A health state written while the listeners came up may predate the store's
        # change listener; re-read twice early rather than wait for the consistency check.
        for delay in (0.3, 0.7):
            await asyncio.sleep(delay)
            await service.refresh_live()

    monitor = HealthMonitor(resources, SystemClock(), write, changed)
    loop = asyncio.get_running_loop()
    service.tasks.append(loop.create_task(monitor.run(), name="health monitor"))
    service.tasks.append(loop.create_task(catch_up(), name="health catch-up"))
    await monitor.started()
    return monitor
