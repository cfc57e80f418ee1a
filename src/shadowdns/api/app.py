"""Builds the ASGI application of one running service: routes, error handlers, metrics.

`create_app` is the API's composition root. It is given the service and a registry; it
creates no globals, so tests can build as many apps as they like.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from shadowdns import __version__
from shadowdns.api import admin, allocator, live, policy, status, zones
from shadowdns.api.context import ApiContext, ApiService
from shadowdns.api.errors import install_handlers
from shadowdns.api.limits import BodyLimits
from shadowdns.api.metrics import ApiMetrics, ServiceCollector

access_log = logging.getLogger("shadowdns.api.access")
READS = frozenset({"GET", "HEAD", "OPTIONS"})

DESCRIPTION = """\
Operate a shadowdns server: zones and RRsets (RFC 1035 master files), DIs and their
policies, resources and health overrides, shadow allocations, forecasts, health and traffic.

Authenticate with `Authorization: Bearer TOKEN` (create one with `shadowdns token create
--role reader|operator|admin`). Reads need reader, changes operator, tokens and
whole-zone replacement or deletion admin. Changes accept `If-Match` with the ETag of the
object they are based on (412 when it changed meanwhile). Errors are
`{"error": {"status", "code", "message", "problems": [{"path", "message", "line"}]}}`.
"""


def create_app(service: ApiService, registry: CollectorRegistry | None = None,
               context: ApiContext | None = None) -> FastAPI:
    app = FastAPI(title="shadowdns", version=__version__, description=DESCRIPTION,
                  openapi_url="/api/v1/openapi.json", docs_url=None, redoc_url=None)
    registry = registry or CollectorRegistry(auto_describe=True)
    ctx = context or ApiContext(service)
    collector = ServiceCollector(service, ctx.health_summaries)
    registry.register(collector)
    api_metrics = ApiMetrics(registry)
    access = service.config.access_log
    app.state.ctx = ctx
    app.state.registry = registry
    app.state.collector = collector
    install_handlers(app)
    for module in (zones, policy, allocator, live, admin, status):
        app.include_router(module.router)
    app.mount("/dashboard", StaticFiles(directory=status.dashboard_dir()), name="dashboard")

    @app.middleware("http")
    async def count_requests(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        api_metrics.requests.labels(request.method, template, str(response.status_code)).inc()
        seconds = time.perf_counter() - start
        api_metrics.duration.labels(request.method, template).observe(seconds)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        status_code = response.status_code
        if access == "off" or (access == "changes" and request.method in READS
                               and status_code < 400):
            return response
        principal = request.scope.get("state", {}).get("principal")
        who = "-" if principal is None else principal.name
        # The token's name (set by authentication), never the token itself.
        access_log.info("%s %s %d %.1fms token=%s", request.method, request.url.path,
                        response.status_code, seconds * 1000, who,
                        extra={"method": request.method, "path": request.url.path,
                               "status": response.status_code,
                               "duration_ms": round(seconds * 1000, 3), "token": who})
        return response

    # Outermost, so a body is measured before anything reads it (and before the token).
    app.add_middleware(BodyLimits, max_body=service.config.api_max_body)
    app.state.api_metrics = api_metrics
    return app
