"""The assignment problem: which standby resource (if any) shadows each wanted (DI, region).

Each *demand* (a (DI, region) whose predicted demand crosses its threshold) may take one of
its eligible resources (a *pair*, with a weight: how much serving it there is worth). A
resource's capacity bounds the demand assigned to it, each DI holds at most its
`max_shadows` free slots, and the cost of the chosen resources stays within the per-region
and global caps. Maximise the total weight.

This is a 0/1 integer programme solved by `scipy.optimize.milp` (HiGHS). Very large
instances, or a solver that finds no solution in its time limit, fall back to a greedy pass
(pairs by weight, take what still fits), which is what a human would do and is never worse
than an empty plan. Both are pure functions of numpy arrays, so they run in a worker thread
or process, never on the event loop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Method = Literal["auto", "milp", "greedy"]


@dataclass(frozen=True, slots=True)
class AssignmentProblem:
    """Arrays of one assignment problem (see the module docstring).

    demands: `demand[i]` (what a resource's capacity must hold), `group[i]` (its DI, for
    `group_limit`), `region[i]` (for `region_cap`). resources: `capacity[r]`, `cost[r]`.
    pairs: `pair_demand[p]`, `pair_resource[p]`, `weight[p]`.
    """

    demand: FloatArray
    group: IntArray
    region: IntArray
    capacity: FloatArray
    cost: FloatArray
    pair_demand: IntArray
    pair_resource: IntArray
    weight: FloatArray
    group_limit: IntArray
    region_cap: FloatArray
    global_cap: float = math.inf

    @property
    def n_pairs(self) -> int:
        return int(self.pair_demand.shape[0])


@dataclass(frozen=True, slots=True)
class Solution:
    """Chosen pair indexes, the method that chose them, and how long it took."""

    pairs: IntArray
    method: str
    seconds: float
    objective: float
    notes: tuple[str, ...] = field(default=())


def solve(problem: AssignmentProblem, method: Method = "auto", milp_max_pairs: int = 20_000,
          time_limit: float = 5.0) -> Solution:
    """Solve with milp when asked (or when `auto` and small enough), else greedily."""
    started = time.perf_counter()
    if problem.n_pairs == 0:
        return Solution(np.zeros(0, dtype=np.int64), "empty", 0.0, 0.0)
    notes: list[str] = []
    if method == "milp" or (method == "auto" and problem.n_pairs <= milp_max_pairs):
        chosen = solve_milp(problem, time_limit)
        if chosen is not None:
            return Solution(chosen, "milp", time.perf_counter() - started,
                            float(problem.weight[chosen].sum()))
        notes.append("milp found no solution in time; greedy fallback")
    elif method == "auto":
        notes.append(f"{problem.n_pairs} pairs > {milp_max_pairs}: greedy")
    chosen = solve_greedy(problem)
    return Solution(chosen, "greedy", time.perf_counter() - started,
                    float(problem.weight[chosen].sum()), tuple(notes))


def solve_milp(problem: AssignmentProblem, time_limit: float = 5.0) -> IntArray | None:
    """HiGHS branch and bound; None when it finds no feasible solution in time."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array, vstack

    p = problem.n_pairs
    cols = np.arange(p)
    res_of_pair = problem.pair_resource
    dem_of_pair = problem.pair_demand
    n_dem = int(problem.demand.shape[0])
    n_res = int(problem.capacity.shape[0])
    blocks = []
    uppers: list[FloatArray] = []
    # one resource per demand
    blocks.append(csr_array((np.ones(p), (dem_of_pair, cols)), shape=(n_dem, p)))
    uppers.append(np.ones(n_dem))
    # capacity
    blocks.append(csr_array((problem.demand[dem_of_pair], (res_of_pair, cols)),
                            shape=(n_res, p)))
    uppers.append(np.maximum(problem.capacity, 0.0))
    # shadows per DI
    n_groups = int(problem.group_limit.shape[0])
    blocks.append(csr_array((np.ones(p), (problem.group[dem_of_pair], cols)),
                            shape=(n_groups, p)))
    uppers.append(problem.group_limit.astype(np.float64))
    # cost per region, and in total
    finite = np.isfinite(problem.region_cap)
    if finite.any():
        n_regions = int(problem.region_cap.shape[0])
        blocks.append(csr_array((problem.cost[res_of_pair], (problem.region[dem_of_pair], cols)),
                                shape=(n_regions, p)))
        uppers.append(np.where(finite, problem.region_cap, 1e30))
    if math.isfinite(problem.global_cap):
        blocks.append(csr_array(problem.cost[res_of_pair][None, :]))
        uppers.append(np.array([problem.global_cap]))
    matrix = vstack(blocks).tocsr()
    upper = np.concatenate(uppers)
    result = milp(
        c=-problem.weight,
        constraints=LinearConstraint(matrix, -np.inf, upper),
        integrality=np.ones(p),
        bounds=Bounds(0, 1),
        options={"time_limit": time_limit, "disp": False},
    )
    if result.x is None:
        log.warning("milp: %s", result.message)
        return None
    chosen: IntArray = np.flatnonzero(result.x > 0.5).astype(np.int64)
    return chosen


def solve_greedy(problem: AssignmentProblem) -> IntArray:
    """Take pairs by decreasing weight while every constraint still holds."""
    order = np.argsort(-problem.weight, kind="stable")
    capacity = np.maximum(problem.capacity, 0.0).tolist()
    cost = problem.cost.tolist()
    demand = problem.demand.tolist()
    group = problem.group.tolist()
    region = problem.region.tolist()
    group_left = problem.group_limit.tolist()
    region_left = problem.region_cap.tolist()
    global_left = problem.global_cap
    taken = [False] * len(demand)
    pair_demand = problem.pair_demand.tolist()
    pair_resource = problem.pair_resource.tolist()
    chosen: list[int] = []
    for p in order.tolist():
        i = pair_demand[p]
        if taken[i]:
            continue
        g = group[i]
        if group_left[g] <= 0:
            continue
        r = pair_resource[p]
        d = demand[i]
        if capacity[r] < d:
            continue
        c = cost[r]
        reg = region[i]
        if region_left[reg] < c or global_left < c:
            continue
        taken[i] = True
        group_left[g] -= 1
        capacity[r] -= d
        region_left[reg] -= c
        global_left -= c
        chosen.append(p)
    return np.array(sorted(chosen), dtype=np.int64)


def check(problem: AssignmentProblem, chosen: IntArray, tolerance: float = 1e-6) -> list[str]:
    """Every constraint the chosen pairs break (empty when the plan is feasible)."""
    out: list[str] = []
    dem = problem.pair_demand[chosen]
    res = problem.pair_resource[chosen]
    if len(np.unique(dem)) != len(dem):
        out.append("a demand has two resources")
    load = np.bincount(res, weights=problem.demand[dem], minlength=len(problem.capacity))
    over = np.flatnonzero(load > np.maximum(problem.capacity, 0.0) + tolerance)
    out.extend(f"resource {r} over capacity" for r in over)
    per_group = np.bincount(problem.group[dem], minlength=len(problem.group_limit))
    out.extend(f"group {g} over its limit" for g in np.flatnonzero(per_group
                                                                   > problem.group_limit))
    region_cost = np.bincount(problem.region[dem], weights=problem.cost[res],
                              minlength=len(problem.region_cap))
    out.extend(f"region {g} over its cost cap"
               for g in np.flatnonzero(region_cost > problem.region_cap + tolerance))
    if problem.cost[res].sum() > problem.global_cap + tolerance:
        out.append("over the global cost cap")
    return out
