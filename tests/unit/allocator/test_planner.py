"""The planner's rules: where shadows go, why, and when they may leave."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from shadowdns.allocator.planner import DemandView, di_views, lead_time, plan
from shadowdns.allocator.settings import AllocatorSettings, CalendarEvent, Pin
from shadowdns.store.base import Allocation
from shadowdns.zones.policy import Policy

from .conftest import APP, make_policy

NOW = 1_000_000.0


def alloc(id: int, resource: str, region: str, state: str = "ready", created: float = NOW - 60,
          pinned: bool = False, demand: float = 80.0) -> Allocation:
    return Allocation(id, APP, resource, region, state, created, None, 1, "", demand,  # type: ignore[arg-type]
                      pinned, created)


def run(policy: Policy, demand: dict[str, DemandView] | None = None,
        allocations: list[Allocation] | None = None, down: frozenset[str] = frozenset(),
        settings: AllocatorSettings | None = None, now: float = NOW):
    views = {(APP, r): v for r, v in (demand or {}).items()}
    return plan(now, di_views([policy]), views, allocations or [], down,
                settings or AllocatorSettings())


def dv(region: str, predicted: float = 0.0, observed: float = 0.0,
       last_above: float | None = None) -> DemandView:
    return DemandView(APP, region, predicted, observed, "ets", last_above)


@pytest.mark.parametrize(
    ("demand", "expected"),
    [
        ({"jp": dv("jp", predicted=80)}, {("s-jp", "jp")}),  # nearest, cheapest that fits
        ({"jp": dv("jp", predicted=150)}, {("s-jp2", "jp")}),  # s-jp's capacity is 100
        ({"jp": dv("jp", predicted=20, observed=90)}, {("s-jp", "jp")}),  # max(pred, observed)
        ({"jp": dv("jp", predicted=40)}, set()),  # below the threshold
        ({"eu": dv("eu", predicted=500)}, set()),  # the primary serves eu well already
        ({"jp": dv("jp", predicted=80), "kr": dv("kr", predicted=80),
          "br": dv("br", predicted=80)}, {("s-jp", "jp"), ("s-kr", "kr")}),  # max_shadows 2
    ],
    ids=["forecast", "capacity", "observed", "below", "served-well", "max-shadows"],
)
def test_where_shadows_go(policy: Policy, demand: dict[str, DemandView],
                          expected: set[tuple[str, str]]) -> None:
    """Shadows go to regions whose planned demand crosses the threshold, on the best
    resource that fits, within the DI's max_shadows."""
    result = run(policy, demand)
    got = {(s.resource, s.region) for s in result.add}
    if len(expected) == 2 and len(demand) == 3:
        assert len(got) == 2  # which two of three equal regions is the solver's choice
    else:
        assert got == expected
    assert result.release == ()


def test_every_allocation_records_why(policy: Policy) -> None:
    """The reason holds the forecast value, the model and the threshold."""
    [shadow] = run(policy, {"jp": dv("jp", predicted=80)}).add
    reason = json.loads(shadow.reason)
    assert reason["why"] == "forecast"
    assert (reason["predicted"], reason["model"], reason["threshold"]) == (80.0, "ets", 50.0)


def test_hysteresis_holds_then_releases() -> None:
    """A shadow whose demand fell stays until observed demand has been below the threshold
    for min_hold (600 s), then is released."""
    policy = make_policy(min_hold=600)
    current = [alloc(1, "s-jp", "jp", created=NOW - 3600)]
    recent = {"jp": dv("jp", predicted=10, observed=10, last_above=NOW - 300)}
    held = run(policy, recent, current)
    assert held.release == () and [a.id for a in held.keep] == [1]
    old = {"jp": dv("jp", predicted=10, observed=10, last_above=NOW - 700)}
    gone = run(policy, old, current)
    assert [r.allocation.id for r in gone.release] == [1]
    assert json.loads(gone.release[0].reason)["why"] == "below threshold"


def test_a_forecast_shadow_is_kept_through_the_window_it_was_allocated_for() -> None:
    """No flapping: a shadow allocated on a forecast stays until its planned window (lead
    time 90 s + window 300 s) is over, even if the next forecast no longer wants it; then,
    observed demand never having crossed, it may go."""
    policy = make_policy(min_hold=600)
    young = run(policy, {}, [alloc(1, "s-jp", "jp", created=NOW - 300)])
    assert young.release == ()
    done = run(policy, {}, [alloc(1, "s-jp", "jp", created=NOW - 400)])
    assert [r.allocation.id for r in done.release] == [1]


def test_a_wanted_shadow_stays_on_its_resource() -> None:
    """With demand still high the current resource is kept (no churn), not re-added."""
    policy = make_policy(min_hold=0)
    result = run(policy, {"jp": dv("jp", predicted=80)}, [alloc(1, "s-jp", "jp")])
    assert result.add == () and result.release == () and [a.id for a in result.keep] == [1]


def test_a_failed_shadow_is_released_and_replaced_in_the_same_run(policy: Policy) -> None:
    """A shadow whose resource is down goes at once, and another resource takes over."""
    result = run(policy, {"jp": dv("jp", predicted=80)}, [alloc(1, "s-jp", "jp")],
                 down=frozenset({"s-jp"}))
    assert [r.allocation.id for r in result.release] == [1]
    assert "down" in result.release[0].reason
    assert [(s.resource, s.region) for s in result.add] == [("s-jp2", "jp")]


def test_operator_pins_win_over_the_model(policy: Policy) -> None:
    """A pin in allocator.yaml adds a shadow with no demand; a pinned store row is never
    released, even with its resource down; an expired pin is not added."""
    settings = AllocatorSettings(pins=(Pin(APP, "s-br", "br"),
                                       Pin(APP, "s-kr", "kr", until=NOW - 1)))
    result = run(policy, {}, [alloc(1, "s-jp", "jp", pinned=True, created=NOW - 99999)],
                 down=frozenset({"s-jp"}), settings=settings)
    assert [(s.resource, s.region, s.pinned) for s in result.add] == [("s-br", "br", True)]
    assert result.release == ()


def test_a_pin_removed_from_allocator_yaml_releases_its_shadow(policy: Policy) -> None:
    """The shadow made for a settings pin holds while the pin is there (even with no
    demand), and is released once the pin is gone; a store pin is not affected."""
    made = run(policy, {}, settings=AllocatorSettings(pins=(Pin(APP, "s-br", "br"),)))
    [shadow] = made.add
    ours = replace(alloc(1, "s-br", "br", pinned=True, created=NOW - 99999),
                   reason=shadow.reason)
    store_pin = alloc(2, "s-jp", "jp", pinned=True, created=NOW - 99999)
    kept = run(policy, {}, [ours, store_pin],
               settings=AllocatorSettings(pins=(Pin(APP, "s-br", "br"),)))
    assert kept.release == () and kept.add == ()
    dangling = AllocatorSettings(pins=(Pin(APP, "s-none", "br"), Pin(APP, "s-br", "mars"),
                                       Pin("other.example.", "s-br", "br")))
    assert run(policy, {}, settings=dangling).add == ()  # names what no policy has
    gone = run(policy, {}, [ours, store_pin])
    assert [(r.allocation.id, r.reason) for r in gone.release] == [
        (1, "its pin is no longer in allocator.yaml")]


def test_calendar_event_raises_demand_over_the_forecast(policy: Policy) -> None:
    """An event in region R during the planned window allocates there with why=event."""
    settings = AllocatorSettings(events=(CalendarEvent(APP, "br", NOW - 10, NOW + 3600),))
    [shadow] = run(policy, {"br": dv("br", predicted=1)}, settings=settings).add
    assert (shadow.resource, shadow.region) == ("s-br", "br")
    assert json.loads(shadow.reason)["why"] == "event"


def test_cost_caps_bound_the_plan(policy: Policy) -> None:
    """The global cost cap stops a second shadow; a region's cap excludes the dear
    resource, and the cheaper one next door serves instead."""
    demand = {"jp": dv("jp", predicted=80), "br": dv("br", predicted=80)}
    capped = run(policy, demand, settings=AllocatorSettings(global_cost_cap=1.0))
    assert len(capped.add) == 1
    dear = run(policy, {"jp": dv("jp", predicted=150)},
               settings=AllocatorSettings(region_cost_caps={"jp": 2.0}))
    # s-jp (cap 100) cannot hold 150, s-jp2 (cost 3) is over jp's cap of 2: s-kr serves
    assert [s.resource for s in dear.add] == ["s-kr"]


def test_capacity_counts_the_load_of_kept_shadows() -> None:
    """A resource already carrying a held shadow of 60 cannot take another 60 (cap 100)."""
    policy = make_policy(max_shadows=3)
    kept = [alloc(1, "s-jp", "kr", demand=60)]  # odd but legal: s-jp serving kr
    result = run(policy, {"jp": dv("jp", predicted=60)}, kept)
    assert [(s.resource, s.region) for s in result.add] == [("s-jp2", "jp")]


def test_a_draining_resource_is_not_chosen_again(policy: Policy) -> None:
    """The store allows one active row per (di, resource, region): while s-jp drains for
    jp, jp gets another resource."""
    result = run(policy, {"jp": dv("jp", predicted=80)},
                 [alloc(1, "s-jp", "jp", state="draining")])
    assert [s.resource for s in result.add] == ["s-jp2"]


def test_lead_time_is_warmup_plus_ttl_at_least() -> None:
    """The DI's lead time covers its slowest standby's warm-up plus the answer TTL."""
    policy = make_policy(lead_time=0, ttl=30)
    [view] = di_views([policy])
    assert view.lead == 90.0  # s-jp warm-up 60 + TTL 30
    slow = replace(view.di, policy=replace(view.di.policy, lead_time=900))
    assert lead_time(slow, policy) == 900.0


def test_the_forecast_allocates_on_its_probability_of_crossing(policy: Policy) -> None:
    """With the probability of crossing known, the forecast wants a shadow only when
    demand is more likely than not to cross (an upper band above the threshold is not
    enough); the shadow is sized for the upper band; the last observed bucket still acts
    on its own (safety rule); without a probability the band decides as before."""
    band_only = DemandView(APP, "jp", 80.0, 10.0, "ets", None, p_cross=0.3)
    assert run(policy, {"jp": band_only}).add == ()
    likely = replace(band_only, p_cross=0.6)
    [shadow] = run(policy, {"jp": likely}).add
    assert shadow.demand == 80.0
    reason = json.loads(shadow.reason)
    assert (reason["why"], reason["p_cross"]) == ("forecast", 0.6)
    observed = replace(band_only, observed=90.0, p_cross=0.0)
    assert [s.region for s in run(policy, {"jp": observed}).add] == ["jp"]
    old_rule = AllocatorSettings(cross_probability=None)
    assert [s.region for s in run(policy, {"jp": band_only}, settings=old_rule).add] == ["jp"]
