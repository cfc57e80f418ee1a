"""PowerDNS Authoritative: the geoip backend (MaxMind DB, ECS) or, static, the bind backend.

Each DI is a geoip *service* whose template `%cn.pool.<zone>` names the continent's pool
record; continents without one (and clients the database does not know, which expand to
`unknown`) fall through to the second template, `def.pool.<zone>`. A service whose target
exists in the zone's records is answered directly with those records, not as a CNAME.
Everything else is PowerDNS's defaults (packet cache included), as an operator would run it.
"""

from __future__ import annotations

from bench.peers.base import Peer, Setup
from bench.workload import POOL, TTL

__all__ = ["PowerDNS"]


def _zones_yaml(setup: Setup) -> str:
    w, zone = setup.workload, setup.zone
    records: dict[str, list[str]] = {}
    for owner, rtype, rdata in w.static_records():
        name = w.fqdn(owner).rstrip(".")
        records.setdefault(name, []).append(f"      - {rtype.lower()}: {rdata}")
    for location, address in POOL.items():
        records[f"{location}.pool.{zone}"] = [f"      - a: {address}"]
    out = ["domains:", f"- domain: {zone}", f"  ttl: {TTL}", "  records:"]
    for name, lines in records.items():
        out.append(f"    {name}:")
        out += lines
    out.append("  services:")
    targets = f"['%cn.pool.{zone}', 'def.pool.{zone}']"
    out += [f"    {name}.{zone}: {targets}" for name in w.di_names()]
    return "\n".join(out) + "\n"


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
            (d / "zones.yaml").write_text(_zones_yaml(setup))
            conf += ["launch=geoip", f"geoip-database-files=mmdb:{setup.geoip}",
                     f"geoip-zones-file={d / 'zones.yaml'}", "edns-subnet-processing=yes"]
        else:
            zone_file = d / f"{setup.zone}.zone"
            zone_file.write_text(setup.workload.zone_text(di_default=True))
            (d / "named.conf").write_text(
                f'zone "{setup.zone}" {{ type master; file "{zone_file}"; }};\n')
            conf += ["launch=bind", f"bind-config={d / 'named.conf'}"]
        (d / "pdns.conf").write_text("\n".join(conf) + "\n")
        return ["pdns_server", f"--config-dir={d}"]


