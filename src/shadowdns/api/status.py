"""Liveness, readiness, /metrics and the dashboard page: what needs no token.

Liveness and readiness are different questions (as in CoreDNS): /healthz says the process
answers HTTP; /readyz says it can do its job (zones loaded, store reachable, DNS listeners
up) and lists what is not ready, with 503 until all are. A server that answers but not as
configured (a reload refused, so the previous configuration is served) is "degraded": still
200, with the reasons listed, so a load balancer keeps it while an operator is told.
/api/v1/status says the same to a token holder, with the last reload's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shadowdns.api.context import AUDIT_UNWRITABLE, Ctx, Reader
from shadowdns.api.errors import RESPONSES_READ, ApiError
from shadowdns.api.metrics import read_store_view
from shadowdns.api.models import Alive, Readiness, ReloadOut, StatusOut

log = logging.getLogger(__name__)
router = APIRouter()
STORE_TIMEOUT = 2.0


def dashboard_dir() -> Path:
    return Path(str(resources.files("shadowdns").joinpath("data/dashboard")))


@router.get("/healthz", response_model=Alive, tags=["status"],
            summary="Liveness: the process answers")
async def healthz() -> Alive:
    return Alive()


@router.get("/readyz", response_model=Readiness, tags=["status"],
            responses={503: {"model": Readiness, "description": "not ready; see not_ready"}},
            summary="Readiness: zones loaded, store reachable, DNS listeners up")
async def readyz(ctx: Ctx) -> JSONResponse:
    service = ctx.service
    try:
        await asyncio.wait_for(ctx.io(service.store.current_generation), STORE_TIMEOUT)
        store_ok = True
    except Exception as exc:
        log.warning("readiness: the store is not reachable: %s", exc)
        store_ok = False
    checks = {
        "zones_loaded": bool(service.loaded.zones),
        "store_reachable": store_ok,
        "listeners_up": bool(service.server.bound),
    }
    if AUDIT_UNWRITABLE in service.degraded:  # see whether it takes entries again
        with contextlib.suppress(ApiError):
            await ctx.audit(None, "audit.resumed", "audit:log")
    if AUDIT_UNWRITABLE in service.degraded:  # changes are refused: not ready
        checks[AUDIT_UNWRITABLE] = False
    ready = all(checks.values())
    degraded = dict(service.degraded)
    body = Readiness(ready=ready, status=_status(ready, degraded), checks=checks,
                     not_ready=[name for name, ok in checks.items() if not ok],
                     degraded=degraded)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


def _status(ready: bool, degraded: dict[str, str]) -> Literal["ready", "degraded", "not_ready"]:
    if not ready:
        return "not_ready"
    return "degraded" if degraded else "ready"


@router.get("/api/v1/status", response_model=StatusOut, responses=RESPONSES_READ,
            tags=["status"], summary="What is served and how the last reload went")
async def status(ctx: Ctx, who: Reader) -> StatusOut:
    service = ctx.service
    reload = service.reload_status
    ready = bool(service.loaded.zones) and bool(service.server.bound)
    degraded = dict(service.degraded)
    return StatusOut(
        status=_status(ready, degraded), degraded=degraded, generation=service.generation,
        zones=[origin.to_text() for origin in service.loaded.zones],
        reload=ReloadOut(ok=reload.error is None, last_attempt=reload.last_attempt,
                         last_success=reload.last_success, failures=reload.failures,
                         error=reload.error))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, ctx: Ctx) -> Response:
    collector = request.app.state.collector
    try:
        collector.view = await asyncio.wait_for(
            ctx.io(read_store_view, ctx.service.store), STORE_TIMEOUT)
        # a policy loaded since the last scrape is counted off the event loop
        await ctx.io(ctx.health_summaries.warm, ctx.service.loaded.policies)
    except Exception as exc:
        log.warning("metrics: cannot read the store: %s", exc)
        from dataclasses import replace

        collector.view = replace(collector.view, ok=False)
    return Response(generate_latest(request.app.state.registry),
                    media_type=CONTENT_TYPE_LATEST)


_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(dashboard_dir() / "index.html", media_type="text/html",
                        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})
