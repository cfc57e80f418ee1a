"""Wiring of the control loop into a running service (called from `app._start_control`).

The service hands over a `ControlInputs`: the store and its thread, the configuration
being served, and the callbacks it uses (recompile answers, follow a TTL plan, ask who
leads); nothing here reaches into the service itself. Settings come from
`<zones>/allocator.yaml` (see `settings`), read by the loader of the
zones (`resolver.snapshot.load_config`), so `check` refuses what `serve` would; a reload
(SIGHUP, an API edit, a fleet change) that brings new ones hands them to the running loop
(`use_settings`), and a refused one leaves the running settings as they were. Fits
run in a small process pool (spawned, so the worker does not inherit the server's threads);
the demand book and the planner run in worker threads; the store is used only through
`ControlInputs.io`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from shadowdns.allocator.controller import Controller, Readiness
from shadowdns.allocator.hooks import HookRunner
from shadowdns.allocator.settings import SETTINGS_FILE, unknown_references
from shadowdns.clock import SystemClock
from shadowdns.resolver.snapshot import Config
from shadowdns.runtime import IO
from shadowdns.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ControlInputs:
    """What the control loop takes from the running service."""

    store: Store
    io: IO  # runs a store call on the store's thread
    loaded: Callable[[], Config]  # the configuration served now (it changes on reload)
    refresh: Callable[[], Awaitable[object]]  # recompile answers from the store now
    ttl_plan: Callable[[list[dict[str, Any]]], None]  # follow a generation's TTL plan
    leader: Callable[[], bool]  # whether this node runs the control plane now
    tasks: list[asyncio.Task[None]]  # the service's tasks: what starts here joins them
    minute_retention: float  # seconds the store keeps minute buckets
    health: Readiness | None = None  # the health monitor, where probes run
    hook_secret: bytes | None = None  # signs warm-up and drain webhooks


async def start_control(parts: ControlInputs) -> Controller | None:
    """Start the allocation loop unless `mode: off`; returns the controller."""
    settings = parts.loaded().allocator  # read and checked by the loader, with the zones
    warn_unknown(parts.loaded())
    if settings.mode == "off":
        log.info("allocator: off")
        return None
    pool = ProcessPoolExecutor(max_workers=settings.fit_workers,
                               mp_context=multiprocessing.get_context("spawn"))
    controller = Controller(
        parts.store,
        lambda: parts.loaded().policies.values(),
        settings,
        SystemClock(),
        io=parts.io,
        refresh=parts.refresh,
        health=parts.health,
        fit_executor=pool,
        # counts reach the store half a second after their flush interval ends
        # (app._flush_loop); the rest is room for a slow write
        settle=12.0,
        minute_retention=parts.minute_retention,
        source="model" if settings.plan_on == "forecast" else "observed",
        leader=parts.leader,
        on_record=lambda record: parts.ttl_plan([c.to_config() for c in record.ttl]),
        hooks=HookRunner(secret=parts.hook_secret),
    )

    async def run() -> None:
        try:
            await controller.run()
        finally:
            await controller.close()
            pool.shutdown(wait=False, cancel_futures=True)

    parts.tasks.append(asyncio.get_running_loop().create_task(run(), name="allocator"))
    log.info("allocator: %s, window %gs, bucket %ds", settings.mode, settings.window,
             settings.bucket)
    return controller


def warn_unknown(config: Config) -> None:
    """Log the pins and events of allocator.yaml that name what no served policy has."""
    for problem in unknown_references(config.allocator, config.policies.values(),
                                      SETTINGS_FILE):
        log.warning("%s (ignored until the policy has it)", problem)


def use_settings(parts: ControlInputs, control: Controller | None,
                 started: Callable[[Controller | None], None]) -> None:
    """The service loaded new allocator settings: give them to the running `control`, or
    start a loop and hand it to `started`."""
    settings = parts.loaded().allocator
    if control is not None:
        warn_unknown(parts.loaded())
        control.use_settings(settings)
    elif settings.mode != "off":
        async def start() -> None:
            started(await start_control(parts))

        parts.tasks.append(asyncio.get_running_loop().create_task(start()))
