"""A plan made with the memo of earlier runs on the same demand (what a run woken by a
health flap or an operator does) is the plan made from scratch: whatever the paths, the
times of the runs (within a bucket and across its edges), the health, the allocations and
a calendar event."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdns.allocator.planner import DemandView, PlanMemo, di_views, plan
from shadowdns.allocator.settings import AllocatorSettings, CalendarEvent
from shadowdns.store.base import Allocation
from tests.unit.allocator.conftest import APP, make_policy

NOW = 1_000_200.0
REGIONS = ("jp", "kr", "br")
RESOURCES = {"jp": "s-jp2", "kr": "s-kr", "br": "s-br"}
STANDBYS = ("s-jp", "s-jp2", "s-kr", "s-br", "s-eu")


@settings(derandomize=True, max_examples=150, deadline=None)
@given(paths=st.lists(st.lists(st.floats(0, 500), min_size=1, max_size=16),
                      min_size=3, max_size=3),
       held=st.lists(st.booleans(), min_size=3, max_size=3),
       runs=st.lists(st.tuples(st.floats(0, 900), st.frozensets(st.sampled_from(STANDBYS))),
                     min_size=1, max_size=6),
       lead=st.sampled_from([0.0, 90.0, 900.0]),
       event=st.booleans(),
       decision=st.sampled_from(["value", "threshold"]))
def test_a_plan_with_the_memo_is_the_plan_without(
        paths: list[list[float]], held: list[bool], runs: list[tuple[float, frozenset[str]]],
        lead: float, event: bool, decision: str) -> None:
    policy = make_policy(max_shadows=3, threshold=50.0, lead_time=lead)
    views = di_views([policy])
    demand = {(APP, r): DemandView(APP, r, max(p), p[0], "ets", path=tuple(p),
                                   path_start=NOW) for r, p in zip(REGIONS, paths, strict=True)}
    allocations = [Allocation(i + 1, APP, RESOURCES[r], r, "ready", NOW - 3600, None, 1, "",
                              80.0, False, NOW - 3600)
                   for i, (r, h) in enumerate(zip(REGIONS, held, strict=True)) if h]
    events = (CalendarEvent(APP, "kr", NOW + 300, NOW + 600, 400.0),) if event else ()
    s = AllocatorSettings(decision=decision, events=events)  # type: ignore[arg-type]
    memo = PlanMemo()
    for offset, down in sorted(runs):
        now = NOW + offset
        fresh = plan(now, views, demand, allocations, down, s)
        remembered = plan(now, views, demand, allocations, down, s, memo=memo)
        assert remembered.add == fresh.add
        assert remembered.keep == fresh.keep
        assert remembered.release == fresh.release
        assert remembered.candidates == fresh.candidates
