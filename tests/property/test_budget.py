"""Property tests of the shadow-minutes budget: whatever the demand, allocations and price,
the plan never holds more shadows over the next window than the minutes left pay for
(pins aside: they are the operator's), and keeps what is most worth keeping."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdns.allocator.planner import Budget, DemandView, di_views, plan
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.store.base import Allocation
from tests.unit.allocator.conftest import APP, make_policy

NOW = 1_000_200.0
REGIONS = ("jp", "kr", "br")
RESOURCES = {"jp": "s-jp2", "kr": "s-kr", "br": "s-br"}


@settings(derandomize=True, max_examples=200, deadline=None)
@given(paths=st.lists(st.lists(st.floats(0, 500), min_size=1, max_size=16),
                      min_size=3, max_size=3),
       held=st.lists(st.booleans(), min_size=3, max_size=3),
       pinned=st.lists(st.booleans(), min_size=3, max_size=3),
       minutes=st.floats(0, 60), scale=st.floats(0.01, 100),
       decision=st.sampled_from(["value", "threshold"]))
def test_the_budget_is_never_exceeded(paths: list[list[float]], held: list[bool],
                                      pinned: list[bool], minutes: float, scale: float,
                                      decision: str) -> None:
    """keep + add (pins aside) × (window + drain) + released × drain ≤ the minutes left:
    the next window and every drain to come are paid for."""
    policy = make_policy(max_shadows=3, threshold=50.0, lead_time=900.0)
    demand = {(APP, r): DemandView(APP, r, max(p), p[0], "ets", path=tuple(p),
                                   path_start=NOW) for r, p in zip(REGIONS, paths, strict=True)}
    allocations = [Allocation(i + 1, APP, RESOURCES[r], r, "ready", NOW - 3600, None, 1, "",
                              80.0, pin, NOW - 3600)
                   for i, (r, h, pin) in enumerate(zip(REGIONS, held, pinned, strict=True)) if h]
    s = AllocatorSettings(decision=decision)  # type: ignore[arg-type]
    result = plan(NOW, di_views([policy]), demand, allocations, frozenset(), s,
                  budget=Budget(minutes, scale))
    pins = {a.id for a in allocations if a.pinned}
    held_next = [a for a in result.keep if a.id not in pins] + list(result.add)
    drain = (s.drain_grace + policy.dis[next(iter(policy.dis))].ttl) / 60
    released = [r for r in result.release if r.allocation.id not in pins]
    assert len(held_next) * (s.window / 60 + drain) + len(released) * drain \
        <= minutes + 1e-6 or not held_next
    assert pins <= {a.id for a in result.keep}
    assert math.isfinite(sum(a.demand for a in result.add))
