"""The GeoIP database every server of the geo benchmark reads, and the client subnets.

All servers must place a client on the same continent, or their answers cannot be compared.
So the benchmark either generates a small MaxMind City-layout database (`generated`, the
default: deterministic, loads in milliseconds, needs only `mmdb-writer`) or uses the
GeoLite2-City file bundled by `maxminddb-geolite2` (`geolite2`), or any path given. The ECS
subnets below are real networks on each continent: both built-in choices place them the same
way, and `verify` checks with `maxminddb` that the chosen database does before anything runs.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLIENTS", "Client", "resolve_database", "verify"]

BUILD_EPOCH = 1_767_225_600  # 2026-01-01, pinned so the generated file is reproducible


@dataclass(frozen=True, slots=True)
class Client:
    """One query stream: the ECS subnet it carries (None: no ECS) and where it should land.

    `continent` is what the database must say for the subnet; `location` is the policy
    location whose address every geo-aware server must answer with.
    """

    label: str
    subnet: str | None
    continent: str | None
    location: str

    def ecs_payload(self) -> bytes | None:
        """The ECS option payload (RFC 7871): family, source prefix, scope 0, address."""
        if self.subnet is None:
            return None
        net = ipaddress.ip_network(self.subnet)
        family = 1 if net.version == 4 else 2
        addr = net.network_address.packed[: (net.prefixlen + 7) // 8]
        return bytes([0, family, net.prefixlen, 0]) + addr

    def ecs_option_hex(self) -> str | None:
        """The ECS option payload as hex, for `dnsperf -E 8:<hex>`."""
        payload = self.ecs_payload()
        return None if payload is None else payload.hex()


# Oceania is deliberately not mapped by the policies: it exercises the default location,
# as does the stream without ECS (its source, 127.0.0.1, is in no database).
CLIENTS: tuple[Client, ...] = (
    Client("eu", "193.0.0.0/24", "EU", "eu"),
    Client("na", "8.8.8.0/24", "NA", "na"),
    Client("as", "202.12.27.0/24", "AS", "as"),
    Client("sa", "200.160.0.0/24", "SA", "sa"),
    Client("oc", "1.1.1.0/24", "OC", "def"),
    Client("none", None, None, "def"),
)

# network -> (country, continent, latitude, longitude); the networks GeoLite2 holds the
# subnets above in, so both databases also agree on ECS scope prefixes.
_NETWORKS: dict[str, tuple[str, str, float, float]] = {
    "193.0.0.0/20": ("NL", "EU", 52.3735, 4.8951),
    "8.8.0.0/19": ("US", "NA", 37.751, -97.822),
    "202.12.27.0/24": ("JP", "AS", 35.69, 139.69),
    "200.160.0.0/20": ("BR", "SA", -22.8305, -43.2192),
    "1.1.1.0/24": ("AU", "OC", -37.7, 145.1833),
}


def _write_generated(out: Path) -> Path:
    from mmdb_writer import MmdbF64, MMDBWriter
    from netaddr import IPSet

    class _Writer(MMDBWriter):
        def _build_meta(self) -> dict[str, Any]:
            meta: dict[str, Any] = super()._build_meta()
            meta["build_epoch"] = BUILD_EPOCH
            return meta

    writer = _Writer(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="shadowdns benchmark database (a few real networks per continent)",
    )
    for network, (country, continent, lat, lon) in _NETWORKS.items():
        record = {
            "continent": {"code": continent, "names": {"en": continent}},
            "country": {"iso_code": country, "names": {"en": country}},
            "location": {"latitude": MmdbF64(lat), "longitude": MmdbF64(lon)},
        }
        writer.insert_network(IPSet([network]), record)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(out))
    return out


def _bundled_geolite2() -> Path:
    spec = importlib.util.find_spec("_maxminddb_geolite2")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "GeoLite2-City.mmdb"
        if path.is_file():
            return path
    raise SystemExit("--geoip geolite2: the maxminddb-geolite2 package is not installed")


def resolve_database(choice: str, workdir: Path) -> Path:
    """`generated`, `geolite2` or a path -> the .mmdb file to give every server."""
    if choice == "generated":
        return _write_generated(workdir / "bench-city.mmdb")
    if choice == "geolite2":
        return _bundled_geolite2()
    path = Path(choice)
    if not path.is_file():
        raise SystemExit(f"--geoip {choice}: no such file")
    return path.resolve()


def verify(database: Path, clients: tuple[Client, ...] = CLIENTS) -> list[str]:
    """Problems with `database` for `clients`: each ECS subnet must sit on its continent."""
    import maxminddb

    problems = []
    with maxminddb.open_database(str(database)) as reader:
        for client in clients:
            if client.subnet is None:
                continue
            address = str(ipaddress.ip_network(client.subnet).network_address)
            record: Any = reader.get(address)
            section = record.get("continent") if isinstance(record, dict) else None
            continent = section.get("code") if isinstance(section, dict) else None
            if continent != client.continent:
                problems.append(
                    f"{database.name}: {client.subnet} is on {continent!r}, "
                    f"the benchmark needs {client.continent!r}"
                )
    return problems
