"""How far ahead of reactive any allocator could be, at the same shadow-minutes.

    .venv/bin/python -m bench.simulate_bounds [--data tests/data/traffic] [--out DIR]

The simulate table compares policies at one setting each, so a policy that spends more
shadow-minutes can look better only for spending them. This puts each policy next to two
references at *its own* shadow-minutes:

* `reactive frontier`: reactive with the minimum hold swept (10 m … 2 h) is a curve of
  (shadow-minutes, local_share); its value at the policy's minutes is interpolated
  linearly between the two nearest points. Holding longer is the free way to buy share.
* `ideal`: the local share of an allocator that knows every future bucket, ignores the
  threshold and the safety rules, pays nothing for warm-up and serves, within the same
  minutes, exactly the busiest (region, bucket) cells — an upper bound no allocator beats.

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

import numpy as np

from shadowdns.allocator.simulate import rebucket
from shadowdns.allocator.simulate_cmd import load_trace

HOLDS = ("10m", "20m", "30m", "45m", "60m", "90m", "120m")
BUCKET = 300


def run(trace: Path, policy: str, out: Path, extra: list[str]) -> dict[str, float]:
    tag = "".join(extra).replace("-", "").replace(" ", "")
    cache = out / (f"{trace.stem}.{policy}.json" if not tag
                   else f"{trace.stem}.{policy}.{tag}.json")
    if not cache.exists():
        cmd = [sys.executable, "-m", "shadowdns", "simulate", "--trace", str(trace),
               "--policy", policy, "--lead-time", "15m", "--bucket", "5m", "--threshold",
               "p75", "--json", *extra]
        cache.write_text(subprocess.run(cmd, capture_output=True, text=True,
                                        check=True).stdout)
    result: dict[str, float] = json.loads(cache.read_text())
    return result


def ideal_share(trace: Path, minutes: float) -> float:
    """Share of the trace's queries in its busiest `minutes / 5` (region, bucket) cells."""
    values = np.concatenate([np.round(rebucket(s, BUCKET).values)
                             for s in load_trace(trace)])
    ordered = np.sort(values)[::-1]
    cells = min(len(ordered), int(minutes * 60 // BUCKET))
    return float(ordered[:cells].sum() / ordered.sum()) if ordered.sum() else 0.0


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
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print("| trace | policy | local_share | shadow_minutes | reactive frontier at these "
          "minutes | ideal at these minutes |")
    print("|---|---|---:|---:|---:|---:|")
    for trace in sorted(args.data.rglob("*.csv")):
        sweep = [run(trace, "reactive", args.out, ["--min-hold", h]) for h in HOLDS]
        points = [(float(r["shadow_minutes"]), float(r["local_share"])) for r in sweep]
        for policy in args.policies:
            r = run(trace, policy, args.out, [])
            minutes, share = float(r["shadow_minutes"]), float(r["local_share"])
            print(f"| {trace.stem} | {policy} | {share:.3f} | {minutes:,.0f} "
                  f"| {frontier_at(points, minutes):.3f} "
                  f"| {ideal_share(trace, minutes):.3f} |", flush=True)


if __name__ == "__main__":
    main()
