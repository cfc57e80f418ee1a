"""The assignment solver: milp and greedy plans are feasible; milp is at least as good."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowdns.allocator.solver import AssignmentProblem, check, solve, solve_greedy, solve_milp


def problem(demand: list[float], capacity: list[float], pairs: list[tuple[int, int, float]],
            group: list[int] | None = None, limit: list[int] | None = None,
            region: list[int] | None = None, region_cap: list[float] | None = None,
            cost: list[float] | None = None, global_cap: float = math.inf
            ) -> AssignmentProblem:
    n = len(demand)
    return AssignmentProblem(
        demand=np.array(demand, dtype=float),
        group=np.array(group or [0] * n, dtype=np.int64),
        region=np.array(region or [0] * n, dtype=np.int64),
        capacity=np.array(capacity, dtype=float),
        cost=np.array(cost or [1.0] * len(capacity), dtype=float),
        pair_demand=np.array([p[0] for p in pairs], dtype=np.int64),
        pair_resource=np.array([p[1] for p in pairs], dtype=np.int64),
        weight=np.array([p[2] for p in pairs], dtype=float),
        group_limit=np.array(limit or [n], dtype=np.int64),
        region_cap=np.array(region_cap or [math.inf], dtype=float),
        global_cap=global_cap,
    )


def test_milp_beats_greedy_where_greedy_is_shortsighted() -> None:
    """Greedy gives the big resource to the heaviest pair and strands the other demand;
    the exact solver serves both."""
    p = problem([60, 60], [100, 60], [(0, 0, 10.0), (0, 1, 9.0), (1, 0, 8.0)])
    assert solve_greedy(p).tolist() == [0]
    exact = solve_milp(p)
    assert exact is not None and sorted(exact.tolist()) == [1, 2]
    assert check(p, exact) == []
    assert solve(p).method == "milp"


def test_constraints_table() -> None:
    """Capacity, per-DI limit, per-region and global cost caps each bound the plan."""
    cases = [
        ("capacity", problem([5, 5, 5], [10], [(0, 0, 3), (1, 0, 2), (2, 0, 1)]), 2),
        ("group limit", problem([1, 1, 1], [10, 10, 10], [(0, 0, 1), (1, 1, 1), (2, 2, 1)],
                                limit=[1]), 1),
        ("region cap", problem([1, 1], [10, 10], [(0, 0, 1), (1, 1, 1)], region=[0, 0],
                               region_cap=[1.5]), 1),
        ("global cap", problem([1, 1], [10, 10], [(0, 0, 1), (1, 1, 1)], cost=[2, 2],
                               global_cap=3), 1),
    ]
    for name, p, expected in cases:
        for method in ("milp", "greedy"):
            solution = solve(p, method)  # type: ignore[arg-type]
            assert len(solution.pairs) == expected, (name, method)
            assert check(p, solution.pairs) == [], (name, method)


def test_empty_problem_and_greedy_fallback_above_the_size_limit() -> None:
    """No pairs: an empty plan; more pairs than milp_max_pairs: greedy, and it says so."""
    assert solve(problem([], [1], [])).method == "empty"
    p = problem([1, 1], [10, 10], [(0, 0, 1), (1, 1, 1)])
    solution = solve(p, "auto", milp_max_pairs=1)
    assert solution.method == "greedy" and len(solution.pairs) == 2
    assert any("greedy" in note for note in solution.notes)


@st.composite
def random_problem(draw: st.DrawFn) -> AssignmentProblem:
    n = draw(st.integers(1, 8))
    m = draw(st.integers(1, 5))
    demand = draw(st.lists(st.floats(1, 50), min_size=n, max_size=n))
    capacity = draw(st.lists(st.floats(0, 120), min_size=m, max_size=m))
    cost = draw(st.lists(st.floats(0.5, 3), min_size=m, max_size=m))
    pairs = []
    for i in range(n):
        for r in draw(st.sets(st.integers(0, m - 1), max_size=m)):
            pairs.append((i, r, draw(st.floats(0.1, 100))))
    groups = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    regions = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return problem(demand, capacity, pairs, group=groups, limit=[draw(st.integers(0, 3)),
                                                                 draw(st.integers(0, 3))],
                   region=regions, region_cap=[draw(st.floats(0, 6)), math.inf], cost=cost,
                   global_cap=draw(st.floats(0, 10)))


@settings(max_examples=40, deadline=None)
@given(random_problem())
def test_every_plan_is_feasible_and_milp_is_never_worse(p: AssignmentProblem) -> None:
    """Property: both methods respect every constraint; milp's objective >= greedy's."""
    greedy = solve(p, "greedy")
    exact = solve(p, "milp")
    assert check(p, greedy.pairs) == []
    assert check(p, exact.pairs) == []
    assert exact.objective >= greedy.objective - 1e-6
