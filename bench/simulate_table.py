"""The predictive-vs-reactive table: every shared trace under every allocation policy.

    .venv/bin/python -m bench.simulate_table [--data ../shared/data/traffic] [--out DIR]

Runs `shadowdns simulate --trace T --policy P --lead-time 15m --bucket 5m --threshold p75
--json` for each trace file and policy (one process each; results are cached as JSON in
`--out`, default $TMPDIR/shadowdns-simulate, so an interrupted run resumes) and prints a
Markdown table. Each single-series
trace is spread over four regions by `shadowdns.allocator.simulate.multi_region` (local
time of day per region, different days of the source per region, user shares 35/30/20/15%);
an app trace (Azure Functions) gets one DI per app by `apps_to_regions`. The predictive
runs fit real models (auto: seasonal naive, weekly naive, ETS, SARIMAX, last value) and
take minutes per trace on two cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from shadowdns.allocator.simulate_cmd import trace_files

POLICIES = ("none", "reactive", "predictive", "oracle", "always")


def name(trace: Path) -> str:
    """A trace file's name without `.csv` / `.csv.gz`: its row label and cache prefix."""
    return trace.name.removesuffix(".gz").removesuffix(".csv")


def run(trace: Path, policy: str, out: Path, extra: list[str]) -> dict[str, object]:
    cache = out / f"{name(trace)}.{policy}.json"
    if cache.exists():
        result: dict[str, object] = json.loads(cache.read_text())
        return result
    cmd = [sys.executable, "-m", "shadowdns", "simulate", "--trace", str(trace), "--policy",
           policy, "--lead-time", "15m", "--bucket", "5m", "--threshold", "p75", "--json",
           *extra]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cache.write_text(text)
    result = json.loads(text)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/traffic"))
    parser.add_argument("--out", type=Path,
                        default=Path(tempfile.gettempdir()) / "shadowdns-simulate")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES))
    parser.add_argument("extra", nargs="*", help="more simulate flags after --")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    traces = trace_files(args.data)
    print("| trace | policy | local_share | shadow_minutes | allocations | releases |")
    print("|---|---|---:|---:|---:|---:|")
    for trace in traces:
        for policy in args.policies:
            r = run(trace, policy, args.out, args.extra)
            print(f"| {name(trace)} | {policy} | {r['local_share']} | {r['shadow_minutes']} "
                  f"| {r['allocations']} | {r['releases']} |", flush=True)


if __name__ == "__main__":
    main()
