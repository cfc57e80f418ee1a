"""Judging a policy at its own cost: frontiers of local share against shadow-minutes.

A policy that spends more shadow-minutes looks better just for spending them, so each
policy is swept over its operator's knob (reactive: `min_hold`; predictive and oracle: the
price of a shadow-minute) and every run is put next to two references at *its own*
minutes:

* the reactive frontier: reactive's (minutes, local_share) points from the shortest hold
  to `always` (a shadow everywhere all the time), with `none` at (0, 0), linear between
  neighbours (a mix of two reactive settings, or of reactive and none, spends between);
* the ideal: an allocator that knows every future bucket, pays nothing for warm-up and
  serves, within the minutes the run spent on each DI, exactly that DI's busiest
  (region, bucket) cells. No allocator beats it at that spending.

*Headroom* is (share - frontier) / (ideal - frontier): the part of the way from what
reaction buys to what is possible at all that the policy covers. `simulate --sweep` and
`bench.simulate_frontier` print these tables, and `plot` draws them (matplotlib, the
optional extra `plot`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shadowdns.allocator.simulate import split_key
from shadowdns.predictor.series import Series

HOLDS: tuple[float, ...] = (0.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0,
                            10800.0, 14400.0, 21600.0, 28800.0, 43200.0)
"""Reactive's knob, swept: the minimum hold (s) after the last bucket at the threshold.
Up to 12 h: a policy that spends more than a 2-hour hold would otherwise be judged
against the straight line from there to `always`, which any longer hold may beat."""
PRICES: tuple[float, ...] = (2.0, 1.0, 0.5, 0.25)
"""Predictive's and the oracle's knob, swept: the price of a shadow-bucket, × threshold."""
LEAD_TIMES: tuple[float, ...] = (300.0, 900.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True)
class Point:
    """One run: a policy at one setting of its knob."""

    policy: str
    knob: str
    minutes: float
    share: float
    di_minutes: Mapping[str, float] | None = None

    @classmethod
    def from_figures(cls, knob: str, figures: Mapping[str, object]) -> Point:
        di = figures.get("di_shadow_minutes")
        return cls(str(figures["policy"]), knob, float(figures["shadow_minutes"]),  # type: ignore[arg-type]
                   float(figures["local_share"]),  # type: ignore[arg-type]
                   {str(k): float(v) for k, v in di.items()} if isinstance(di, dict) else None)


def busiest_cells(series: Sequence[Series]) -> dict[str, np.ndarray]:
    """Per DI: the bucket values of all its regions, busiest first (the ideal's order)."""
    by_di: dict[str, list[np.ndarray]] = {}
    for s in series:
        by_di.setdefault(split_key(s.key)[0], []).append(np.round(s.values))
    return {di: np.sort(np.concatenate(parts))[::-1] for di, parts in by_di.items()}


def ideal_share(cells: Mapping[str, np.ndarray], bucket: int, minutes: float,
                di_minutes: Mapping[str, float] | None = None) -> float:
    """Share of the queries in each DI's busiest cells that fit in that DI's minutes
    (`di_minutes`), or, without it, in the trace's busiest cells that fit in `minutes`."""
    total = sum(float(v.sum()) for v in cells.values())
    if not total:
        return 0.0
    if di_minutes is None:
        ordered = np.sort(np.concatenate(list(cells.values())))[::-1]
        return float(ordered[: int(minutes * 60 // bucket)].sum() / total)
    served = sum(float(v[: int(di_minutes.get(di, 0.0) * 60 // bucket)].sum())
                 for di, v in cells.items())
    return served / total


def frontier_at(points: Sequence[Point], minutes: float) -> float:
    """Reactive's local share at `minutes`: linear between the nearest swept points, from
    `none` at (0, 0) to the last point (`always`, when it is among them)."""
    xs = np.array([0.0, *(p.minutes for p in points)])
    ys = np.array([0.0, *(p.share for p in points)])
    order = np.argsort(xs, kind="stable")
    return float(np.interp(minutes, xs[order], ys[order]))


def format_duration(seconds: float) -> str:
    """`0m`, `45m`, `2h`: a swept hold or lead time as the flags spell it."""
    if seconds and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds / 60:g}m"


def headroom(share: float, frontier: float, ideal: float) -> float:
    return (share - frontier) / (ideal - frontier) if ideal > frontier else 0.0


def table(name: str, reactive: Sequence[Point], others: Sequence[Point],
          cells: Mapping[str, np.ndarray], bucket: int) -> list[str]:
    """Markdown rows: every run with the frontier and the ideal at its minutes."""
    rows = []
    for p in [*reactive, *others]:
        frontier = frontier_at(reactive, p.minutes)
        ideal = ideal_share(cells, bucket, p.minutes, p.di_minutes)
        rows.append(f"| {name} | {p.policy} | {p.knob} | {p.share:.3f} | {p.minutes:,.0f} "
                    f"| {frontier:.3f} | {ideal:.3f} | {headroom(p.share, frontier, ideal):+.0%} |")
    return rows


TABLE_HEAD = ("| trace | policy | knob | local_share | shadow_minutes | reactive frontier "
              "| ideal | headroom |\n|---|---|---|---:|---:|---:|---:|---:|")


def plot(path: Path, title: str, curves: Mapping[str, Sequence[Point]],
         cells: Mapping[str, np.ndarray], bucket: int) -> None:
    """A PNG of each policy's frontier (local share against shadow-minutes) and the ideal
    at the same minutes. Needs matplotlib (`pip install shadowdns[plot]`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("plotting needs matplotlib: install the extra "
                         "`shadowdns[plot]`") from None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ideal: list[tuple[float, float]] = []
    for policy, points in curves.items():
        ordered = sorted(points, key=lambda p: p.minutes)
        ax.plot([p.minutes for p in ordered], [p.share for p in ordered], marker="o",
                label=policy)
        ideal.extend((p.minutes, ideal_share(cells, bucket, p.minutes, p.di_minutes))
                     for p in ordered)
    ideal.sort()
    ax.plot([x for x, _ in ideal], [y for _, y in ideal], linestyle="none", marker="x",
            color="grey", label="ideal at each run's minutes (each DI's busiest cells)")
    ax.set_xlabel("shadow-minutes")
    ax.set_ylabel("local share")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
