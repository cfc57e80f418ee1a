"""What every route shares: the running service, the file editor, auth and the audit log.

Routes get an `ApiContext` and a `Principal` through FastAPI dependencies; the role a route
needs is part of its signature (`Reader`, `Operator`, `Admin`), so it shows in one place.
The store is touched only through `ApiContext.io` (the service's store thread). The
service is seen through `ApiService`, which lists what the API reads and calls of it (the
composition root `app.Service` has it all), so the API never imports the root.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from shadowdns.api.auth import Principal, Role, check_token, hash_token, parse_bearer, require
from shadowdns.api.config_files import ConfigFiles, FilesConfig, Reloader
from shadowdns.api.errors import ApiError
from shadowdns.api.limits import LoginGuard
from shadowdns.api.metrics import MetricsSource
from shadowdns.health.summary import HealthSummaries
from shadowdns.runtime import IO
from shadowdns.store import AuditEntry, Store

if TYPE_CHECKING:
    from shadowdns.resolver.server import DNSServer

log = logging.getLogger(__name__)
T = TypeVar("T")

AUDIT_UNWRITABLE = "audit_unwritable"  # the degraded reason /readyz names
KIND_SAMPLE_INTERVAL = 5.0
KIND_SAMPLES = 360  # half an hour at 5 s


class ApiConfig(FilesConfig, Protocol):
    """The settings of `serve` the API reads (`ServeConfig` has them)."""

    @property
    def api(self) -> str | None: ...  # HOST:PORT
    @property
    def api_cert(self) -> Path | None: ...
    @property
    def api_key(self) -> Path | None: ...
    @property
    def api_max_body(self) -> int: ...
    @property
    def api_login_failures(self) -> int: ...
    @property
    def access_log(self) -> str: ...


class ApiService(Reloader, MetricsSource, Protocol):
    """What the API takes from the running service: the file editor's and the metrics'
    needs, the store and its thread, the DNS listeners, and a live-state refresh."""

    @property
    def config(self) -> ApiConfig: ...
    @property
    def store(self) -> Store: ...
    @property
    def server(self) -> DNSServer: ...  # /readyz: whether the listeners are bound

    @property
    def run_in_io(self) -> IO: ...

    async def refresh_live(self) -> bool: ...  # after a write of allocations or health


class KindRates:
    """Queries per second by answer kind, sampled from the engine's counters.

    The engine counts per (qtype, rcode, kind, region) on the query path; this turns the
    totals into rates every few seconds for the dashboard, without touching the hot path.
    """

    def __init__(self, read: Callable[[], dict[str, int]], interval: float,
                 size: int = KIND_SAMPLES) -> None:
        self.read = read
        self.interval = interval
        self.points: deque[tuple[float, dict[str, float]]] = deque(maxlen=size)
        self._last: tuple[float, dict[str, int]] | None = None

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        totals = self.read()
        if self._last is not None:
            then, before = self._last
            span = now - then
            if span > 0:
                rates = {kind: max(0, count - before.get(kind, 0)) / span
                         for kind, count in totals.items()}
                self.points.append((now, rates))
        self._last = (now, totals)


def kind_totals(engine: Any) -> dict[str, int]:
    """Queries answered so far by kind (shadow, primary, static, fallback, ...)."""
    stats = getattr(engine, "query_stats", None)
    totals: dict[str, int] = {}
    if stats is None:
        return totals
    for (_qtype, _rcode, kind, _region), count in stats():
        totals[kind] = totals.get(kind, 0) + count
    return totals


class ApiContext:
    """The service and helpers one API instance works with."""

    def __init__(self, service: ApiService,
                 kind_interval: float = KIND_SAMPLE_INTERVAL) -> None:
        self.service = service
        self.files = ConfigFiles(service)
        self.started = time.time()
        self.kinds = KindRates(lambda: kind_totals(service.engine), kind_interval)
        self.logins = LoginGuard(service.config.api_login_failures)
        self.health_summaries = HealthSummaries()  # /metrics and /api/v1/health read it

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the store's thread."""
        return await self.service.run_in_io(fn, *args)

    async def audit(self, who: Principal | None, action: str, obj: str,
                    before: object = None, after: object = None) -> None:
        """Record a change made through the API, or raise 503 `audit_unavailable`.

        Callers record before the change is served and undo it when this raises (see
        `ConfigFiles.apply`), so no change goes unaudited and none is served unaudited.
        While entries cannot be written, /readyz reports `audit_unwritable`; the next
        entry written clears it.
        """
        entry = AuditEntry(
            ts=time.time(), token_id="server" if who is None else who.token_id,
            action=action, object=obj,
            before_json=None if before is None else json.dumps(before, default=str),
            after_json=None if after is None else json.dumps(after, default=str),
        )
        degraded = self.service.degraded
        try:
            await self.io(self.service.store.add_audit, entry)
        except Exception as exc:
            log.error("cannot write the audit entry %s %s, refusing the change: %s",
                      action, obj, exc)
            degraded[AUDIT_UNWRITABLE] = f"the audit log cannot be written: {exc}"
            raise ApiError(503, "audit_unavailable",
                           f"the audit log cannot be written ({exc}); nothing was changed") \
                from None
        if AUDIT_UNWRITABLE in degraded:
            degraded.pop(AUDIT_UNWRITABLE, None)
            log.warning("the audit log is writable again")


def get_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False, description="a token from `shadowdns token create`")


def _needs(role: Role) -> Callable[..., Any]:
    async def dependency(request: Request, ctx: Ctx,
                         _declared: Annotated[Any, Depends(_bearer)]) -> Principal:
        address = request.client.host if request.client else "unknown"
        failures = request.app.state.api_metrics.login_failures
        try:
            ctx.logins.check(address)
        except ApiError:
            failures.labels("limited").inc()
            raise
        try:
            token = parse_bearer(request.headers.get("authorization"))
            row = await ctx.io(ctx.service.store.get_token_by_hash, hash_token(token))
            principal = check_token(token, row)
        except ApiError as exc:
            count = ctx.logins.failed(address)
            failures.labels("unauthorized").inc()
            log.warning("failed login from %s (%d in %g s): %s", address, count,
                        ctx.logins.window, exc.message)
            raise
        require(principal, role)
        request.state.principal = principal
        return principal

    return dependency


Reader = Annotated[Principal, Depends(_needs("reader"))]
Operator = Annotated[Principal, Depends(_needs("operator"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
