"""NSD: static answers only (every DI gets the default location's address).

NSD has no geo routing; it is the static reference (each DI answers with its `def`
address). Debian's NSD turns response-rate limiting on by default, which stalls dnsperf, so
this configuration switches it off.
"""

from __future__ import annotations

from bench.peers.base import Peer, Setup

__all__ = ["NSD"]


class NSD(Peer):
    name = "nsd"
    binary = "nsd"
    packages = ("nsd",)
    geo_aware = False

    def configure(self, setup: Setup) -> list[str]:
        d = setup.workdir
        zone_file = d / f"{setup.zone}.zone"
        setup.workload.write_zone(zone_file, di_default=True)
        conf = [
            "server:",
            "  ip-address: 127.0.0.1",
            f"  port: {setup.port}",
            "  do-ip6: no",
            f"  server-count: {setup.threads}",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{d}"',
            f'  pidfile: "{d / "nsd.pid"}"',
            f'  zonelistfile: "{d / "zone.list"}"',
            f'  xfrdfile: "{d / "xfrd.state"}"',
            f'  xfrdir: "{d}"',
            '  database: ""',
            "  verbosity: 1",
            "  rrl-ratelimit: 0",
            "  rrl-whitelist-ratelimit: 0",
            "remote-control:",
            "  control-enable: no",
            "zone:",
            f"  name: {setup.zone}",
            f'  zonefile: "{zone_file}"',
        ]
        (d / "nsd.conf").write_text("\n".join(conf) + "\n")
        return ["nsd", "-d", "-c", str(d / "nsd.conf")]
