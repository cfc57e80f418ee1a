"""Health summaries: per-policy counts made once, with the probes' states applied per
request, equal what walking every resource says."""

from __future__ import annotations

import dns.name

from shadowdns.health.summary import HealthSummaries, effective_state
from shadowdns.zones.policy import Location, Policy, Regions, Resource, ResourceTable

ORIGIN = dns.name.from_text("s.test.")
LOCATIONS = {"eu": Location("eu", lat=52.4, lon=4.9), "na": Location("na", lat=38.9, lon=-77.0)}


def _walk(policy: Policy, probes: dict[str, str]) -> dict[tuple[str, str, str, str], int]:
    out: dict[tuple[str, str, str, str], int] = {}
    for res in policy.resources.values():
        key = (ORIGIN.to_text(), res.location, res.role, effective_state(res, probes.get(res.id)))
        out[key] = out.get(key, 0) + 1
    return out


def _policy(table: bool) -> Policy:
    resources = [
        Resource(id="a", location="eu", role="primary", address="192.0.2.1"),
        Resource(id="b", location="eu", role="primary", address="192.0.2.2", override="down"),
        Resource(id="c", location="na", role="standby", address="192.0.2.3", override="up"),
        Resource(id="d", location="na", role="primary", address="192.0.2.4"),
    ]
    if table:
        rows = ResourceTable()
        shape = rows.shape(resources[0])
        for i in range(2, 50):  # shaped rows like the one-line reader makes
            rows.add_shaped(f"x{i}", shape, bytes([198, 51, 100, i]))
        for res in resources:
            rows.add(res)
        return Policy(origin=ORIGIN, locations=LOCATIONS, regions=Regions(default="eu"),
                      resources=rows, dis={})
    return Policy(origin=ORIGIN, locations=LOCATIONS, regions=Regions(default="eu"),
                  resources={r.id: r for r in resources}, dis={})


def test_counts_equal_a_walk_under_any_probe_states() -> None:
    """Probes down on an obeying resource, on overridden ones (ignored), on unknown ids,
    and back up: the kept counts always equal a walk of every resource."""
    for table in (False, True):
        policy = _policy(table)
        summaries = HealthSummaries()
        for probes in ({}, {"a": "down"}, {"a": "down", "b": "up", "c": "down"},
                       {"x7": "down", "nope": "down", "d": "down"}, {"a": "up", "x7": "up"}):
            got = summaries.counts({ORIGIN: policy}, probes)
            assert got == _walk(policy, probes), (table, probes)
        assert summaries.tally(ORIGIN, policy) is summaries.tally(ORIGIN, policy)


def test_a_new_policy_is_counted_again() -> None:
    """A reload's new policy replaces the kept counts (none go stale)."""
    summaries = HealthSummaries()
    first = _policy(False)
    assert sum(summaries.counts({ORIGIN: first}, {}).values()) == 4
    second = _policy(True)
    assert sum(summaries.counts({ORIGIN: second}, {}).values()) == 52
    assert summaries.counts({}, {}) == {}
