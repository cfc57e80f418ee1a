"""Server CPU per policy edit through the API: `python -m bench.edit_cpu [--dis N]
[--edits N]`.

An operator's edit of one DI (GET it, PUT it back with its TTL changed) costs the server
CPU that its answers then lack (the churn benchmark's `--edit-every`). This starts the real
`shadowdns serve --api` on the geo workload (every DI with its own resources), lets it
settle, and reads the server's CPU time from /proc around each edit, less what it spends
idle, with no load generator running, so the figure is the edit's own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import geodb
from bench.churn import token_for
from bench.peers.base import Setup
from bench.peers.shadowdns import ShadowDNS
from bench.servers import free_port
from bench.workload import Workload
from shadowdns.api.client import ApiClient

SETTLE = 20.0  # seconds after the first answer: the prewarm and first window are done
AFTER = 3.0  # seconds after an edit's PUT returns: its reload, store write and recompile


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dis", type=int, default=10_000)
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--shadowdns", default=None, help="the shadowdns command to run")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="shadowdns-bench-edit-"))
    workload = Workload.geo(args.dis, resources="distinct", mix="full")
    geoip = geodb.resolve_database("generated", workdir)
    api_port = free_port()
    peer = ShadowDNS(args.shadowdns, extra_args=f"--api 127.0.0.1:{api_port}")
    pdir = workdir / "shadowdns"
    pdir.mkdir()
    setup = Setup(workload, pdir, free_port(), geoip)
    argv = peer.configure(setup)
    token = token_for(peer, pdir / "state.sqlite")
    with open(pdir / "log", "w") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{api_port}"
        with ApiClient(url, token, timeout=120.0) as client:
            deadline = time.monotonic() + 600
            while True:
                try:
                    client.get("/readyz")
                    break
                except Exception:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit(f"the server did not start; see {pdir / 'log'}") from None
                    time.sleep(0.5)
            time.sleep(SETTLE)
            start = cpu_seconds(server.pid)
            time.sleep(10.0)
            idle = (cpu_seconds(server.pid) - start) / 10.0
            costs = []
            for i in range(args.edits):
                path = f"/api/v1/zones/{workload.origin}/dis/di{(i * 7919) % workload.dis}"
                start, began = cpu_seconds(server.pid), time.monotonic()
                config = dict(client.get(path)["config"])
                config["ttl"] = int(config.get("ttl", 30)) + 1
                client.send("PUT", path, config)
                time.sleep(AFTER)
                costs.append(cpu_seconds(server.pid) - start
                             - idle * (time.monotonic() - began))
    finally:
        server.terminate()
        server.wait(30)
    print(f"{args.dis:,} DIs: idle {idle:.3f} CPU s/s; CPU s per edit "
          f"{', '.join(f'{c:.2f}' for c in costs)}; median {statistics.median(costs):.2f} "
          f"(the first includes the API's first read of the policy)")


if __name__ == "__main__":
    main()
