"""Geo answers with ECS against static answers with ECS, same server, same packets.

Starts `shadowdns serve` on the bundled demo zone pinned to core 0 and runs dnsperf on
core 1 in alternating rounds: once asking static names, once asking DI names whose answer
depends on the client's region, both with the same ECS option. Prints queries/s of each
and the ratio (the issue's goal: geo within 15 % of static).

    .venv/bin/python bench/geo_vs_static.py [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ECS_CN_24 = "8:00011800af10c7"  # family 1, /24, scope 0, 175.16.199.0 (Asia in GeoLite2)
STATIC = ["www.demo.shadowdns.test A", "mail.demo.shadowdns.test A",
          "ns1.demo.shadowdns.test A"]
GEO = ["app.demo.shadowdns.test A", "shop.demo.shadowdns.test A",
       "app.demo.shadowdns.test A"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dnsperf(port: int, queries: Path, seconds: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
         str(queries), "-l", str(seconds), "-c", "10", "-q", "100", "-E", ECS_CN_24],
        capture_output=True, text=True, check=True).stdout
    match = re.search(r"Queries per second:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(out)
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("dnsperf") is None:
        print("dnsperf not found: apt-get install dnsperf", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="shadowdns-geo-vs-static-"))
    files = {}
    for name, lines in (("static", STATIC), ("geo", GEO)):
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(lines) + "\n")
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "shadowdns", "--log-level", "WARNING",
         "serve", "--listen", f"127.0.0.1:{port}", "--state", str(work / "state.db")])
    try:
        time.sleep(3)
        dnsperf(port, files["static"], 2)  # fill the answer table
        dnsperf(port, files["geo"], 2)
        rates: dict[str, list[float]] = {"static": [], "geo": []}
        for _ in range(args.rounds):
            for name in ("static", "geo"):
                rates[name].append(dnsperf(port, files[name], args.seconds))
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    static = statistics.median(rates["static"])
    geo = statistics.median(rates["geo"])
    for name, median in (("static + ECS", static), ("geo + ECS", geo)):
        rounds = ", ".join(f"{r:,.0f}" for r in rates[name.split()[0]])
        print(f"{name:<13} {median:,.0f} q/s (rounds {rounds})")
    print(f"geo / static: {geo / static:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
