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
    DemandKind,
    DemandRow,
    Forecast,
    ForecastPoint,
    HealthEvent,
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

__all__ = [
    "Allocation",
    "AllocationKey",
    "AllocationState",
    "ApiToken",
    "AuditEntry",
    "DemandKind",
    "DemandRow",
    "Forecast",
    "ForecastPoint",
    "HealthEvent",
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
