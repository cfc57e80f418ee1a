"""Every shared trace's frontiers: each policy swept over its knob, at its own minutes.

    .venv/bin/python -m bench.simulate_bounds [--data tests/data/traffic] [--out DIR] \
        [--traces STEM ...] [--prices 0.5 1] [--lead-times 15m] [--plots DIR] [--jobs 2] \
        [--cached-only]

For each trace file: reactive with its minimum hold swept (0 … 12 h) and `always` make the
reactive frontier; predictive and the oracle run at each `--prices` (the first is the
default, what is judged). Each run is `shadowdns simulate … --json` in a process of its own,
`--jobs` at a time, cached as JSON in `--out` (an interrupted run resumes), and put next
to the frontier and the ideal at its own minutes (`shadowdns.allocator.frontier`, which
`simulate --sweep` uses too). `--plots DIR` writes one PNG per trace and lead time
(matplotlib: the `plot` extra).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.simulate_table import name
from shadowdns.allocator.frontier import (
    HOLDS,
    TABLE_HEAD,
    Point,
    busiest_cells,
    format_duration,
    plot,
    table,
)
from shadowdns.allocator.simulate import rebucket
from shadowdns.allocator.simulate_cmd import load_trace, trace_files

BUCKET = 300


def run(trace: Path, policy: str, out: Path, extra: list[str],
        cached_only: bool = False) -> dict[str, Any] | None:
    tag = "".join(extra).replace("-", "").replace(" ", "")
    cache = out / (f"{name(trace)}.{policy}.json" if not tag
                   else f"{name(trace)}.{policy}.{tag}.json")
    if not cache.exists() and cached_only:
        return None
    if not cache.exists():
        cmd = [sys.executable, "-m", "shadowdns", "simulate", "--trace", str(trace),
               "--policy", policy, "--bucket", "5m", "--threshold", "p75", "--json",
               "--workers", "1", *extra]
        text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        cache.write_text(text)
    result: dict[str, Any] = json.loads(cache.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("tests/data/traffic"))
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "shadowdns-simulate")
    parser.add_argument("--traces", nargs="+", default=None, metavar="NAME",
                        help="only the trace files with these names (without .csv[.gz])")
    parser.add_argument("--prices", nargs="+", default=["0.5"])
    parser.add_argument("--oracle-prices", nargs="+", default=["0.5"])
    parser.add_argument("--lead-times", nargs="+", default=["15m"])
    parser.add_argument("--plots", type=Path, default=None, metavar="DIR")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cached-only", action="store_true",
                        help="run nothing: tabulate the runs already in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    traces = [t for t in trace_files(args.data)
              if args.traces is None or name(t) in args.traces]
    jobs: list[tuple[Path, str, str, str, list[str]]] = []
    for lead in args.lead_times:
        for trace in traces:
            ll = ["--lead-time", lead]
            for hold in HOLDS:
                h = format_duration(hold)
                jobs.append((trace, lead, "reactive", f"hold {h}", [*ll, "--min-hold", h]))
            jobs.append((trace, lead, "always", "always", ll))
            jobs += [(trace, lead, "predictive", f"price {x}", [*ll, "--price", x])
                     for x in args.prices]
            jobs += [(trace, lead, "oracle", f"price {x}", [*ll, "--price", x])
                     for x in args.oracle_prices]
    # the slow ones first, so the pool stays busy to the end
    jobs.sort(key=lambda j: j[2] != "predictive")
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(lambda j: run(j[0], j[2], args.out, j[4], args.cached_only),
                                jobs))
    found = {(j[0], j[1], j[2], j[3]): r for j, r in zip(jobs, results, strict=True)
             if r is not None}
    print(TABLE_HEAD)
    for lead in args.lead_times:
        for trace in traces:
            cells = busiest_cells([rebucket(s, BUCKET) for s in load_trace(trace)])
            curves: dict[str, list[Point]] = {}
            for (t, ld, policy, knob), r in found.items():
                if t == trace and ld == lead:
                    key = "reactive" if policy == "always" else policy
                    curves.setdefault(key, []).append(Point.from_figures(knob, r))
            if "reactive" not in curves:
                continue
            label = name(trace) if len(args.lead_times) == 1 else f"{name(trace)} ({lead})"
            others = curves.get("predictive", []) + curves.get("oracle", [])
            print("\n".join(table(label, curves["reactive"], others, cells, BUCKET)),
                  flush=True)
            if args.plots is not None:
                args.plots.mkdir(parents=True, exist_ok=True)
                plot(args.plots / f"{name(trace)}-{lead}.png", f"{name(trace)}, lead {lead}",
                     curves, cells, BUCKET)


if __name__ == "__main__":
    main()
