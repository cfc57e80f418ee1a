"""Persistence behind one interface: SQLite by default.

Callers depend on the `Store` protocol and the row values in `shadowdns.store.base`, and
get a concrete store from `open_store(url_or_path)`; a PostgreSQL backend fits behind the
same protocol.
"""

from shadowdns.store.base import (
    Allocation,
    AllocationKey,
    AllocationState,
    ApiToken,
    AuditEntry,
    ConfigFile,
    ConfigKind,
    DemandKind,
    DemandRow,
    Forecast,
    ForecastPoint,
    HealthEvent,
    HealthObservation,
    HealthState,
    HealthStatus,
    ModelChoice,
    NewAllocation,
    Resolution,
    Retention,
    SeriesKey,
    StandbyCandidate,
    Store,
    ZoneRecord,
)
from shadowdns.store.factory import default_state_path, open_store
from shadowdns.store.fleet import (
    ALLOCATIONS,
    CHANNELS,
    CONFIG,
    HEALTH,
    POLICY,
    ZONES,
    Change,
    ChangeListener,
)

__all__ = [
    "ALLOCATIONS",
    "CHANNELS",
    "CONFIG",
    "HEALTH",
    "POLICY",
    "ZONES",
    "Allocation",
    "AllocationKey",
    "AllocationState",
    "ApiToken",
    "AuditEntry",
    "Change",
    "ChangeListener",
    "ConfigFile",
    "ConfigKind",
    "DemandKind",
    "DemandRow",
    "Forecast",
    "ForecastPoint",
    "HealthEvent",
    "HealthObservation",
    "HealthState",
    "HealthStatus",
    "ModelChoice",
    "NewAllocation",
    "Resolution",
    "Retention",
    "SeriesKey",
    "StandbyCandidate",
    "Store",
    "ZoneRecord",
    "default_state_path",
    "open_store",
]
