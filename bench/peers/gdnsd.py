"""gdnsd: plugin_geoip with one map (continent -> datacenter) and one resource per pool.

Every DI is `DYNA geoip!pool` (distinct resources: `DYNA geoip!d<i>`, a resource of its own
with its own addresses); the map sends EU/NA/AS/SA to their datacenters and everything else
(including clients the database does not know) to `def`. Resources have only IPv4
addresses, so AAAA queries get NODATA. ECS is on by default in gdnsd.
"""

from __future__ import annotations

from bench.peers.base import Peer, Setup
from bench.workload import LOCATIONS, TTL

__all__ = ["Gdnsd"]


class Gdnsd(Peer):
    name = "gdnsd"
    binary = "gdnsd"
    packages = ("gdnsd",)

    def configure(self, setup: Setup) -> list[str]:
        d = setup.workdir
        (d / "zones").mkdir(parents=True, exist_ok=True)
        w = setup.workload
        distinct = w.resources == "distinct"
        zone = w.zone_text(di_default=False)
        zone += "".join(f"di{i} DYNA geoip!{f'd{i}' if distinct else 'pool'}\n"
                        for i in range(w.dis))
        (d / "zones" / setup.zone).write_text(zone)
        conf = [
            "options => {",
            f"  listen => [ 127.0.0.1:{setup.port} ]",
            f"  udp_threads => {setup.threads}",
            "  tcp_threads => 1",
            f"  run_dir => {d / 'run'}",
            f"  state_dir => {d / 'state'}",
            f"  zones_default_ttl => {TTL}",
            "}",
        ]
        if w.is_geo:
            assert setup.geoip is not None
            mapping = " ".join(f"{c} => [ {n} ]" for n, (_, _, c) in LOCATIONS.items() if c)

            def dcmap(i: int) -> str:
                return " ".join(f"{n} => {a}" for n, a in w.di_pool(i).items())

            pools = ([(f"d{i}", dcmap(i)) for i in range(w.dis)] if distinct
                     else [("pool", dcmap(0))])
            resources = "\n    ".join(f"{name} => {{ map => bench, dcmap => {{ {m} }} }}"
                                       for name, m in pools)
            conf += [
                "plugins => { geoip => {",
                "  maps => { bench => {",
                f"    geoip2_db => {setup.geoip}",
                f"    datacenters => [ {' '.join(LOCATIONS)} ]",
                f"    map => {{ {mapping} default => [ def ] }}",
                "  } }",
                f"  resources => {{\n    {resources}\n  }}",
                "} }",
            ]
        (d / "config").write_text("\n".join(conf) + "\n")
        return ["gdnsd", "-c", str(d), "start"]
