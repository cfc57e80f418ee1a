"""The monitor on a simulated clock: probes from start, store export, timing, overrides."""

from __future__ import annotations

import asyncio

import httpx

from shadowdns.clock import SimulatedClock
from shadowdns.health.monitor import HealthMonitor
from shadowdns.health.state import Transition
from shadowdns.store.base import HealthState
from shadowdns.zones.policy import HealthCheck, Resource

CHECK = HealthCheck("http", url="http://127.0.0.1:8081/health", interval=2, timeout=1,
                    rise=2, fall=3)
RESOURCES = {
    "s-1": Resource("s-1", "jp", "standby", address="203.0.113.1", check=CHECK),
    "p-1": Resource("p-1", "eu", "primary", address="192.0.2.1"),  # no check: never written
}


class World:
    """A fake backend whose health the test flips, and what the monitor wrote."""

    def __init__(self) -> None:
        self.healthy = True
        self.requests = 0
        self.written: list[HealthState] = []
        self.changes: list[Transition] = []
        self.clock = SimulatedClock(1000.0)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return httpx.Response(200 if self.healthy else 500)

    async def write(self, state: HealthState) -> bool:
        self.written.append(state)
        return True

    async def changed(self, change: Transition) -> None:
        self.changes.append(change)

    def monitor(self) -> HealthMonitor:
        return HealthMonitor(lambda: RESOURCES, self.clock, self.write, self.changed,
                             transport=httpx.MockTransport(self.handler), resync=60)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_probes_start_at_once_and_failover_takes_interval_times_fall() -> None:
    """Probing starts when the monitor starts (no query needed); up after rise passes is
    written to the store; after the backend fails, down is written within interval × fall;
    the unchecked resource is never written."""
    world = World()

    async def scenario() -> float:
        monitor = world.monitor()
        task = asyncio.create_task(monitor.run())
        await monitor.started()
        await settle()
        assert world.requests == 1
        await world.clock.advance(2)
        await settle()
        assert [(s.resource, s.state) for s in world.written] == [("s-1", "up")]
        world.healthy = False
        failed_at = world.clock.now()
        while not any(s.state == "down" for s in world.written):
            await world.clock.advance(0.5)
            await settle()
        took = world.clock.now() - failed_at
        assert monitor.down() == {"s-1"}
        report = monitor.report()
        assert report[0]["state"] == "down" and len(report[0]["events"]) == 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return took

    took = asyncio.run(scenario())
    assert took <= CHECK.interval * CHECK.fall
    assert {s.resource for s in world.written} == {"s-1"}
    assert [c.new for c in world.changes] == ["up", "down"]


def test_probe_now_and_operator_override() -> None:
    """probe_now runs a probe without waiting for the interval; an override is written
    as the effective state and obey returns to the probes' view."""
    world = World()

    async def scenario() -> None:
        monitor = world.monitor()
        task = asyncio.create_task(monitor.run())
        await monitor.started()
        await settle()
        monitor.probe_now("s-1")
        await settle()
        assert world.requests == 2
        assert monitor.ready_since("s-1", 999.0)
        await monitor.set_override("s-1", "down")
        assert world.written[-1].state == "down" and "override" in world.written[-1].reason
        assert not monitor.ready_since("s-1", 999.0)
        await monitor.set_override("s-1", "obey")
        assert world.written[-1].state == "up"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
