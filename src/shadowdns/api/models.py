"""Request and response bodies of the REST API (pydantic), i.e. the OpenAPI schema.

Every request body refuses fields it does not define (`extra="forbid"`, 422 naming the field):
a misspelt `tll` must not be dropped in silence while the edit is reported as done.

Policy objects (DIs, resources, locations, the whole policy) travel in the policy file's own
shape, as free-form objects: `zones.policy_file.policy_from_mapping` is their one validator,
so the API and the file can never disagree about what is valid.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TTL = 2**31 - 1
Role = Literal["reader", "operator", "admin"]
OverrideValue = Literal["obey", "up", "down"]


class Strict(BaseModel):
    """The base of every request body: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such values become null."""
    if value is None or not math.isfinite(value):
        return None
    return value


# -- zones and RRsets ----------------------------------------------------------------------


class ZoneSummary(BaseModel):
    origin: str = Field(examples=["example.com."])
    file: str
    serial: int
    rrsets: int
    dis: int
    policy: bool = Field(description="whether a policy file stands beside the zone")


class ZoneCreate(Strict):
    origin: str = Field(min_length=1, max_length=255, examples=["example.com."])
    text: str | None = Field(
        default=None, max_length=16 * 1024 * 1024,
        description="RFC 1035 master file; without it a zone with SOA and NS is made")
    nameservers: list[str] = Field(default_factory=list, max_length=16,
                                   description="NS names for a new empty zone (default ns1)")
    ttl: int = Field(default=3600, ge=0, le=MAX_TTL)


class ZoneImport(Strict):
    text: str = Field(max_length=16 * 1024 * 1024, description="RFC 1035 master file")


class RRset(BaseModel):
    name: str = Field(examples=["www.example.com."])
    type: str = Field(examples=["A"])
    ttl: int
    rdata: list[str] = Field(examples=[["192.0.2.80"]])


class RRsetBody(Strict):
    ttl: int = Field(ge=0, le=MAX_TTL)
    rdata: list[str] = Field(min_length=1, max_length=1000)


class RRsetCreate(RRsetBody):
    name: str = Field(min_length=1, max_length=255, examples=["www"])
    type: str = Field(min_length=1, max_length=16, examples=["A"])


# -- policy objects ------------------------------------------------------------------------


class PolicyObject(BaseModel):
    """A DI, resource or location in the policy file's shape, with the zone it belongs to."""

    zone: str
    name: str
    config: dict[str, Any]


class PolicyDocument(BaseModel):
    zone: str
    policy: dict[str, Any] | None


class OverrideBody(Strict):
    override: OverrideValue = Field(
        description="up or down pin the resource's health; obey follows the probes")


# -- allocations ---------------------------------------------------------------------------


class AllocationOut(BaseModel):
    id: int
    di: str
    resource: str
    region: str
    state: str
    valid_from: float
    valid_until: float | None
    generation: int
    reason: str
    demand: float
    pinned: bool
    created_at: float
    problem: str | None = Field(
        default=None, description="why the shadow is held out of answers (a warm-up hook "
        "that failed after its retries, or is still running), if anything holds it")


class PinBody(Strict):
    di: str = Field(min_length=1, max_length=255, examples=["app.example.com."])
    resource: str = Field(min_length=1, max_length=63)
    region: str = Field(min_length=1, max_length=63)
    until: float | None = Field(default=None, description="epoch seconds; default: until released")
    reason: str = Field(default="", max_length=500)
    state: Literal["warming", "ready"] = "ready"


class GenerationOut(BaseModel):
    generation: int = Field(description="the allocator's generation in the store")
    snapshot_generation: int = Field(description="the answer table generation being served")
    active: int
    by_state: dict[str, int]


class AllocationDiff(BaseModel):
    since_generation: int
    generation: int
    added: list[AllocationOut]
    ended: list[AllocationOut]


# -- forecasts, health, traffic --------------------------------------------------------------


class ForecastPointOut(BaseModel):
    ts: int
    point: float | None
    upper: float | None


class ActualPoint(BaseModel):
    ts: int
    queries: int


class ForecastSeries(BaseModel):
    di: str
    region: str
    resolution: str
    model: str | None
    model_error: float | None = Field(description="backtest error when the model was chosen")
    chosen_at: float | None
    made_at: float | None
    recent_error: float | None = Field(
        description="mean absolute error of the forecasts against actual demand so far")
    threshold: float | None = Field(
        default=None, description="the DI's threshold: demand per bucket that calls for a "
                                  "shadow (null when the DI is no longer served)")
    points: list[ForecastPointOut] = Field(
        description="what was forecast for each bucket: past ones (as forecast before they "
                    "began, kept for a few hours) and the newest forecast's")
    actual: list[ActualPoint]
    allocations: list[AllocationOut]


class ResourceHealth(BaseModel):
    zone: str
    resource: str
    location: str
    role: str
    address: str | None
    address6: str | None
    override: OverrideValue
    probe_state: Literal["up", "down"] | None = Field(description="what the probes say")
    state: Literal["up", "down"] = Field(description="what answers use (override applied)")
    since: float | None
    reason: str
    check: dict[str, Any] | None


class HealthCount(BaseModel):
    zone: str
    location: str
    role: str
    state: Literal["up", "down"] = Field(description="what answers use (override applied)")
    resources: int


class HealthEventOut(BaseModel):
    resource: str
    ts: float
    old: str | None
    new: str
    reason: str


class TrafficSeries(BaseModel):
    di: str
    region: str
    points: list[ActualPoint]


class RatePoint(BaseModel):
    ts: float
    rates: dict[str, float]


class KindRates(BaseModel):
    """Queries per second by kind of answer, sampled by the API every few seconds."""

    interval: float
    points: list[RatePoint]


class LocationOut(BaseModel):
    zone: str
    name: str
    lat: float
    lon: float
    continent: str | None


# -- tokens, audit, status -----------------------------------------------------------------


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    created_at: float
    expires_at: float | None = Field(default=None, description="epoch seconds; null: never")


class TokenCreate(Strict):
    role: Role
    name: str = Field(default="", max_length=100)
    expires_in: float | None = Field(default=None, gt=0, le=10 * 365 * 86400,
                                     description="seconds until the token is refused "
                                     "(default: never)")


class TokenCreated(TokenOut):
    token: str = Field(description="the secret; shown only this once")


class AuditOut(BaseModel):
    ts: float
    token_id: str | None
    action: str
    object: str
    before: Any = None
    after: Any = None


class WhoAmI(BaseModel):
    token_id: str
    name: str
    role: str


class Alive(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    ready: bool
    status: Literal["ready", "degraded", "not_ready"]
    checks: dict[str, bool]
    not_ready: list[str]
    degraded: dict[str, str] = Field(
        default_factory=dict,
        description="why the server answers but not as configured (name: reason)")


class ReloadOut(BaseModel):
    ok: bool = Field(description="whether the last reload (or the start-up load) worked")
    last_attempt: float | None = Field(description="epoch seconds of the last reload; null "
                                       "when none has run since start-up")
    last_success: float = Field(description="epoch seconds of the last load that worked")
    failures: int = Field(description="reloads refused since start-up")
    error: str | None = Field(description="why the last reload failed")


class StatusOut(BaseModel):
    status: Literal["ready", "degraded", "not_ready"]
    degraded: dict[str, str]
    generation: int
    zones: list[str]
    reload: ReloadOut


# -- allocator.yaml ------------------------------------------------------------------------


class AllocatorFile(BaseModel):
    path: str = Field(description="the file in the zones directory")
    state: Literal["applied", "absent", "changed", "invalid"] = Field(
        description="applied: the file holds the running settings; absent: no file (the "
                    "defaults run); changed: it differs and waits for a reload; invalid: a "
                    "reload would refuse it (see problems)")
    problems: list[str] = Field(default_factory=list, description="file:line: reason")


class AllocatorDocument(BaseModel):
    allocator: dict[str, Any] = Field(
        description="the running settings, every key, in allocator.yaml's shape")
    file: AllocatorFile


class AllocatorItem(BaseModel):
    id: str = Field(description="stable id of this entry (a digest of its content)")
    config: dict[str, Any] = Field(description="the entry in allocator.yaml's shape")
