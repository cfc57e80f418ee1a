"""Routes for what changes while running: allocations, forecasts, health, traffic.

These read the store (on its thread) and the service's current configuration. Pins and
releases write allocations through the store and then call `service.refresh_live()`, so the
answer table follows at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Literal

import dns.exception
import dns.name
from fastapi import APIRouter, Query, status

from shadowdns.api.context import Ctx, Operator, Reader
from shadowdns.api.errors import RESPONSES_READ, RESPONSES_WRITE, ApiError, ProblemItem
from shadowdns.api.models import (
    ActualPoint,
    AllocationDiff,
    AllocationOut,
    ForecastPointOut,
    ForecastSeries,
    GenerationOut,
    HealthCount,
    HealthEventOut,
    KindRates,
    PinBody,
    RatePoint,
    ResourceHealth,
    TrafficSeries,
    finite,
)
from shadowdns.errors import ConfigError, StoreError
from shadowdns.health.summary import PER_RESOURCE_LIMIT, effective_state
from shadowdns.resolver.explain import explain_snapshot
from shadowdns.resolver.snapshot import Config
from shadowdns.store import Allocation, Forecast, NewAllocation, Store
from shadowdns.store.base import RESOLUTION_SECONDS
from shadowdns.zones.policy_file import check_to_mapping

if TYPE_CHECKING:
    from shadowdns.allocator.controller import Controller

router = APIRouter(prefix="/api/v1")
ResolutionParam = Literal["minute", "5m", "hour"]


def allocation_out(a: Allocation, control: Controller | None = None) -> AllocationOut:
    """`a` as the API shows it; `control` (the service's controller, if it runs here)
    adds what holds a warming shadow back."""
    problem = control.problem(a.id) if control is not None else None
    return AllocationOut(id=a.id, di=a.di, resource=a.resource, region=a.region, state=a.state,
                         valid_from=a.valid_from, valid_until=a.valid_until,
                         generation=a.generation, reason=a.reason,
                         demand=finite(a.demand) or 0.0, pinned=a.pinned,
                         created_at=a.created_at, problem=problem)


def di_text(text: str, path: str = "query.di") -> str:
    """A DI name as the store keys it: absolute text."""
    try:
        return str(dns.name.from_text(text).to_text())
    except dns.exception.DNSException as exc:
        raise ApiError(422, "invalid", f"{text!r} is not a DNS name",
                       [ProblemItem(path=path, message=str(exc))]) from None


# -- allocations -------------------------------------------------------------------------


@router.get("/allocations", response_model=list[AllocationOut], responses=RESPONSES_READ,
            tags=["allocations"], summary="Allocations (active ones unless active=false)")
async def list_allocations(ctx: Ctx, who: Reader,
                           di: Annotated[str | None, Query(max_length=255)] = None,
                           active: bool = True,
                           limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
                           ) -> list[AllocationOut]:
    name = None if di is None else di_text(di)
    rows = await ctx.io(ctx.service.store.list_allocations, active, name)
    control = ctx.service.control
    return [allocation_out(a, control) for a in rows[-limit:]]


@router.get("/allocations/generation", response_model=GenerationOut, responses=RESPONSES_READ,
            tags=["allocations"], summary="The current generation and allocations by state")
async def generation(ctx: Ctx, who: Reader) -> GenerationOut:
    store = ctx.service.store

    def read() -> tuple[int, list[Allocation]]:
        return store.current_generation(), store.list_allocations(True, None)

    gen, rows = await ctx.io(read)
    by_state: dict[str, int] = {}
    for a in rows:
        by_state[a.state] = by_state.get(a.state, 0) + 1
    return GenerationOut(generation=gen, snapshot_generation=ctx.service.generation,
                         active=len(rows), by_state=by_state)


@router.get("/allocations/history", response_model=list[AllocationOut],
            responses=RESPONSES_READ, tags=["allocations"],
            summary="Every allocation, released ones included, newest last")
async def history(ctx: Ctx, who: Reader,
                  di: Annotated[str | None, Query(max_length=255)] = None,
                  since: float | None = None,
                  limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> list[AllocationOut]:
    name = None if di is None else di_text(di)
    rows = await ctx.io(ctx.service.store.list_allocations, False, name)
    if since is not None:
        rows = [a for a in rows if a.created_at >= since or
                (a.valid_until is not None and a.valid_until >= since)]
    rows.sort(key=lambda a: (a.created_at, a.id))
    return [allocation_out(a) for a in rows[-limit:]]


@router.get("/allocations/diff", response_model=AllocationDiff, responses=RESPONSES_READ,
            tags=["allocations"],
            summary="What changed since a generation: allocations added, and ended")
async def diff(ctx: Ctx, who: Reader,
               since_generation: Annotated[int, Query(ge=0)] = 0) -> AllocationDiff:
    store = ctx.service.store

    def read() -> tuple[int, list[Allocation]]:
        return store.current_generation(), store.list_allocations(False, None)

    gen, rows = await ctx.io(read)
    added = [a for a in rows if a.generation > since_generation]
    ended = [a for a in rows if a.generation <= since_generation and a.state in
             ("draining", "released")]
    return AllocationDiff(since_generation=since_generation, generation=gen,
                          added=[allocation_out(a) for a in added],
                          ended=[allocation_out(a) for a in ended])


@router.post("/allocations/pins", status_code=status.HTTP_201_CREATED,
             response_model=AllocationOut, responses=RESPONSES_WRITE, tags=["allocations"],
             summary="Pin a shadow: lend a resource to a DI for one region")
async def pin(body: PinBody, ctx: Ctx, who: Operator) -> AllocationOut:
    name = di_text(body.di, "body.di")
    policy = next((p for p in ctx.service.loaded.policies.values()
                   if dns.name.from_text(name) in p.dis), None)
    problems: list[ProblemItem] = []
    if policy is None:
        problems.append(ProblemItem(path="body.di", message=f"{name} is not a DI"))
    else:
        if body.resource not in policy.resources:
            problems.append(ProblemItem(path="body.resource", message=(
                f"no resource {body.resource!r} in the policy of {policy.origin}")))
        if body.region not in policy.locations:
            problems.append(ProblemItem(path="body.region", message=(
                f"no location {body.region!r} in the policy of {policy.origin}")))
    now = time.time()
    if body.until is not None and body.until <= now:
        problems.append(ProblemItem(path="body.until", message="must be in the future"))
    if problems:
        raise ApiError(422, "invalid", f"{len(problems)} problem(s) with the pin", problems)
    store = ctx.service.store

    def check() -> None:
        for a in store.list_allocations(True, name):
            if (a.resource, a.region) == (body.resource, body.region):
                raise ApiError(409, "exists", f"allocation {a.id} already lends {a.resource} "
                               f"to {name} in {a.region} (state {a.state})")

    def write() -> Allocation:
        check()
        return store.add_allocation(NewAllocation(
            di=name, resource=body.resource, region=body.region, valid_from=now,
            generation=store.current_generation(), created_at=now, state=body.state,
            valid_until=body.until, reason=body.reason or f"pinned by {who.name}",
            pinned=True))

    await ctx.io(check)
    # Audited first: the store assigns the id, so the entry names the pin by what it lends.
    await ctx.audit(who, "allocation.pin", f"allocation:{name}/{body.resource}@{body.region}",
                    None, body.model_dump())
    added = await ctx.io(write)
    await ctx.service.refresh_live()
    return allocation_out(added)


@router.delete("/allocations/{allocation_id}", response_model=AllocationOut,
               responses=RESPONSES_WRITE, tags=["allocations"],
               summary="Release an allocation (it stops answering at once)")
async def release(allocation_id: int, ctx: Ctx, who: Operator) -> AllocationOut:
    store = ctx.service.store

    def find() -> Allocation:
        found = [a for a in store.list_allocations(False, None) if a.id == allocation_id]
        if not found:
            raise ApiError(404, "not_found", f"allocation {allocation_id} does not exist")
        if found[0].state == "released":
            raise ApiError(409, "released", f"allocation {allocation_id} is already released")
        return found[0]

    def write() -> Allocation:
        try:
            return store.set_allocation_state(allocation_id, "released", time.time())
        except StoreError as exc:
            raise ApiError(409, "conflict", str(exc)) from None

    before = allocation_out(await ctx.io(find)).model_dump()
    await ctx.audit(who, "allocation.release", f"allocation:{allocation_id}", before,
                    {**before, "state": "released"})
    after = await ctx.io(write)
    await ctx.service.refresh_live()
    return allocation_out(after)


# -- forecasts ---------------------------------------------------------------------------


def _forecast_view(store: Store, resolution: ResolutionParam, di: str | None,
                   region: str | None, since: float, now: float, limit: int,
                   thresholds: Mapping[str, float] | None = None) -> list[ForecastSeries]:
    forecasts = {(f.di, f.region): f
                 for f in store.read_forecasts(resolution, di, region, past=True)}
    choices = {(c.di, c.region): c for c in store.read_model_choices(di)}
    step = RESOLUTION_SECONDS[resolution]
    demand = store.demand_series(resolution, since, now + step,
                                 None if di is None else [di])
    keys = sorted(set(forecasts) | {k for k in demand if region is None or k[1] == region})
    allocations = store.list_allocations(False, di)
    out: list[ForecastSeries] = []
    for key in keys[:limit]:
        f: Forecast | None = forecasts.get(key)
        c = choices.get(key)
        actual = demand.get(key, [])
        by_ts = dict(actual)
        # Buckets after the last one recorded may just not be rolled up yet: not zeros.
        last = actual[-1][0] if actual else -1
        errors = [abs(p.point - by_ts.get(p.ts, 0)) for p in (f.points if f else ())
                  if since <= p.ts <= last and p.ts + step <= now]
        out.append(ForecastSeries(
            di=key[0], region=key[1], resolution=resolution,
            model=f.model if f else (c.model if c else None),
            model_error=finite(c.error) if c else None,
            chosen_at=c.chosen_at if c else None,
            made_at=f.made_at if f else None,
            recent_error=finite(sum(errors) / len(errors)) if errors else None,
            threshold=None if thresholds is None else thresholds.get(key[0]),
            points=[ForecastPointOut(ts=p.ts, point=finite(p.point), upper=finite(p.upper))
                    for p in (f.points if f else ()) if p.ts >= since],
            actual=[ActualPoint(ts=ts, queries=q) for ts, q in actual],
            allocations=[allocation_out(a) for a in allocations
                         if a.di == key[0] and a.region == key[1]
                         and (a.valid_until is None or a.valid_until >= since)],
        ))
    return out


@router.get("/forecasts", response_model=list[ForecastSeries], responses=RESPONSES_READ,
            tags=["forecasts"],
            summary="Forecast vs actual demand per (DI, region), with the model and its error")
async def forecasts(ctx: Ctx, who: Reader,
                    di: Annotated[str | None, Query(max_length=255)] = None,
                    region: Annotated[str | None, Query(max_length=63)] = None,
                    resolution: ResolutionParam = "5m",
                    hours: Annotated[float, Query(gt=0, le=24 * 60)] = 6.0,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
                    ) -> list[ForecastSeries]:
    name = None if di is None else di_text(di)
    now = time.time()
    return await ctx.io(_forecast_view, ctx.service.store, resolution, name, region,
                        now - hours * 3600, now, limit, DIThresholds(ctx.service.loaded))


class DIThresholds(Mapping[str, float]):
    """Each served DI's threshold by its name as text, looked up per series shown (a
    million DIs make no table)."""

    def __init__(self, config: Config) -> None:
        self._policies = tuple(config.policies.values())

    def __getitem__(self, text: str) -> float:
        try:
            name = dns.name.from_text(text)
        except dns.exception.DNSException:
            raise KeyError(text) from None
        for policy in self._policies:
            found = policy.dis.get(name)
            if found is not None:
                return found.policy.threshold
        raise KeyError(text)

    def __iter__(self) -> Iterator[str]:
        return (n.to_text() for p in self._policies for n in p.dis)

    def __len__(self) -> int:
        return sum(len(p.dis) for p in self._policies)


# -- health ------------------------------------------------------------------------------


@router.get("/health", response_model=list[ResourceHealth], responses=RESPONSES_READ,
            tags=["health"], summary="Resources' state: probes, override, effective (paged)")
async def health(ctx: Ctx, who: Reader,
                 offset: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=PER_RESOURCE_LIMIT)] = PER_RESOURCE_LIMIT,
                 ) -> list[ResourceHealth]:
    """Zone by zone in policy order, `limit` from `offset` on (the counts of all are at
    /api/v1/health/summary): a page costs its own resources, not every resource."""
    states = {h.resource: h for h in await ctx.io(ctx.service.store.health_states)}
    out: list[ResourceHealth] = []
    skip = offset
    for origin, policy in ctx.service.loaded.policies.items():
        resources = policy.resources
        if skip >= len(resources):
            skip -= len(resources)
            continue
        for rid in itertools.islice(resources, skip, skip + limit - len(out)):
            res = resources[rid]
            h = states.get(rid)
            probe = None if h is None else h.state
            out.append(ResourceHealth(
                zone=origin.to_text(), resource=rid, location=res.location, role=res.role,
                address=res.address, address6=res.address6, override=res.override,
                probe_state=probe, state=effective_state(res, probe),
                since=None if h is None else h.since, reason="" if h is None else h.reason,
                check=None if res.check is None else check_to_mapping(res.check)))
        skip = 0
        if len(out) >= limit:
            break
    return out


@router.get("/health/summary", response_model=list[HealthCount], responses=RESPONSES_READ,
            tags=["health"], summary="How many resources are up and down, by zone, location "
            "and role")
async def health_summary(ctx: Ctx, who: Reader) -> list[HealthCount]:
    """From per-policy counts kept while the policy is loaded, with the probes' current
    states applied: cheap at any number of resources."""
    states = {h.resource: h.state for h in await ctx.io(ctx.service.store.health_states)}
    policies = ctx.service.loaded.policies
    counts = await ctx.io(ctx.health_summaries.counts, policies, states)
    return [HealthCount(zone=zone, location=location, role=role, state=state, resources=n)
            for (zone, location, role, state), n in sorted(counts.items())]


@router.get("/health/events", response_model=list[HealthEventOut], responses=RESPONSES_READ,
            tags=["health"], summary="Recent changes of resource state, oldest first")
async def health_events(ctx: Ctx, who: Reader,
                        resource: Annotated[str | None, Query(max_length=63)] = None,
                        since: float | None = None,
                        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
                        ) -> list[HealthEventOut]:
    events = await ctx.io(ctx.service.store.health_events, resource, since, limit)
    return [HealthEventOut(resource=e.resource, ts=e.ts, old=e.old, new=e.new, reason=e.reason)
            for e in events]


# -- traffic -----------------------------------------------------------------------------


@router.get("/traffic", response_model=list[TrafficSeries], responses=RESPONSES_READ,
            tags=["traffic"], summary="Recent demand per DI and region")
async def traffic(ctx: Ctx, who: Reader,
                  di: Annotated[str | None, Query(max_length=255)] = None,
                  resolution: ResolutionParam = "minute",
                  minutes: Annotated[float, Query(gt=0, le=60 * 24 * 60)] = 60.0,
                  ) -> list[TrafficSeries]:
    name = None if di is None else di_text(di)
    now = time.time()
    series = await ctx.io(ctx.service.store.demand_series, resolution, now - minutes * 60,
                          now + 60, None if name is None else [name])
    return [TrafficSeries(di=d, region=r, points=[ActualPoint(ts=ts, queries=q)
                                                  for ts, q in points])
            for (d, r), points in sorted(series.items())]


@router.get("/traffic/kinds", response_model=KindRates, responses=RESPONSES_READ,
            tags=["traffic"], summary="Query rate by answer kind (shadow, primary, ...)")
async def traffic_kinds(ctx: Ctx, who: Reader) -> KindRates:
    return KindRates(interval=ctx.kinds.interval,
                     points=[RatePoint(ts=ts, rates=rates) for ts, rates in ctx.kinds.points])


# -- explain -------------------------------------------------------------------------------


@router.get("/explain", responses=RESPONSES_READ, tags=["explain"],
            summary="The answer a client would get now, and why (dry run)")
async def explain(ctx: Ctx, who: Reader,
                  name: Annotated[str, Query(min_length=1, max_length=255)],
                  client: Annotated[str, Query(min_length=1, max_length=64,
                                               description="IP, or IP/PREFIX as ECS")],
                  qtype: Annotated[str, Query(max_length=16)] = "A") -> dict[str, object]:
    """`shadowdns explain --api`: run on the snapshot this server answers from, so it sees
    the zones, shadows and health it serves (not files elsewhere)."""
    snapshot = ctx.service.engine.snapshot
    try:
        report = await asyncio.to_thread(explain_snapshot, snapshot, name, client, qtype)
    except ConfigError as exc:
        field = {"--client": "query.client", "--qtype": "query.qtype"}
        raise ApiError(422, "invalid", "cannot explain this query", [
            ProblemItem(path=field.get(p.file, "query.name"), message=p.reason)
            for p in exc.problems]) from None
    out = report.to_json()
    out["source"] = "running server"
    return out
