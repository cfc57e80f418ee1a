"""How far ahead of reactive any allocator could be, at the same shadow-minutes.

    .venv/bin/python -m bench.simulate_bounds [--data tests/data/traffic] [--out DIR] \
        [--traces STEM ...]

The simulate table compares policies at one setting each, so a policy that spends more
shadow-minutes can look better only for spending them. This puts each policy next to two
references at *its own* shadow-minutes:

* `reactive frontier`: reactive with the minimum hold swept (10 m … 2 h) is a curve of
  (shadow-minutes, local_share); its value at the policy's minutes is interpolated
  linearly between the two nearest points. Holding longer is the free way to buy share.
* `ideal`: the local share of an allocator that knows every future bucket, ignores the
  threshold and the safety rules, pays nothing for warm-up and serves, within the same
  minutes *per DI* (`di_shadow_minutes` of the run), exactly the busiest (region, bucket)
  cells of each DI — an upper bound no allocator beats at that spending. With one DI (the
  single-series traces spread over four regions) that is the busiest cells of the trace;
  with many DIs of very different sizes (Azure: one app carries 41 % of the queries) the
  busiest cells of the whole trace would instead measure moving minutes from small DIs to
  big ones, which the DIs' thresholds decide, not a forecast. That figure is printed too
  (`ideal, any DI`).
* `headroom`: (local_share - frontier) / (ideal - frontier), the share of the way from the
  frontier to the ideal that the policy covers.

Each `shadowdns simulate` run is cached as JSON in `--out` (shared with
`bench.simulate_table`), so the predictive runs done for that table are reused.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.simulate_table import name
from shadowdns.allocator.simulate import rebucket, split_key
from shadowdns.allocator.simulate_cmd import load_trace, trace_files

HOLDS = ("10m", "20m", "30m", "45m", "60m", "90m", "120m")
BUCKET = 300


def run(trace: Path, policy: str, out: Path, extra: list[str]) -> dict[str, Any]:
    tag = "".join(extra).replace("-", "").replace(" ", "")
    cache = out / (f"{name(trace)}.{policy}.json" if not tag
                   else f"{name(trace)}.{policy}.{tag}.json")
    if not cache.exists():
        cmd = [sys.executable, "-m", "shadowdns", "simulate", "--trace", str(trace),
               "--policy", policy, "--lead-time", "15m", "--bucket", "5m", "--threshold",
               "p75", "--json", *extra]
        cache.write_text(subprocess.run(cmd, capture_output=True, text=True,
                                        check=True).stdout)
    result: dict[str, Any] = json.loads(cache.read_text())
    return result


def ideal_share(trace: Path, minutes: float,
                di_minutes: dict[str, float] | None = None) -> float:
    """Share of the trace's queries in its busiest `minutes / 5` (region, bucket) cells;
    with `di_minutes`, in each DI's busiest cells that fit in that DI's minutes."""
    by_di: dict[str, list[np.ndarray]] = {}
    for s in load_trace(trace):
        by_di.setdefault(split_key(s.key)[0], []).append(np.round(rebucket(s, BUCKET).values))
    values = {di: np.sort(np.concatenate(parts))[::-1] for di, parts in by_di.items()}
    total = sum(float(v.sum()) for v in values.values())
    if not total:
        return 0.0
    if di_minutes is None:
        ordered = np.sort(np.concatenate(list(values.values())))[::-1]
        return float(ordered[: int(minutes * 60 // BUCKET)].sum() / total)
    served = sum(float(v[: int(di_minutes.get(di, 0.0) * 60 // BUCKET)].sum())
                 for di, v in values.items())
    return served / total


def frontier_at(points: list[tuple[float, float]], minutes: float) -> float:
    """Reactive's local share at `minutes`, linear between the nearest swept holds."""
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    order = np.argsort(xs)
    return float(np.interp(minutes, xs[order], ys[order]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("tests/data/traffic"))
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "shadowdns-simulate")
    parser.add_argument("--policies", nargs="+", default=["reactive", "predictive", "oracle"])
    parser.add_argument("--traces", nargs="+", default=None, metavar="NAME",
                        help="only the trace files with these names (without .csv[.gz])")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| trace | policy | local_share | shadow_minutes | reactive frontier at these "
          "minutes | ideal at these minutes | headroom | ideal, any DI |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for trace in trace_files(args.data):
        if args.traces is not None and name(trace) not in args.traces:
            continue
        sweep = [run(trace, "reactive", args.out, ["--min-hold", h]) for h in HOLDS]
        points = [(float(r["shadow_minutes"]), float(r["local_share"])) for r in sweep]
        for policy in args.policies:
            r = run(trace, policy, args.out, [])
            minutes, share = float(r["shadow_minutes"]), float(r["local_share"])
            frontier = frontier_at(points, minutes)
            di_minutes = r.get("di_shadow_minutes")
            ideal = ideal_share(trace, minutes, di_minutes if isinstance(di_minutes, dict)
                                else None)
            headroom = (share - frontier) / (ideal - frontier) if ideal > frontier else 0.0
            print(f"| {name(trace)} | {policy} | {share:.3f} | {minutes:,.0f} "
                  f"| {frontier:.3f} | {ideal:.3f} | {headroom:+.0%} "
                  f"| {ideal_share(trace, minutes):.3f} |", flush=True)


if __name__ == "__main__":
    main()
