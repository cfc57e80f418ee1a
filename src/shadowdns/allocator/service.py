"""Wiring of the control loop into a running `Service` (called from `_start_control`).

Settings come from `<zones>/allocator.yaml` (see `settings`), read by the loader of the
zones (`resolver.snapshot.load_config`), so `check` refuses what `serve` would; a reload
(SIGHUP, an API edit, a fleet change) that brings new ones hands them to the running loop
(`use_settings`), and a refused one leaves the running settings as they were. Fits
run in a small process pool (spawned, so the worker does not inherit the server's threads);
the demand book and the planner run in worker threads; the store is used only through
`service.run_in_io`.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from shadowdns.allocator.controller import Controller
from shadowdns.allocator.hooks import HookRunner
from shadowdns.allocator.settings import SETTINGS_FILE, unknown_references
from shadowdns.clock import SystemClock

if TYPE_CHECKING:
    from shadowdns.app import Service

log = logging.getLogger(__name__)


async def start_control(service: Service) -> Controller | None:
    """Start the allocation loop unless `mode: off`; returns the controller."""
    settings = service.loaded.allocator  # read and checked by the loader, with the zones
    warn_unknown(service)
    if settings.mode == "off":
        log.info("allocator: off")
        return None
    pool = ProcessPoolExecutor(max_workers=settings.fit_workers,
                               mp_context=multiprocessing.get_context("spawn"))
    controller = Controller(
        service.store,
        lambda: service.loaded.policies.values(),
        settings,
        SystemClock(),
        io=service.run_in_io,
        refresh=service.refresh_live,
        health=getattr(service, "health", None),
        fit_executor=pool,
        # counts reach the store half a second after their flush interval ends
        # (app._flush_loop); the rest is room for a slow write
        settle=12.0,
        minute_retention=service.config.retention.minute,
        source="model" if settings.plan_on == "forecast" else "observed",
        leader=lambda: bool(getattr(service, "leader", True)),
        on_record=lambda record: service.apply_ttl_plan([c.to_config() for c in record.ttl]),
        hooks=HookRunner(secret=service.config.hook_secret),
    )

    async def run() -> None:
        try:
            await controller.run()
        finally:
            await controller.close()
            pool.shutdown(wait=False, cancel_futures=True)

    service.tasks.append(asyncio.get_running_loop().create_task(run(), name="allocator"))
    log.info("allocator: %s, window %gs, bucket %ds", settings.mode, settings.window,
             settings.bucket)
    return controller


def warn_unknown(service: Service) -> None:
    """Log the pins and events of allocator.yaml that name what no served policy has."""
    for problem in unknown_references(service.loaded.allocator,
                                      service.loaded.policies.values(), SETTINGS_FILE):
        log.warning("%s (ignored until the policy has it)", problem)


def use_settings(service: Service) -> None:
    """The service loaded new allocator settings: give them to the loop, or start one."""
    settings = service.loaded.allocator
    control: Controller | None = service.control
    if control is not None:
        warn_unknown(service)
        control.use_settings(settings)
    elif settings.mode != "off":
        async def start() -> None:
            service.control = await start_control(service)

        service.tasks.append(asyncio.get_running_loop().create_task(start()))
