"""The one interface every store backend implements, and the rows it reads and writes.

The control plane (predictor, allocator, health, API) talks to persistence only through
`Store`, so SQLite (the default) and PostgreSQL (for a fleet) are interchangeable. The rows
are frozen values checked on construction; a backend converts them to and from its tables.

Times are epoch seconds (UTC). Demand buckets are integers aligned to their resolution
(`RESOLUTION_SECONDS`); every other time is a float.

Every method that writes more than one row does it in one transaction: when it raises
(`StoreError`), nothing it was asked to write is stored. The fleet primitives (change
generation, notifications, leader lock) are described in `shadowdns.store.fleet`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

import dns.name

from shadowdns.kinds import ANSWER_KINDS, AnswerKind
from shadowdns.store.demand_columns import DemandColumns
from shadowdns.store.demand_columns import SeriesKey as SeriesKey  # re-exported
from shadowdns.store.fleet import CHANNELS, ChangeListener, check_payload
from shadowdns.zones.policy import Policy

Resolution = Literal["minute", "5m", "hour"]
DemandKind = AnswerKind  # demand is kept per kind of answer (`shadowdns.kinds`)
AllocationState = Literal["warming", "ready", "draining", "released"]
ANSWERING_STATES: frozenset[AllocationState] = frozenset({"ready", "draining"})
"""Allocation states whose shadows answer queries (a draining shadow answers until released)."""
HealthStatus = Literal["up", "down"]
ConfigKind = Literal["zone", "policy", "allocator"]

RESOLUTIONS: tuple[Resolution, ...] = get_args(Resolution)
DEMAND_KINDS: tuple[DemandKind, ...] = ANSWER_KINDS
ALLOCATION_STATES: tuple[AllocationState, ...] = get_args(AllocationState)
HEALTH_STATUSES: tuple[HealthStatus, ...] = get_args(HealthStatus)
CONFIG_KINDS: tuple[ConfigKind, ...] = get_args(ConfigKind)

RESOLUTION_SECONDS: Mapping[Resolution, int] = {"minute": 60, "5m": 300, "hour": 3600}

AllocationKey = tuple[str, str, str]
"""One active allocation: (di, resource, region)."""

DAY = 86400.0


def bucket_start(ts: float, resolution: Resolution) -> int:
    """The start of the bucket of `resolution` that contains the instant `ts`."""
    size = RESOLUTION_SECONDS[resolution]
    return math.floor(ts / size) * size


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long demand is kept per resolution, in seconds (rows older than now - this go)."""

    minute: float = 2 * DAY
    five_minute: float = 60 * DAY
    hour: float = 730 * DAY
    # forecast points of buckets now past (what was forecast for them, shown over the
    # actuals): one row per series and bucket, so kept for the dashboard's span only
    forecasts: float = 6 * 3600.0

    def __post_init__(self) -> None:
        for value in (self.minute, self.five_minute, self.hour, self.forecasts):
            if not value > 0:
                raise ValueError(f"retention {value} must be positive")

    def seconds(self, resolution: Resolution) -> float:
        return {"minute": self.minute, "5m": self.five_minute, "hour": self.hour}[resolution]


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    """Metadata of one loaded zone; `origin` is absolute text (`example.com.`)."""

    origin: str
    file: str | None
    serial: int
    loaded_at: float


def check_config_file(origin: str, kind: str, text: str = "") -> None:
    """Refuse a shared config file the store cannot keep or announce: an empty origin, one
    over a notification payload (it is the payload), a kind other than "zone", "policy" or
    "allocator" (`allocator.yaml`, stored under the origin "."), or text containing NUL
    (PostgreSQL text cannot hold it)."""
    _check_choice("config file kind", kind, CONFIG_KINDS)
    if not origin:
        raise ValueError("config file origin must not be empty")
    check_payload(origin)
    if "\x00" in text:
        raise ValueError(f"{kind} file of {origin} contains NUL")


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The text of one zone's master file ("zone") or policy file ("policy"), or of the
    server's `allocator.yaml` ("allocator", origin "."), shared by the nodes of a fleet;
    `updated_at` is when its text last changed. `kind` is one of `CONFIG_KINDS` (checked),
    typed `str` so callers can key files by plain strings."""

    origin: str
    kind: str
    text: str
    updated_at: float

    def __post_init__(self) -> None:
        check_config_file(self.origin, self.kind, self.text)


def check_key_file(origin: str, name: str) -> None:
    """Refuse a shared key file the store cannot keep or a node could not write: an empty
    origin or one over a notification payload (it is the payload), or a name that is not
    a plain file name of the key directory (empty, hidden, holding a path separator or
    NUL, over 255 bytes)."""
    if not origin:
        raise ValueError("key file origin must not be empty")
    check_payload(origin)
    if (not name or name.startswith(".") or "/" in name or "\x00" in name
            or len(name.encode()) > 255):
        raise ValueError(f"key file name {name!r} is not a plain file name")


@dataclass(frozen=True, slots=True)
class KeyFile:
    """One file of the DNSSEC key directory (`serve --dnssec-keys`) shared by the nodes of
    a fleet: a private key of zone `origin` (PEM), its ZSK schedule, or the fleet's key
    policy (origin "."), as `data`, under its file `name` in the directory; `created_at`
    is when the store first held this content. Private keys: no API lists these rows, and
    whoever can read the store can sign for the zone."""

    origin: str
    name: str
    data: bytes = field(repr=False)  # never the key itself in a log or a traceback
    created_at: float

    def __post_init__(self) -> None:
        check_key_file(self.origin, self.name)


@dataclass(frozen=True, slots=True)
class DemandRow:
    """Queries answered for one series in one minute, by kind of answer.

    `bucket_start` is any instant inside the minute; the store floors it to the minute.
    """

    di: str
    region: str
    bucket_start: int
    kind: DemandKind
    queries: int

    def __post_init__(self) -> None:
        if not self.di or not self.region:
            raise ValueError("di and region must not be empty")
        if self.bucket_start < 0:
            raise ValueError(f"bucket_start {self.bucket_start} is before 1970")
        _check_choice("kind", self.kind, DEMAND_KINDS)
        if self.queries < 0:
            raise ValueError(f"queries {self.queries} is negative")


@dataclass(frozen=True, slots=True)
class StandbyCandidate:
    """A standby resource near a location, with what is left of its capacity."""

    resource: str
    location: str
    km: float
    capacity: float
    load: float

    @property
    def available(self) -> float:
        """Capacity minus the demand of its non-released allocations (may be negative)."""
        return self.capacity - self.load


@dataclass(frozen=True, slots=True)
class NewAllocation:
    """An allocation to be written; the store assigns `id`."""

    di: str
    resource: str
    region: str
    valid_from: float
    generation: int
    created_at: float
    state: AllocationState = "warming"
    valid_until: float | None = None
    reason: str = ""
    demand: float = 0.0
    pinned: bool = False

    def __post_init__(self) -> None:
        _check_choice("allocation state", self.state, ALLOCATION_STATES)
        if self.demand < 0 or math.isnan(self.demand):
            raise ValueError(f"allocation demand {self.demand} must be >= 0")


@dataclass(frozen=True, slots=True)
class Allocation:
    """A standby resource lent to a DI as a shadow for clients of one region."""

    id: int
    di: str
    resource: str
    region: str
    state: AllocationState
    valid_from: float
    valid_until: float | None
    generation: int
    reason: str
    demand: float
    pinned: bool
    created_at: float

    @property
    def key(self) -> AllocationKey:
        return (self.di, self.resource, self.region)


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """Predicted queries of one future bucket: the point forecast and an upper bound."""

    ts: int
    point: float
    upper: float


@dataclass(frozen=True, slots=True)
class Forecast:
    """One forecast of one series, made at `made_at` by `model`."""

    di: str
    region: str
    resolution: Resolution
    made_at: float
    model: str
    points: tuple[ForecastPoint, ...]

    def __post_init__(self) -> None:
        _check_choice("resolution", self.resolution, RESOLUTIONS)

    @property
    def first_ts(self) -> int:
        """The first bucket this forecast covers (with no points: from when it was made)."""
        return min(p.ts for p in self.points) if self.points else math.floor(self.made_at)


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """Which model forecasts a series, and its backtest error when chosen."""

    di: str
    region: str
    model: str
    error: float
    chosen_at: float


@dataclass(frozen=True, slots=True)
class HealthState:
    """The current up/down state of one resource, since when and why."""

    resource: str
    state: HealthStatus
    since: float
    reason: str = ""

    def __post_init__(self) -> None:
        _check_choice("health state", self.state, HEALTH_STATUSES)


@dataclass(frozen=True, slots=True)
class HealthObservation:
    """What one node of a fleet last saw of a resource, and when."""

    resource: str
    node: str
    state: HealthStatus
    ts: float

    def __post_init__(self) -> None:
        _check_choice("health state", self.state, HEALTH_STATUSES)


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """One change of a resource's state; `old` is None for its first known state."""

    resource: str
    ts: float
    old: HealthStatus | None
    new: HealthStatus
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API credential; only the hash of the secret is stored."""

    id: str
    name: str
    role: str
    hash: str
    created_at: float
    expires_at: float | None = None  # epoch seconds; None: never


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change made through the API: who, what, and the object before and after."""

    ts: float
    token_id: str | None
    action: str
    object: str
    before_json: str | None = None
    after_json: str | None = None


class Store(Protocol):
    """Persistence of shadowdns: zones, demand, policy graph, allocations, forecasts, health.

    Demand is kept at three resolutions. `add_demand` writes minute buckets; `rollup` adds
    complete minutes to the 5-minute and hourly tables, so those never hold a partly
    filled bucket. A bucket that has no row had zero queries: readers fill gaps with 0.
    Every write of several rows is one transaction; on StoreError nothing was written.
    Writes that change answers bump `change_generation` and notify its channel
    (`shadowdns.store.fleet.CHANNELS`) in the same transaction.
    """

    def close(self) -> None: ...

    # zones
    def upsert_zone(self, zone: ZoneRecord) -> None: ...
    def list_zones(self) -> list[ZoneRecord]: ...

    # zone and policy files shared by a fleet
    def put_config_file(self, origin: str, kind: str, text: str, now: float | None = None) -> bool:
        """Store the full `text` of zone `origin`'s file of `kind` ("zone" or "policy";
        ValueError otherwise), stamped `now` (default: the current time).

        Returns True when the text changed (a new file, or different text); then, in the
        same transaction, `change_generation` is bumped and `fleet.CONFIG` notified with
        `origin` as payload. Writing the text already stored writes and notifies nothing
        (`updated_at` keeps the time of the last change) and returns False.
        """
        ...

    def delete_config_file(self, origin: str, kind: str) -> bool:
        """Forget zone `origin`'s file of `kind`; True (with a bump and a notification as
        for `put_config_file`) if there was one."""
        ...

    def config_files(self) -> list[ConfigFile]:
        """Every shared file, ordered by (origin, kind)."""
        ...

    # DNSSEC key files shared by a fleet
    def key_files(self) -> list[KeyFile]:
        """Every shared key file, ordered by name."""
        ...

    def swap_key_file(self, origin: str, name: str, old: bytes | None, new: bytes | None,
                      now: float | None = None) -> bool:
        """Compare and set one key file: store `new` as `name` (of zone `origin`, stamped
        `now`) only if the store holds `old` under that name (None: no file); `new` None
        deletes it. A key is never replaced by a writer that did not see it: of two nodes
        adding the same name at once, one wins (True) and the other gets False and reads
        the winner. A change bumps `change_generation` and notifies `fleet.CONFIG` with
        `origin`, in the same transaction.
        """
        ...

    # demand
    def add_demand(self, rows: Iterable[DemandRow], *, batch_id: str | None = None) -> int:
        """ADD the rows' queries to their minute buckets; returns minute rows touched.

        Without `batch_id` not idempotent: the same rows written twice count twice. With
        one, the id is recorded in the same transaction, and a batch whose id is already
        recorded is skipped (returns 0): a flush retried after a timeout counts once. Ids
        are forgotten with the minute buckets they wrote (`apply_retention`).
        """
        ...

    def rollup(self, now: float) -> dict[Resolution, int]:
        """Add buckets complete at `now` to the 5-minute and hourly tables."""
        ...

    def apply_retention(self, now: float) -> dict[Resolution, int]:
        """Delete buckets older than their resolution's retention; rows deleted per table."""
        ...

    def demand_series(
        self,
        resolution: Resolution,
        since: float,
        until: float,
        dis: Iterable[str] | None = None,
    ) -> dict[SeriesKey, list[tuple[int, int]]]:
        """{(di, region): [(bucket_start, queries)]} for since <= start < until, kinds
        summed, time-ordered; missing buckets are absent (zero)."""
        ...

    def demand_columns(
        self,
        resolution: Resolution,
        since: float,
        until: float,
        dis: Iterable[str] | None = None,
    ) -> DemandColumns:
        """What `demand_series` reads, as numpy columns (for millions of points)."""
        ...

    def active_series(self, since: float) -> list[SeriesKey]:
        """Series with queries in a minute ending after `since`, sorted."""
        ...

    # policy graph
    def replace_policy(self, origin: str, policy: Policy, digest: str | None = None) -> bool:
        """Replace one zone's locations (with distances), resources and DIs atomically.

        With `digest` (of the policy file), nothing is written when the store already holds
        the graph of that digest; True when the graph was written."""
        ...

    def update_policy(self, origin: str, policy: Policy, digest: str, previous: str,
                      dis: Collection[dns.name.Name], resources: Collection[str]) -> bool:
        """`replace_policy` for a policy that differs from the stored graph of file digest
        `previous` only in the entries of `dis` and `resources`: only their rows are
        written; the whole graph when the store holds another one."""
        ...

    def location_distances(self, origin: str) -> dict[tuple[str, str], float]: ...

    def standby_within(self, di: str, location: str, km: float) -> list[StandbyCandidate]:
        """The DI's standby resources within `km` of `location`, nearest first, with load."""
        ...

    # allocations and generations
    def add_allocation(self, allocation: NewAllocation) -> Allocation: ...
    def add_allocations(self, allocations: Sequence[NewAllocation]) -> list[Allocation]: ...
    def list_allocations(
        self, active_only: bool = True, di: str | None = None
    ) -> list[Allocation]: ...
    def remove_allocation(self, target: int | AllocationKey) -> int:
        """Delete by id, or the active allocation of (di, resource, region); rows deleted."""
        ...

    def set_allocation_state(
        self, allocation_id: int, state: AllocationState, valid_until: float | None = None
    ) -> Allocation: ...
    def allocations_version(self) -> int:
        """Changes on every allocation write by anyone; cheap enough to poll every second."""
        ...

    def bump_generation(self) -> int: ...
    def current_generation(self) -> int: ...

    # forecasts and model choice
    def write_forecasts(self, forecasts: Iterable[Forecast]) -> int:
        """Each forecast replaces its series' points from its first bucket on (those of
        earlier buckets stay: what was forecast for them, until `Retention.forecasts`);
        returns points written."""
        ...

    def read_forecasts(
        self,
        resolution: Resolution,
        di: str | None = None,
        region: str | None = None,
        past: bool = False,
    ) -> list[Forecast]:
        """The newest forecast of each series; with `past`, with the points kept of
        earlier forecasts for the buckets before it."""
        ...
    def write_model_choices(self, choices: Iterable[ModelChoice]) -> int: ...
    def read_model_choices(self, di: str | None = None) -> list[ModelChoice]: ...

    # health
    def set_health_state(self, state: HealthState) -> bool:
        """Record a state; a change (returns True) is also appended to the bounded log."""
        ...

    def health_states(self) -> list[HealthState]: ...
    def record_health_observation(self, observation: HealthObservation) -> None: ...
    def health_observations(self, since: float | None = None) -> list[HealthObservation]: ...
    def health_events(
        self, resource: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[HealthEvent]: ...

    # API tokens and audit
    def add_token(self, token: ApiToken) -> None: ...
    def get_token(self, token_id: str) -> ApiToken | None: ...
    def get_token_by_hash(self, token_hash: str) -> ApiToken | None: ...
    def list_tokens(self) -> list[ApiToken]: ...
    def delete_token(self, token_id: str) -> bool: ...
    def add_audit(self, entry: AuditEntry) -> None: ...
    def list_audit(self, since: float | None = None, limit: int = 1000) -> list[AuditEntry]: ...

    # fleet: change notifications, consistency checks and leader election
    def change_generation(self) -> int:
        """A number bumped by every write that changes answers: allocations, health states,
        the policy graph, zone metadata and shared config files. Compare it with the one
        your answers were compiled from to catch a missed notification."""
        ...

    def notify_change(self, channel: str, payload: str = "") -> None:
        """Send `payload` to every listener of `channel` (delivered once committed)."""
        ...

    def listen(self, channels: Iterable[str] = CHANNELS) -> ChangeListener:
        """A listener for notifications on `channels` sent from now on (by any node)."""
        ...

    def try_leader_lock(self, name: str) -> bool:
        """Take (or confirm holding) the named leader lock without waiting; True if held.

        The lock belongs to this store and dies with it (closing it, or the node losing
        its database session), so a leader must call this again before acting on it.
        """
        ...

    def release_leader_lock(self, name: str) -> None:
        """Give up the named leader lock if held (otherwise do nothing)."""
        ...
