"""DNSSEC signing keys on disk: one combined signing key (CSK) per zone, made on first use.

The server signs what it serves (`resolver.signing`); this module owns where the keys
live and what the zone publishes about them: the DNSKEY set at the apex, CDS/CDNSKEY
for the parent (RFC 8078) and the DS the operator hands to the parent. The crypto is
dnspython's (`dns.dnssec`, backed by `cryptography`).

Files: `DIR/<origin>.csk.pem`, a PKCS#8 ECDSA P-256 private key, created with mode 0600
in a directory of mode 0700; a file that exists is never rewritten.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.zone import Zone

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
DS_DIGEST = dns.dnssectypes.DSDigest.SHA256  # digest type 2
# DNSKEY flags of a CSK: zone key + secure entry point.
CSK_FLAGS = 257
DNSKEY_TTL = 3600
KEY_SUFFIX = ".csk.pem"


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """The signing key of one zone and the records derived from it."""

    origin: dns.name.Name
    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    path: Path
    created: float

    @property
    def key_tag(self) -> int:
        return dns.dnssec.key_id(self.dnskey)

    def ds(self) -> dns.rdtypes.ANY.DS.DS:
        return dns.dnssec.make_ds(self.origin, self.dnskey, DS_DIGEST)

    def apex_rrsets(self, ttl: int = DNSKEY_TTL) -> list[dns.rrset.RRset]:
        """DNSKEY, CDS and CDNSKEY for the apex: what the zone publishes about its key."""
        cds = dns.dnssec.make_cds(self.origin, self.dnskey, DS_DIGEST)
        cdnskey = dns.dnssec.make_cdnskey(self.private.public_key(), ALGORITHM,
                                          flags=CSK_FLAGS)
        return [dns.rrset.from_rdata(self.origin, ttl, rdata)
                for rdata in (self.dnskey, cds, cdnskey)]


def key_path(keys_dir: Path, origin: dns.name.Name) -> Path:
    name = origin.to_text(omit_final_dot=True) or "root"
    return keys_dir / f"{name.lower()}{KEY_SUFFIX}"


def load_key(keys_dir: Path, origin: dns.name.Name, create: bool = True) -> ZoneKey | None:
    """The zone's key from `keys_dir`, made (mode 0600) when missing and `create` is set."""
    path = key_path(keys_dir, origin)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        pem = _create(keys_dir, path)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, f"cannot read DNSSEC key: {exc}")]) \
            from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except ValueError as exc:
        raise ConfigError([Problem(str(path), None, f"not a PEM private key: {exc}")]) \
            from None
    if not isinstance(private, ec.EllipticCurvePrivateKey) \
            or not isinstance(private.curve, ec.SECP256R1):
        raise ConfigError([Problem(str(path), None, "DNSSEC key must be ECDSA P-256")])
    dnskey = dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags=CSK_FLAGS)
    return ZoneKey(origin, private, dnskey, path, path.stat().st_mtime)


def _create(keys_dir: Path, path: Path) -> bytes:
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        # O_EXCL: two workers starting together must not both write a key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return pem


def load_keys(keys_dir: Path, origins: Iterable[dns.name.Name]
              ) -> MappingProxyType[dns.name.Name, ZoneKey]:
    """One key per zone, every zone signed: made on first use."""
    found: dict[dns.name.Name, ZoneKey] = {}
    for origin in origins:
        key = load_key(keys_dir, origin)
        assert key is not None
        found[origin] = key
    return MappingProxyType(found)


def publish(zone: Zone, key: ZoneKey) -> Zone:
    """The zone with its DNSKEY, CDS and CDNSKEY at the apex (any it had are replaced).

    Only the apex node changes, so the other nodes are shared, not re-indexed."""
    apex = dict(zone.nodes[zone.origin])
    for rrset in key.apex_rrsets(min(DNSKEY_TTL, zone.soa.ttl)):
        apex[(int(rrset.rdtype), 0)] = rrset
    nodes = dict(zone.nodes)
    nodes[zone.origin] = MappingProxyType(apex)
    return dataclasses.replace(zone, nodes=MappingProxyType(nodes))


def ds_text(key: ZoneKey, ttl: int = DNSKEY_TTL) -> str:
    """The DS record in presentation format, ready for the parent zone."""
    return f"{key.origin.to_text()} {ttl} IN DS {key.ds().to_text()}"


__all__ = ["ALGORITHM", "ZoneKey", "ds_text", "key_path", "load_key", "load_keys", "publish"]
