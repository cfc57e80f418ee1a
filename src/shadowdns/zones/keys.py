"""DNSSEC signing keys on disk: a combined signing key (CSK) per zone, or a KSK/ZSK split
whose ZSK rolls on a schedule; made on first use.

The server signs what it serves (`resolver.signing`); this module owns where the keys
live, which key signs what at a given time, and what the zone publishes about them: the
DNSKEY set at the apex, CDS/CDNSKEY for the parent (RFC 8078) and the DS the operator
hands to the parent. The crypto is `cryptography`'s ECDSA P-256.

Files in the key directory (mode 0700, every file 0600; a key file that exists is never
rewritten, except by a fleet node taking what a roll explains, see `fleet.sync_keys`):
- `<origin>.csk.pem`: the zone's entry key (PKCS#8), a CSK, or the KSK under a split.
- `<origin>.csk.next.pem`: its successor during a hand roll (`shadowdns dnssec roll`):
  published in the DNSKEY set, signing it beside the old one, and named by CDS/CDNSKEY.
- `key-policy.yaml` (optional): `split: true` turns on the KSK/ZSK split, with
  `zsk_lifetime` (how long each ZSK signs) and `margin` (see `Schedule`); a fleet shares
  one (`fleet.sync_key_policy`: the last one written wins).
- `<origin>.zsk.json`: the start of the zone's ZSK schedule; `<origin>.zsk.<n>.pem`: ZSK n.

ZSK rollover is pre-publication (RFC 6781 §4.1.1.1, RFC 7583 §3.2): ZSK n+1 is published
a propagation interval (DNSKEY TTL + margin) before it replaces ZSK n as the signer, and
ZSK n stays published until its signatures have left caches (the zone's longest TTL +
margin). Which keys are published and which signs is a function of the clock, so every
process reading the directory agrees; `ZoneKey.next_change` says when it changes next.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.CDNSKEY
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rrset
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from shadowdns.durations import parse_duration
from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.zone import Zone

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
DS_DIGEST = dns.dnssectypes.DSDigest.SHA256  # digest type 2
# DNSKEY flags: zone key + secure entry point (a CSK or KSK); zone key alone (a ZSK).
CSK_FLAGS = 257
ZSK_FLAGS = 256
DNSKEY_TTL = 3600
KEY_SUFFIX = ".csk.pem"
NEXT_SUFFIX = ".csk.next.pem"
POLICY_FILE = "key-policy.yaml"
DEFAULT_ZSK_LIFETIME = 30 * 86400.0
DEFAULT_MARGIN = 3600.0
# Key files by name: the zone part, then what the file is (`key_path` makes the names).
_KEY_FILE = re.compile(r"^(?P<zone>.+)\.(?:csk(?:\.next|\.retired-\d+)?\.pem"
                       r"|zsk\.(?:\d+\.pem|json))$")
_ENTRY_TYPES = frozenset({int(dns.rdatatype.DNSKEY), int(dns.rdatatype.CDS),
                          int(dns.rdatatype.CDNSKEY)})


@dataclass(frozen=True, slots=True)
class ZoneKey:
    """The keys of one zone as they stand now: `private`/`dnskey` sign the zone's data
    (the active ZSK, else the CSK/KSK); `entry` holds the CSK/KSK(s) that sign the DNSKEY
    set when that is not the data signer alone (a split, or a hand roll under way)."""

    origin: dns.name.Name
    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY
    path: Path
    created: float
    entry: tuple[ZoneKey, ...] = ()
    # every DNSKEY at the apex (empty: just `dnskey`), and the entry key CDS/CDNSKEY name
    published: tuple[dns.rdtypes.ANY.DNSKEY.DNSKEY, ...] = ()
    announce: dns.rdtypes.ANY.DNSKEY.DNSKEY | None = None
    next_change: float | None = None  # when the schedule changes what is published or signs
    key_tag: int = field(default=-1)
    # the RRSIG signer name, canonical wire: made once (a dnspython name's hash or
    # canonical form walks every octet, and every signature needs it)
    signer: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.key_tag < 0:
            object.__setattr__(self, "key_tag", dns.dnssec.key_id(self.dnskey))
        if not self.signer:
            wire = self.origin.canonicalize().to_wire()
            assert wire is not None
            object.__setattr__(self, "signer", wire)

    def signers_for(self, rdtype: int) -> tuple[ZoneKey, ...]:
        """The keys whose RRSIGs an RRset of `rdtype` at the apex carries."""
        if self.entry and rdtype in _ENTRY_TYPES:
            return self.entry
        return (self,)

    @property
    def sep(self) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        """The entry key the parent's DS should name (the successor during a roll)."""
        return self.announce or (self.entry[0].dnskey if self.entry else self.dnskey)

    def ds(self) -> dns.rdtypes.ANY.DS.DS:
        return dns.dnssec.make_ds(self.origin, self.sep, DS_DIGEST)

    def apex_rrsets(self, ttl: int = DNSKEY_TTL) -> list[dns.rrset.RRset]:
        """DNSKEY, CDS and CDNSKEY for the apex: what the zone publishes about its keys."""
        dnskeys = dns.rrset.from_rdata_list(self.origin, ttl, list(self.published or
                                                                    (self.dnskey,)))
        cds = dns.dnssec.make_cds(self.origin, self.sep, DS_DIGEST)
        sep = self.sep
        cdnskey = dns.rdtypes.ANY.CDNSKEY.CDNSKEY(  # type: ignore[no-untyped-call]
            sep.rdclass, dns.rdatatype.CDNSKEY, sep.flags,
                                                  sep.protocol, sep.algorithm, sep.key)
        return [dnskeys, dns.rrset.from_rdata(self.origin, ttl, cds),
                dns.rrset.from_rdata(self.origin, ttl, cdnskey)]


@dataclass(frozen=True, slots=True)
class Schedule:
    """A zone's ZSK rollover times: ZSK n (from 1) is published at `start + (n-1)L`,
    signs from `start + P + (n-1)L` until ZSK n+1 does, and is withdrawn `R` after that,
    where L is the lifetime, P = DNSKEY TTL + margin, R = the longest TTL + margin.
    Before ZSK 1 signs, the KSK signs everything (the CSK's role)."""

    start: float
    lifetime: float
    propagation: float
    retention: float

    def publish(self, n: int) -> float:
        return self.start + (n - 1) * self.lifetime

    def active(self, n: int) -> float:
        return self.publish(n) + self.propagation

    def retire(self, n: int) -> float:
        return self.active(n + 1)

    def remove(self, n: int) -> float:
        return self.retire(n) + self.retention

    def _around(self, now: float) -> range:
        """The ZSK numbers that can be published or signing at `now`, and the next one."""
        low = math.floor((now - self.start - self.propagation - self.retention)
                         / self.lifetime)
        return range(max(1, low), math.floor((now - self.start) / self.lifetime) + 3)

    def published(self, now: float) -> list[int]:
        """The ZSKs in the DNSKEY set at `now`, oldest first."""
        return [n for n in self._around(now) if self.publish(n) <= now < self.remove(n)]

    def signer(self, now: float) -> int | None:
        """The ZSK that signs at `now` (None: none yet, the KSK does)."""
        n = math.floor((now - self.start - self.propagation) / self.lifetime) + 1
        return n if n >= 1 else None

    def next_change(self, now: float) -> float:
        """The first time after `now` that a ZSK is published, starts signing or goes."""
        if now < self.start:  # `_around` is empty more than two lifetimes before the start
            return self.start
        return min(t for n in self._around(now)
                   for t in (self.publish(n), self.active(n), self.remove(n)) if t > now)

    def state(self, n: int, now: float) -> str:
        if now < self.publish(n):
            return "planned"
        if now < self.active(n):
            return "published, not signing yet"
        if now < self.retire(n):
            return "active: signs the zone"
        if now < self.remove(n):
            return "retired: published until its signatures leave caches"
        return "removed"


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """`key-policy.yaml` in the key directory; absent: one CSK per zone."""

    split: bool = False
    zsk_lifetime: float = DEFAULT_ZSK_LIFETIME
    margin: float = DEFAULT_MARGIN

    @classmethod
    def load(cls, keys_dir: Path) -> KeyPolicy:
        path = keys_dir / POLICY_FILE
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigError([Problem(str(path), None, f"cannot read: {exc}")]) from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: bytes, where: str) -> KeyPolicy:
        """The policy `text` states; ConfigError naming `where` and every problem."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([Problem(where, None, f"cannot read: {exc}")]) from None
        problems: list[Problem] = []
        if not isinstance(raw, dict):
            raise ConfigError([Problem(where, None, "must be a mapping")])
        for unknown in sorted(set(raw) - {"split", "zsk_lifetime", "margin"}):
            problems.append(Problem(where, None, f"{unknown}: unknown key"))
        split = raw.get("split", False)
        if not isinstance(split, bool):
            problems.append(Problem(where, None, "split: must be true or false"))
        values = {}
        for name, default in (("zsk_lifetime", DEFAULT_ZSK_LIFETIME),
                              ("margin", DEFAULT_MARGIN)):
            try:
                values[name] = parse_duration(raw.get(name, default))
            except ValueError as exc:
                problems.append(Problem(where, None, f"{name}: {exc}"))
        if values.get("zsk_lifetime") == 0:
            problems.append(Problem(where, None, "zsk_lifetime: must be more than 0"))
        if problems:
            raise ConfigError(problems)
        return cls(split is True, values["zsk_lifetime"], values["margin"])


def key_path(keys_dir: Path, origin: dns.name.Name, suffix: str = KEY_SUFFIX) -> Path:
    name = origin.to_text(omit_final_dot=True) or "root"
    return keys_dir / f"{name.lower()}{suffix}"


def read_key(path: Path, origin: dns.name.Name, flags: int, create: bool = False
             ) -> ZoneKey | None:
    """One key file (None: missing and not `create`d)."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        pem = _create(path)
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
    dnskey = dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags=flags)
    return ZoneKey(origin, private, dnskey, path, path.stat().st_mtime)


def load_key(keys_dir: Path, origin: dns.name.Name, create: bool = True,
             zone: Zone | None = None, now: float | None = None) -> ZoneKey | None:
    """The zone's keys from `keys_dir` as they stand at `now`: its entry key (made, mode
    0600, when missing and `create` is set), a hand roll's successor, and under a split
    the ZSKs of its schedule (made when their time comes)."""
    entry = read_key(key_path(keys_dir, origin), origin, CSK_FLAGS, create)
    if entry is None:
        return None
    successor = read_key(key_path(keys_dir, origin, NEXT_SUFFIX), origin, CSK_FLAGS, False)
    entries = (entry,) if successor is None else (entry, successor)
    policy = KeyPolicy.load(keys_dir)
    at = time.time() if now is None else now
    if not policy.split:
        if successor is None:
            return entry
        return dataclasses.replace(entry, entry=entries,
                                   published=tuple(k.dnskey for k in entries),
                                   announce=successor.dnskey)
    schedule = zsk_schedule(keys_dir, origin, policy, zone, at, create)
    zsks = {n: read_key(key_path(keys_dir, origin, f".zsk.{n}.pem"), origin, ZSK_FLAGS, create)
            for n in schedule.published(at)}
    active = schedule.signer(at)
    signer = zsks.get(active) if active is not None else None
    published = tuple(k.dnskey for k in entries) + tuple(
        k.dnskey for _, k in sorted(zsks.items()) if k is not None)
    base = signer or entry
    return dataclasses.replace(base, entry=entries, published=published,
                               announce=successor.dnskey if successor else None,
                               next_change=schedule.next_change(at))


def zsk_schedule(keys_dir: Path, origin: dns.name.Name, policy: KeyPolicy,
                 zone: Zone | None, now: float, create: bool = True) -> Schedule:
    """The zone's ZSK schedule, fixed in `<origin>.zsk.json` the first time: its start, the
    lifetime then in force, P (the DNSKEY TTL + margin) and R (the zone's longest TTL +
    margin). Every process and `dnssec status` read the same times, and a running schedule
    never jumps: a later change of the policy or of the zone's TTLs applies only after
    that file is removed (which starts a new schedule)."""
    path = key_path(keys_dir, origin, ".zsk.json")
    if create and not path.exists():
        dnskey_ttl = min(DNSKEY_TTL, zone.soa.ttl) if zone is not None else DNSKEY_TTL
        longest = max((rrset.ttl for node in zone.nodes.values() for rrset in node.values()),
                      default=dnskey_ttl) if zone is not None else dnskey_ttl
        fresh = {"start": now, "lifetime": policy.zsk_lifetime,
                 "propagation": dnskey_ttl + policy.margin,
                 "retention": max(longest, dnskey_ttl) + policy.margin}
        write_key_file(path, json.dumps(fresh).encode())  # another process's may win
    try:
        return parse_schedule(path.read_bytes())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError([Problem(str(path), None, f"bad ZSK schedule: {exc}")]) from None


def parse_schedule(data: bytes) -> Schedule:
    """The schedule a `<origin>.zsk.json` holds (ValueError, KeyError, TypeError: not one)."""
    saved = json.loads(data)
    return Schedule(float(saved["start"]), float(saved["lifetime"]),
                    float(saved["propagation"]), float(saved["retention"]))


def new_private_key() -> bytes:
    """A fresh ECDSA P-256 private key as PKCS#8 PEM: what a key file holds."""
    private = ec.generate_private_key(ec.SECP256R1())
    return private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def _create(path: Path) -> bytes:
    write_key_file(path, new_private_key())
    return path.read_bytes()


def write_key_file(path: Path, data: bytes, replace: bool = False) -> None:
    """Write a file of the key directory, mode 0600, in a directory of mode 0700: a new
    one (one that exists wins), or with `replace` over the one there.

    Written aside and then linked (or renamed) into place: two processes making the same
    key (workers starting together, a ZSK falling due in each) never see a half-written
    file, and the link fails for the second."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(aside, path)
        else:
            os.link(aside, path)
    except FileExistsError:
        pass
    finally:
        aside.unlink(missing_ok=True)


def key_file_zone(name: str) -> str | None:
    """The zone part of a key file's name (`example.com`, `root`); None when `name` is no
    key file (the key policy, a file being written, anything else)."""
    match = _KEY_FILE.match(name)
    return match.group("zone") if match else None


def zone_origin_text(zone: str) -> str:
    """The origin (absolute text) of a key file's zone part: `root` is the root zone."""
    return "." if zone == "root" else f"{zone}."


def read_key_files(keys_dir: Path) -> dict[str, bytes]:
    """Every key file of the directory, {name: contents}: the keys and ZSK schedules a
    fleet shares (`key-policy.yaml` is configuration, not a key)."""
    try:
        entries = [entry for entry in os.scandir(keys_dir)
                   if key_file_zone(entry.name) is not None and entry.is_file()]
    except FileNotFoundError:
        return {}
    return {entry.name: Path(entry.path).read_bytes() for entry in entries}


def load_keys(keys_dir: Path, origins: Iterable[dns.name.Name],
              zones: Mapping[dns.name.Name, Zone] | None = None, now: float | None = None
              ) -> MappingProxyType[dns.name.Name, ZoneKey]:
    """The keys of every zone, every zone signed: made on first use."""
    found: dict[dns.name.Name, ZoneKey] = {}
    for origin in origins:
        key = load_key(keys_dir, origin, zone=zones.get(origin) if zones else None, now=now)
        assert key is not None
        found[origin] = key
    return MappingProxyType(found)


def directory_state(keys_dir: Path) -> tuple[tuple[str, int], ...]:
    """The key directory's files and their modification times: a change means a key was
    made, rolled or retired by another process or by hand."""
    try:
        return tuple(sorted((entry.name, entry.stat().st_mtime_ns)
                            for entry in os.scandir(keys_dir)
                            if not entry.name.startswith(".")))  # files being written
    except OSError:
        return ()


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


__all__ = ["ALGORITHM", "KeyPolicy", "Schedule", "ZoneKey", "directory_state", "ds_text",
           "key_file_zone", "key_path", "load_key", "load_keys", "new_private_key",
           "parse_schedule", "publish", "read_key", "read_key_files", "write_key_file",
           "zone_origin_text", "zsk_schedule"]
