"""The simulator's trace shaping and its policies on a synthetic daily pattern."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from shadowdns.allocator.frontier import (
    Point,
    busiest_cells,
    frontier_at,
    headroom,
    ideal_share,
)
from shadowdns.allocator.simulate import (
    REGIONS,
    apps_to_regions,
    multi_region,
    rebucket,
    simulate,
    threshold_for,
)
from shadowdns.predictor.series import Series

STEP = 300
DAY = 86400 // STEP


def daily(days: int, seed: int = 3) -> Series:
    """Queries per 5 min with a sharp daily peak (a business-hours service) and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * DAY)
    hour = (t % DAY) * 24 / DAY
    shape = 20 + 400 * np.exp(-((hour - 14) ** 2) / 4)
    return Series("svc", shape * rng.uniform(0.9, 1.1, len(t)), STEP, 1_700_006_400 // STEP)


def test_multi_region_shifts_each_region_to_its_local_time() -> None:
    """Each region sees the source's daily shape at its own local time, scaled by its
    share, from its own days of the source."""
    source = daily(8)
    out = multi_region(source, "svc.sim.")
    assert [s.key for s in out] == [f"svc.sim.|{r.name}" for r in REGIONS]
    assert len({len(s.values) for s in out}) == 1 and len({s.start for s in out}) == 1
    peaks = {s.key.split("|")[1]: int(np.argmax(s.values[:DAY])) * 24 / DAY for s in out}
    # source peak is 14:00 local; ap-east (UTC+9) peaks 9 h before us-east (UTC-5)+14 h
    assert abs((peaks["us-east"] - peaks["ap-east"]) % 24 - 14) < 1
    total = sum(float(s.values.sum()) for s in out)
    assert 0.9 < total / float(source.values[: len(out[0].values)].sum()) < 1.1


def test_multi_region_of_a_short_source_uses_smaller_day_shifts() -> None:
    """Two days cannot give each region its own day and keep half the source: the regions
    then share days, shifted only to their local times; half a day is too short."""
    source = daily(2)
    out = multi_region(source, "svc.sim.")
    shift = round(14 * 3600 / STEP)  # UTC+9 to UTC-5: what the local times alone cost
    assert len(out[0].values) == len(source.values) - shift
    local = [round(r.utc_offset * 3600 / STEP) for r in REGIONS]
    lo = -min(local)
    for region, series in zip(REGIONS, out, strict=True):
        begin = lo + round(region.utc_offset * 3600 / STEP)
        assert np.allclose(series.values, source.values[begin: begin + len(series.values)]
                           * region.weight)
    with pytest.raises(ValueError, match="too short"):
        multi_region(Series("svc", np.ones(DAY // 2), STEP, 0), "svc.sim.")


def test_rebucket_splits_coarse_steps_and_sums_fine_ones() -> None:
    """A 30-minute series on 5-minute buckets is spread evenly; 5 → 15 minutes sums."""
    coarse = Series("x", np.array([60.0, 120.0]), 1800, 10)
    fine = rebucket(coarse, 300)
    assert fine.values.tolist() == [10.0] * 6 + [20.0] * 6 and fine.start == 60
    assert rebucket(fine, 900).values.tolist() == [30.0, 30.0, 60.0, 60.0]


def reactive_frontier(series: list[Series], threshold: str = "p75",
                      holds: tuple[float, ...] = (0, 600, 1800, 3600, 7200)) -> list[Point]:
    points = [Point.from_figures(f"hold {h}", simulate(series, "reactive", 900, STEP,
                                                       threshold, min_hold=h))
              for h in holds]
    return [*points, Point.from_figures("always", simulate(series, "always", 900, STEP))]


def test_policies_rank_as_expected_on_a_daily_pattern() -> None:
    """On a clean daily peak with a 15-minute lead: none serves nothing, always
    everything; at their own shadow-minutes predictive (the real models, fitted after two
    days) and the oracle are at or above reactive with its hold swept."""
    series = multi_region(daily(6), "svc.sim.")[:2]
    results = {p: simulate(series, p, 900, STEP, "p75", model="snaive", refit_every=86400)
               for p in ("none", "always", "oracle", "predictive")}
    assert results["none"]["local_share"] == 0.0
    assert results["always"]["local_share"] == 1.0
    frontier = reactive_frontier(series)
    for name in ("predictive", "oracle"):
        r = results[name]
        assert r["local_share"] >= frontier_at(frontier, r["shadow_minutes"]) - 0.005, name
    assert results["predictive"]["allocations"] > 0
    assert results["predictive"]["refits"]["first fit"] == 2


def bursts(days: float, period: int, width: int, height: float, seed: int) -> Series:
    """A timer-driven service: `width` buckets of `height` every `period` buckets, a
    Poisson trickle between."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY)
    values = rng.poisson(0.3, n).astype(np.float64)
    for start in range(seed % period, n, period):
        values[start: start + width] += height * rng.uniform(0.8, 1.2)
    return Series("timer", values, STEP, 1_700_006_400 // STEP)


def test_predictive_beats_the_reactive_frontier_on_periodic_bursts() -> None:
    """Bursts of two buckets every hour are over before a reactive shadow (15 minutes of
    lead) is ready: reaction serves them only by holding its shadows through the hour.
    The period is found after three cycles and each burst pre-warmed a lead time ahead
    (at a threshold of 40, the default price of half of it per shadow-bucket: the burst
    pays for its warm-up, the hour between does not), so
    predictive serves more at its own minutes than reactive at the same minutes, and
    covers a good part of the way to the ideal."""
    series = apps_to_regions([bursts(2, 12, 2, 100.0, seed) for seed in (1, 2)])
    series = [Series(f"t{i}.sim.|{s.key.split('|')[1]}", s.values, s.step, s.start)
              for i, s in enumerate(series)]
    frontier = reactive_frontier(series, "40")
    r = simulate(series, "predictive", 900, STEP, "40")
    at = frontier_at(frontier, r["shadow_minutes"])
    cells = busiest_cells(series)
    ideal = ideal_share(cells, STEP, r["shadow_minutes"],
                        {k: float(v) for k, v in r["di_shadow_minutes"].items()})
    assert r["local_share"] > at + 0.1, (r["local_share"], r["shadow_minutes"], at)
    assert headroom(r["local_share"], at, ideal) >= 0.3


def test_apps_become_one_di_each_in_a_region_chosen_by_hash() -> None:
    """Apps without regions: each is a DI of its own, unscaled, in one region that depends
    only on its name; about a quarter of many apps land in each region."""
    apps = [Series(f"app{i:03d}", np.arange(6, dtype=np.float64) + i, STEP, 100)
            for i in range(400)]
    out = apps_to_regions(apps)
    assert [s.key.split("|")[0] for s in out] == [f"app{i:03d}.sim." for i in range(400)]
    assert all(np.array_equal(s.values, a.values) and s.start == 100
               for s, a in zip(out, apps, strict=True))
    assert [s.key for s in apps_to_regions(apps[:5])] == [s.key for s in out[:5]]
    shares = Counter(s.key.split("|")[1] for s in out)
    assert set(shares) == {r.name for r in REGIONS}
    assert all(70 <= n <= 130 for n in shares.values())


def test_a_percentile_threshold_is_at_least_one_query() -> None:
    """A DI idle in most buckets has a 75th percentile of zero; its threshold is one query
    (zero would want a shadow with no demand and never release it)."""
    sparse = np.zeros(100)
    sparse[::12] = 7.0
    assert threshold_for("p75", [sparse]) == 1.0
    assert threshold_for("p50", [np.arange(101.0)]) == 50.0
    assert threshold_for("0", [sparse]) == 0.0


def test_a_daily_budget_of_shadow_minutes_is_kept_day_by_day() -> None:
    """With budget.shadow_minutes_per_day at a third of what the unbudgeted run spends, no
    simulated day spends more than the budget (and the shadows still serve)."""
    series = multi_region(daily(4), "svc.sim.")[:2]
    free = simulate(series, "predictive", 900, STEP, "p75", model="snaive")
    days = len(series[0].values) * STEP / 86400
    budget = free["shadow_minutes"] / days / 3
    capped = simulate(series, "predictive", 900, STEP, "p75", model="snaive", budget=budget)
    assert 0 < capped["shadow_minutes"] <= budget * math.ceil(days + 1)
    assert max(capped["day_shadow_minutes"].values()) <= budget + 1e-6
    assert capped["local_share"] > 0


def test_a_young_spiky_series_keeps_its_shadow_through_quiet_buckets() -> None:
    """Unrelated spikes (half of the buckets at about 100, the others near 0) have no
    period and no fit within a day, so the book forecasts them by their last bucket. A
    shadow pays on average (50 queries a bucket against a price of 20), but each quiet
    bucket would end it if the value rule took the last bucket for what its life will
    serve (41 allocations that day, each a warm-up serving nothing): expected over the
    last `lookahead`, it is allocated once or twice and serves nearly everything."""
    rng = np.random.default_rng(5)
    n = DAY
    values = rng.poisson(0.3, n) + np.where(rng.random(n) < 0.5, 100.0, 0.0)
    series = [Series("spiky.sim.|us-east", values.astype(np.float64), STEP,
                     1_700_006_400 // STEP)]
    r = simulate(series, "predictive", 900, STEP, "40")
    assert r["models"] == {"last": 1}
    assert r["allocations"] <= 3, r
    assert r["local_share"] >= 0.9, r
