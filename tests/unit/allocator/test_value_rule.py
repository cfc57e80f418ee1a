"""The value rule: a shadow is allocated, kept or released on what the forecast's mean path
says it will serve over its life, against the price of its minutes; and the budget."""

from __future__ import annotations

import math

import pytest

from shadowdns.allocator.planner import Budget, DemandView, di_views, life_value, plan
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.store.base import Allocation

from .conftest import APP, make_policy

NOW = 1_000_200.0  # a bucket boundary
BUCKET = 300.0
LEAD = 900.0  # three buckets of warm-up that serve nothing
THRESHOLD = 50.0


def alloc(id: int, region: str, resource: str, created: float, state: str = "ready",
          pinned: bool = False) -> Allocation:
    return Allocation(id, APP, resource, region, state, created, None, 1, "", 80.0,  # type: ignore[arg-type]
                      pinned, created)


def path(region: str, values: list[float], observed: float = 0.0) -> DemandView:
    return DemandView(APP, region, max(values), observed, "ets", path=tuple(values),
                      path_start=NOW)


def run(demand: list[DemandView], allocations: list[Allocation] | None = None,
        budget: Budget | None = None, max_shadows: int = 4):
    policy = make_policy(max_shadows=max_shadows, threshold=THRESHOLD, lead_time=LEAD)
    return plan(NOW, di_views([policy]), {(APP, v.region): v for v in demand},
                allocations or [], frozenset(), AllocatorSettings(price=1.0), budget=budget)


@pytest.mark.parametrize(
    ("values", "start", "price", "expected"),
    [
        ([100, 100, 0, 0], 0, 50, 100.0),  # two buckets of 50 net, then losses
        ([100, 0, 300], 0, 50, 250.0),  # the gap is worth bridging: 50 - 50 + 250
        ([10, 10, 10], 0, 50, -40.0),  # nothing pays: the shortest life loses least
        ([0, 0, 0, 90, 90], 3, 50, 80.0),  # valued from where it would serve
        ([90], 1, 50, -math.inf),  # the path ends before it would serve
    ],
    ids=["spell", "bridge", "never", "from-start", "too-late"],
)
def test_life_value_is_the_best_net_over_every_life(values: list[float], start: int,
                                                    price: float, expected: float) -> None:
    """The most any life from `start` on nets: served queries less price per bucket."""
    assert life_value(values, start, price) == expected


def test_a_burst_is_prewarmed_a_lead_time_before_it() -> None:
    """Demand forecast three buckets ahead (the lead time) gets a shadow now, although the
    last bucket and the next two are quiet; a burst forecast further out waits."""
    now_due = path("jp", [0, 0, 0, 400, 400, 0, 0, 0])
    later = path("kr", [0, 0, 0, 0, 0, 400, 400, 0])
    result = run([now_due, later])
    assert {s.region for s in result.add} == {"jp"}
    assert result.add[0].demand >= THRESHOLD


def test_a_short_blip_does_not_pay_for_the_warm_up() -> None:
    """One bucket at 1.5 × the threshold cannot pay for the three warm-up buckets that
    serve nothing; the threshold rule would have allocated for it."""
    blip = path("jp", [0, 0, 0, 75, 0, 0, 0])
    assert run([blip]).add == ()


def test_a_shadow_whose_spell_ends_is_released_before_any_hold() -> None:
    """The forecast shows the spell ending: the shadow goes now, though min_hold (600 s)
    since the last crossing has not passed."""
    current = [alloc(1, "jp", "s-jp", created=NOW - 3600)]
    ending = DemandView(APP, "jp", 0.0, 200.0, "ets", last_above=NOW, path=(0.0,) * 8,
                        path_start=NOW)
    result = run([ending], current)
    assert [r.allocation.id for r in result.release] == [1]
    assert "spell ends" in result.release[0].reason


def test_a_shadow_about_to_be_needed_again_is_kept_through_the_gap() -> None:
    """Quiet for two buckets, then busy again: keeping the warm shadow (two idle buckets)
    is cheaper than releasing it and warming a new one (three buckets, arriving late)."""
    current = [alloc(1, "jp", "s-jp", created=NOW - 3600)]
    returning = path("jp", [0, 0, 300, 300, 0, 0, 0, 0])
    result = run([returning], current)
    assert result.release == () and [a.id for a in result.keep] == [1]
    # and a gap longer than what comes back is worth: released
    gone = path("jp", [0, 0, 0, 0, 0, 0, 0, 120])
    assert [r.allocation.id for r in run([gone], current).release] == [1]


def test_a_warming_shadow_is_valued_from_when_it_will_serve() -> None:
    """A shadow allocated a bucket ago for a burst still two buckets ahead stays."""
    current = [alloc(1, "jp", "s-jp", created=NOW - BUCKET, state="warming")]
    result = run([path("jp", [0, 0, 400, 400, 0, 0])], current)
    assert result.release == ()


def test_an_old_shadow_leaves_only_when_its_successor_is_ready() -> None:
    """Two shadows of one (DI, region): the older leaves once the newer is ready, not while
    the newer one warms."""
    busy = path("jp", [300.0] * 8)
    warming = [alloc(1, "jp", "s-jp", NOW - 3600), alloc(2, "jp", "s-jp2", NOW - 60,
                                                         state="warming")]
    assert run([busy], warming).release == ()
    ready = [alloc(1, "jp", "s-jp", NOW - 3600), alloc(2, "jp", "s-jp2", NOW - 600)]
    result = run([busy], ready)
    assert [(r.allocation.id, r.reason) for r in result.release] == [
        (1, "replaced: its successor is ready")]


def test_the_budget_keeps_the_most_valuable_and_never_more() -> None:
    """Minutes for two shadows over the next window (each with its drain of TTL + grace,
    1 minute, in reserve) and the third one's drain: of three worth keeping the two worth
    most stay, and nothing new is added; a pin holds whatever the budget."""
    current = [alloc(1, "jp", "s-jp", NOW - 3600), alloc(2, "kr", "s-kr", NOW - 3600),
               alloc(3, "br", "s-br", NOW - 3600)]
    demand = [path("jp", [300.0] * 8), path("kr", [100.0] * 8), path("br", [60.0] * 8)]
    result = run(demand, current, Budget(minutes_left=2 * (BUCKET / 60 + 1) + 1))
    assert sorted(a.id for a in result.keep) == [1, 2]
    assert [r.allocation.id for r in result.release] == [3] and result.add == ()
    none_left = run(demand, current, Budget(minutes_left=0.0))
    assert none_left.keep == () and len(none_left.release) == 3
    pinned = [alloc(1, "jp", "s-jp", NOW - 3600, pinned=True)]
    assert [a.id for a in run(demand, pinned, Budget(0.0)).keep] == [1]


def test_without_a_forecast_path_the_threshold_rule_decides() -> None:
    """A series the book has no forecast for (young, or the reactive policy) plans on the
    last bucket against the threshold, as before."""
    result = run([DemandView(APP, "jp", 0.0, 80.0, "observed")])
    assert [s.region for s in result.add] == ["jp"]


def test_the_budget_and_price_settings_are_validated_naming_each_field() -> None:
    """allocator.yaml: the value rule's keys are read, and every bad one is named."""
    from shadowdns.errors import ConfigError

    good = AllocatorSettings.from_mapping({"allocator": {
        "decision": "threshold", "price": 0.5, "lookahead": "30m", "persistence": False,
        "budget": {"shadow_minutes_per_day": 1440}}})
    assert (good.decision, good.price, good.lookahead, good.persistence,
            good.shadow_minutes_per_day) == ("threshold", 0.5, 1800.0, False, 1440.0)
    assert AllocatorSettings().decision == "value" and AllocatorSettings().price == 0.5
    with pytest.raises(ConfigError) as err:
        AllocatorSettings.from_mapping({"decision": "maybe", "price": 0, "persistence": 1,
                                        "budget": {"shadow_minutes_per_day": -5}})
    text = str(err.value)
    for field in ("allocator.decision", "allocator.price", "allocator.persistence",
                  "allocator.budget.shadow_minutes_per_day"):
        assert field in text
