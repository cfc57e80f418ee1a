"""Knot DNS: the zone with every DI at its default answer, plus mod-geoip in geodb mode.

mod-geoip (Debian package knot-module-geoip) keys on `continent/code` and holds one view per
continent and DI, with that DI's own address there (distinct resources) or the shared one; a
client that matches no view gets the zone's own record, the default. `edns-client-subnet: on`
makes Knot parse ECS, which the module then prefers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.peers.base import Peer, Setup
from bench.workload import LOCATIONS, TTL

__all__ = ["Knot"]

MODULE_GLOB = "/usr/lib/*/knot/modules-*/geoip.so"


def _write_geo_conf(setup: Setup, path: Path) -> None:
    w = setup.workload
    views = [(name, continent) for name, (_, _, continent) in LOCATIONS.items() if continent]
    with path.open("w") as out:
        for i in range(w.dis):
            out.write(f"di{i}.{setup.zone}:\n")
            for location, continent in views:
                out.write(f'  - geo: "{continent}"\n    A: {w.di_address(i, location)}\n')


class Knot(Peer):
    name = "knot"
    binary = "knotd"
    packages = ("knot", "knot-module-geoip")

    def missing(self) -> str | None:
        reason = super().missing()
        if reason is None and not list(Path("/").glob(MODULE_GLOB.lstrip("/"))):
            return "mod-geoip not installed (apt-get install knot-module-geoip)"
        return reason

    def configure(self, setup: Setup) -> list[str]:
        d = setup.workdir
        zone_file = d / f"{setup.zone}.zone"
        setup.workload.write_zone(zone_file, di_default=True)
        conf = [
            "server:",
            f"  listen: 127.0.0.1@{setup.port}",
            f"  rundir: {d}",
            f"  udp-workers: {setup.threads}",
            "  tcp-workers: 1",
            "  background-workers: 1",
            "  edns-client-subnet: on",
            "database:",
            f"  storage: {d / 'db'}",
            "log:",
            "  - target: stderr",
            "    any: warning",
        ]
        module = ""
        if setup.workload.is_geo:
            assert setup.geoip is not None
            _write_geo_conf(setup, d / "geo.conf")
            conf += [
                "mod-geoip:",
                "  - id: bench",
                f"    config-file: {d / 'geo.conf'}",
                f"    ttl: {TTL}",
                "    mode: geodb",
                f"    geodb-file: {setup.geoip}",
                "    geodb-key: [ continent/code ]",
            ]
            module = "    module: mod-geoip/bench"
        conf += [
            "zone:",
            f"  - domain: {setup.zone}",
            f"    file: {zone_file}",
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: none",
        ]
        if module:
            conf.append(module)
        (d / "knot.conf").write_text("\n".join(conf) + "\n")
        return ["knotd", "-c", str(d / "knot.conf")]

    def fresh_state(self, workdir: Path) -> None:
        shutil.rmtree(workdir / "db", ignore_errors=True)
