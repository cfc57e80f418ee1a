"""PowerDNS Authoritative: the geoip backend (MaxMind DB, ECS) or, static, the bind backend.

Each DI is a geoip *service* whose template `%cn.pool.<zone>` (distinct resources: the DI's
own `%cn.p<i>.<zone>`) names the continent's pool record; continents without one (and
clients the database does not know, which expand to `unknown`) fall through to the second
template, `def.pool.<zone>` (`def.p<i>.<zone>`). A service whose target
exists in the zone's records is answered directly with those records, not as a CNAME.
Everything else is PowerDNS's defaults (packet cache included), as an operator would run it.
"""

from __future__ import annotations

from pathlib import Path

from bench.peers.base import Peer, Setup
from bench.workload import LOCATIONS, TTL

__all__ = ["PowerDNS"]


def _quoted(text: str) -> str:
    """A YAML single-quoted scalar (TXT data keeps its double quotes)."""
    return "'" + text.replace("'", "''") + "'"


def _write_zones_yaml(setup: Setup, path: Path) -> None:
    w, zone = setup.workload, setup.zone
    records: dict[str, list[str]] = {}
    for owner, rtype, rdata in w.static_records():
        name = w.fqdn(owner).rstrip(".")
        records.setdefault(name, []).append(f"      - {rtype.lower()}: {_quoted(rdata)}")
    with path.open("w") as out:
        out.write(f"domains:\n- domain: {zone}\n  ttl: {TTL}\n  records:\n")
        for name, lines in records.items():
            out.write(f"    {name}:\n" + "".join(line + "\n" for line in lines))
        # One pool per DI when each has its own primaries, else one shared by all.
        pools = range(w.dis) if w.resources == "distinct" else range(1)
        for i in pools:
            for location in LOCATIONS:
                pool = _pool(w.resources, i, zone)
                out.write(f"    {location}.{pool}:\n      - a: {w.di_address(i, location)}\n")
        out.write("  services:\n")
        for i in range(w.dis):
            pool = _pool(w.resources, i, zone)
            out.write(f"    di{i}.{zone}: ['%cn.{pool}', 'def.{pool}']\n")


def _pool(resources: str, i: int, zone: str) -> str:
    return f"pool.{zone}" if resources == "shared" else f"p{i}.{zone}"


class PowerDNS(Peer):
    name = "powerdns"
    binary = "pdns_server"
    packages = ("pdns-server", "pdns-backend-geoip", "pdns-backend-bind")

    def configure(self, setup: Setup) -> list[str]:
        d = setup.workdir
        conf = [
            "local-address=127.0.0.1",
            f"local-port={setup.port}",
            f"socket-dir={d}",
            "guardian=no",
            "daemon=no",
            "disable-syslog=yes",
            "write-pid=no",
            "webserver=no",
            "api=no",
            "loglevel=4",
            f"receiver-threads={setup.threads}",
        ]
        if setup.workload.is_geo:
            assert setup.geoip is not None
            _write_zones_yaml(setup, d / "zones.yaml")
            conf += ["launch=geoip", f"geoip-database-files=mmdb:{setup.geoip}",
                     f"geoip-zones-file={d / 'zones.yaml'}", "edns-subnet-processing=yes"]
        else:
            zone_file = d / f"{setup.zone}.zone"
            setup.workload.write_zone(zone_file, di_default=True)
            (d / "named.conf").write_text(
                f'zone "{setup.zone}" {{ type master; file "{zone_file}"; }};\n')
            conf += ["launch=bind", f"bind-config={d / 'named.conf'}"]
        (d / "pdns.conf").write_text("\n".join(conf) + "\n")
        return ["pdns_server", f"--config-dir={d}"]


