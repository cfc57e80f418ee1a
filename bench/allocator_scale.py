"""Allocation at scale: 100,000 (DI, region) candidates over 1,000 standby resources.

    .venv/bin/python -m bench.allocator_scale [--dis 1000] [--regions 100] [--resources 1000]

Builds one policy with `--regions` locations spread over the globe, `--resources` standby
resources (evenly over the locations), and `--dis` DIs whose primary sits at a home
location; each DI's pool is 50 random standbys plus every standby within 2,000 km. Every
(DI, region) has a planned demand above its threshold, so every pair is a candidate. Times
the planner end to end (pools, pairs, capacity, caps, solve) and checks the plan is
feasible. The target is under 10 s. A 2,000-candidate slice is also solved exactly with
milp to show what the greedy fallback gives up.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import dns.name

from shadowdns.allocator.planner import DemandView, di_views, plan
from shadowdns.allocator.settings import AllocatorSettings
from shadowdns.zones.policy import DI, AllocationPolicy, Location, Policy, Regions, Resource


def build(n_dis: int, n_regions: int, n_resources: int, seed: int = 7) -> Policy:
    rng = random.Random(seed)
    locations = {"home": Location("home", 0.0, -150.0)}
    for i in range(n_regions):
        lat = math.degrees(math.asin(rng.uniform(-0.9, 0.95)))
        locations[f"r{i}"] = Location(f"r{i}", lat, rng.uniform(-180, 180))
    regions = [name for name in locations if name != "home"]
    resources = {"p-home": Resource("p-home", "home", "primary", address="192.0.2.1")}
    standby = []
    for j in range(n_resources):
        rid = f"s{j}"
        resources[rid] = Resource(rid, regions[j % n_regions], "standby",
                                  address=f"10.{j // 65536}.{j // 256 % 256}.{j % 256}",
                                  capacity=rng.uniform(5_000, 40_000),
                                  cost=rng.choice((0.5, 1.0, 2.0)), warmup=120)
        standby.append(rid)
    origin = dns.name.from_text("bench.")
    dis = {}
    for d in range(n_dis):
        name = dns.name.from_text(f"di{d}.bench.")
        dis[name] = DI(name, ("p-home",), tuple(rng.sample(standby, 50)),
                       standby_within_km=2000.0, ttl=30,
                       policy=AllocationPolicy(threshold=100, lead_time=900, max_shadows=60,
                                               min_hold=1800))
    return Policy(origin, locations, Regions(default="home"), resources, dis, "<bench>")


def demand(policy: Policy, seed: int = 11) -> dict[tuple[str, str], DemandView]:
    rng = random.Random(seed)
    out = {}
    for name in policy.dis:
        di = name.to_text()
        for region in policy.locations:
            if region != "home":
                out[(di, region)] = DemandView(di, region, predicted=rng.uniform(100, 500),
                                               observed=rng.uniform(0, 300), model="ets")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dis", type=int, default=1000)
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    policy = build(args.dis, args.regions, args.resources)
    views = di_views([policy])
    wanted = demand(policy)
    settings = AllocatorSettings(region_cost_caps={"r0": 20.0}, global_cost_cap=60_000)
    started = time.perf_counter()
    result = plan(0.0, views, wanted, [], frozenset(), settings)
    seconds = time.perf_counter() - started
    served = sum(s.demand for s in result.add)
    report: dict[str, object] = {
        "candidates": len(wanted), "resources": args.resources, "dis": args.dis,
        "pairs": result.pairs, "method": result.method, "shadows": len(result.add),
        "served_demand": round(served), "solve_seconds": round(result.seconds, 2),
        "plan_seconds": round(seconds, 2), "target_seconds": 10,
    }
    # what greedy gives up: a slice small enough for the exact solver
    small = build(20, 100, args.resources)
    small_wanted = demand(small)
    exact = plan(0.0, di_views([small]), small_wanted, [], frozenset(),
                 AllocatorSettings(solver="milp", solver_time_limit=30))
    greedy = plan(0.0, di_views([small]), small_wanted, [], frozenset(),
                  AllocatorSettings(solver="greedy"))
    report["slice"] = {
        "candidates": len(small_wanted), "pairs": exact.pairs,
        "milp_seconds": round(exact.seconds, 2), "greedy_seconds": round(greedy.seconds, 3),
        "milp_served": round(sum(s.demand for s in exact.add)),
        "greedy_served": round(sum(s.demand for s in greedy.add)),
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<16} {value}")


if __name__ == "__main__":
    main()
