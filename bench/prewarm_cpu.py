"""CPU seconds (time.process_time) of one prewarm pass over the geo workload, unsigned and
signed: `python -m bench.prewarm_cpu [--dis N] [--resources distinct|shared] [--profile]`.

The cold signed server's first rounds are bounded by what the prewarm costs before and
while it answers; this measures that in process, without servers or a load generator."""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from bench.peers.shadowdns import policy_lines, write_policy
from bench.workload import Workload
from shadowdns.resolver.engine import QueryEngine
from shadowdns.resolver.prewarm import Prewarm
from shadowdns.resolver.snapshot import build_snapshot, load_config


def measure(workdir: Path, workload: Workload, signed: bool,
            profile: bool) -> tuple[float, int, int]:
    """(CPU seconds of the fill, questions in the table, signed entries)."""
    zones = workdir / "zones"
    zones.mkdir(parents=True, exist_ok=True)
    workload.write_zone(zones / f"{workload.origin}zone", di_default=False)
    write_policy(zones / f"{workload.origin}policy.yaml", policy_lines(workload))
    config = load_config(zones, keys_dir=workdir / "keys" if signed else None)
    engine = QueryEngine(build_snapshot(config))
    prewarm = Prewarm(engine)
    prewarm.restart()
    profiler = cProfile.Profile() if profile else None
    start = time.process_time()
    if profiler is not None:
        profiler.enable()
    done = prewarm.fill(600.0)
    if profiler is not None:
        profiler.disable()
    seconds = time.process_time() - start
    assert done
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    table = engine.table
    return seconds, len(table.base) + len(table.compact), len(table.signed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dis", type=int, default=10_000)
    parser.add_argument("--resources", choices=("distinct", "shared"), default="distinct")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    parser.add_argument("--profile", action="store_true", help="cProfile the signed fill")
    args = parser.parse_args()
    workload = Workload.geo(args.dis, resources=args.resources, mix="full")
    for signed in (False, True):
        best = None
        for _ in range(1 if args.profile and signed else args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                got = measure(Path(tmp), workload, signed, args.profile and signed)
            best = got if best is None or got[0] < best[0] else best
        assert best is not None
        print(f"{'signed' if signed else 'unsigned'}: {best[0]:.2f} s CPU "
              f"({best[1]} entries, {best[2]} signed)")


if __name__ == "__main__":
    main()
