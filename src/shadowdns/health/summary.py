"""Health at a glance without walking every resource: what /metrics and /api/v1/health
read on each request.

A loaded policy never changes (a reload or an API edit makes a new `Policy`), so what does
not depend on the probes is counted once per policy and kept: how many resources each
(location, role, override) has, and which resources can be anything but plainly up (those
with a health check or an override). A request then applies the probes' current states —
which only checked resources have — to those few, so its cost follows the checked and
overridden resources, not the five million others, and a health change shows at the next
request without anything to invalidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import dns.name

from shadowdns.zones.policy import Policy, Resource, ResourceTable

# resources of a policy listed one by one at most (by /metrics, or per page of
# /api/v1/health); beyond, the per-policy counts tell the rest
PER_RESOURCE_LIMIT = 10_000
State = Literal["up", "down"]
# (location, role, override): the part of a resource its health summary groups by
Group = tuple[str, str, str]


def effective_state(resource: Resource, probe: str | None) -> State:
    """What answers use: the operator's override, else down only when probed down."""
    if resource.override != "obey":
        return "up" if resource.override == "up" else "down"
    return "down" if probe == "down" else "up"


@dataclass(frozen=True, slots=True)
class PolicyTally:
    """One policy's resources counted by group, and the ones whose state can vary (the
    probes only know checked resources; an override fixes the state)."""

    counts: Mapping[Group, int]
    notable: tuple[Resource, ...]  # with a health check or an override

    @classmethod
    def of(cls, policy: Policy) -> PolicyTally:
        resources = policy.resources

        def group(res: Resource) -> Group:
            return res.location, res.role, res.override

        def varies(res: Resource) -> bool:
            return res.check is not None or res.override != "obey"

        if isinstance(resources, ResourceTable):
            counts: dict[Group, int] = resources.tally(group)  # type: ignore[assignment]
            notable = tuple(resources.matching(varies))
        else:
            counts = {}
            for res in resources.values():
                counts[group(res)] = counts.get(group(res), 0) + 1
            notable = tuple(res for res in resources.values() if varies(res))
        return cls(counts, notable)


class HealthSummaries:
    """Per-policy tallies, made on first use and kept while the policy is loaded."""

    def __init__(self) -> None:
        self._tallies: dict[dns.name.Name, tuple[Policy, PolicyTally]] = {}

    def tally(self, origin: dns.name.Name, policy: Policy) -> PolicyTally:
        known = self._tallies.get(origin)
        if known is None or known[0] is not policy:
            known = self._tallies[origin] = (policy, PolicyTally.of(policy))
        return known[1]

    def warm(self, policies: Mapping[dns.name.Name, Policy]) -> None:
        """Count every policy not counted yet (on a thread: a million resources take a
        fraction of a second)."""
        for origin, policy in policies.items():
            self.tally(origin, policy)

    def counts(self, policies: Mapping[dns.name.Name, Policy],
               probes: Mapping[str, str]) -> dict[tuple[str, str, str, State], int]:
        """(zone, location, role, effective state) -> resources, under `probes` (resource
        id -> the probes' last state)."""
        for origin in set(self._tallies) - set(policies):
            del self._tallies[origin]  # a zone that went away
        out: dict[tuple[str, str, str, State], int] = {}
        down = [rid for rid, probe in probes.items() if probe == "down"]
        for origin, policy in policies.items():
            zone = origin.to_text()
            for (location, role, override), count in self.tally(origin, policy).counts.items():
                state: State = "down" if override == "down" else "up"
                out[(zone, location, role, state)] = (
                    out.get((zone, location, role, state), 0) + count)
            for rid in down:  # the only ones that can differ from their group's state
                res = policy.resources.get(rid)
                if res is None or res.override != "obey":
                    continue
                where: tuple[str, str] = (res.location, res.role)
                out[(zone, *where, "up")] -= 1
                out[(zone, *where, "down")] = out.get((zone, *where, "down"), 0) + 1
        return {key: count for key, count in out.items() if count}

    def listed(self, origin: dns.name.Name, policy: Policy, limit: int
               ) -> Iterable[Resource]:
        """The resources /metrics names one by one: all of them in a policy of at most
        `limit`, else the ones whose state can vary (the counts tell the rest)."""
        if len(policy.resources) <= limit:
            return policy.resources.values()
        return self.tally(origin, policy).notable
