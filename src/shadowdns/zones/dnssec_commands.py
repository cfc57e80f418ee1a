"""`shadowdns dnssec`: the DS hand-off to the parent, the state of the signing keys, and the
hand roll of a zone's CSK/KSK."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.keys import (
    CSK_FLAGS,
    KEY_SUFFIX,
    NEXT_SUFFIX,
    ZSK_FLAGS,
    KeyPolicy,
    ZoneKey,
    ds_text,
    key_path,
    load_key,
    read_key,
    zsk_schedule,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    group = subparsers.add_parser("dnssec", help="DNSSEC keys: DS for the parent, status, roll")
    sub = group.add_subparsers(dest="dnssec_command", metavar="SUBCOMMAND", required=True)
    ds = sub.add_parser("ds", help="print a zone's DS record (digest type 2) for its parent; "
                                   "makes the key if it does not exist yet")
    ds.add_argument("--keys", type=Path, required=True, metavar="DIR",
                    help="the directory given to serve --dnssec-keys")
    ds.add_argument("zone", help="zone origin, e.g. example.com")
    ds.set_defaults(handler=_ds)
    status = sub.add_parser("status", help="list the keys, their state and next rollover")
    status.add_argument("--keys", type=Path, required=True, metavar="DIR",
                        help="the directory given to serve --dnssec-keys")
    status.set_defaults(handler=_status)
    roll = sub.add_parser("roll", help="roll a zone's CSK/KSK by hand: publish a successor "
                                       "with CDS/CDNSKEY and print its DS; --finish retires "
                                       "the old key once the parent has the new DS")
    roll.add_argument("--keys", type=Path, required=True, metavar="DIR",
                      help="the directory given to serve --dnssec-keys")
    roll.add_argument("--finish", action="store_true",
                      help="the parent serves the new DS and the old one's TTL has passed: "
                           "retire the old key")
    roll.add_argument("zone", help="zone origin, e.g. example.com")
    roll.set_defaults(handler=_roll)


def _origin(text: str) -> dns.name.Name:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ConfigError([Problem("ZONE", None, f"not a domain name: {exc}")]) from None


def _ds(args: argparse.Namespace) -> int:
    key = load_key(args.keys, _origin(args.zone))
    assert key is not None
    print(ds_text(key))
    return 0


def _status(args: argparse.Namespace) -> int:
    directory: Path = args.keys
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), None, "no such key directory")])
    files = sorted(directory.glob(f"*{KEY_SUFFIX}"))
    if not files:
        print(f"no keys in {directory} (serve --dnssec-keys makes them on first use)")
        return 0
    policy = KeyPolicy.load(directory)
    now = time.time()
    print(f"{'zone':<32} {'role':<4} {'alg':<16} {'tag':>5}  {'created':<20} state / next rollover")
    for path in files:
        origin = _origin(path.name[: -len(KEY_SUFFIX)])
        key = load_key(directory, origin, create=False, now=now)
        assert key is not None
        entry = key.entry[0] if key.entry else key
        role = "KSK" if policy.split else "CSK"
        rolling = len(key.entry) > 1
        state = ("active, DNSKEY+CDS+CDNSKEY published" if not rolling else
                 "active, signs the DNSKEY set beside its successor")
        manual = "rollover by hand (dnssec roll)" + (
            ", under way: finish with dnssec roll --finish" if rolling else ", none under way")
        _row(origin, role, entry, f"{state}; {manual}{_mode_note(entry.path)}")
        if rolling:
            _row(origin, role, key.entry[1], "successor: published, named by CDS/CDNSKEY; "
                 "give the parent its DS (dnssec ds), then dnssec roll --finish"
                 f"{_mode_note(key.entry[1].path)}")
        if not policy.split:
            continue
        if not key_path(directory, origin, ".zsk.json").exists():
            print(f"{'':<32} ZSK schedule starts when a server first loads the zone")
            continue
        schedule = zsk_schedule(directory, origin, policy, None, now, create=False)
        for n in schedule.published(now):
            zsk = _zsk(directory, origin, n)
            if zsk is not None:
                _row(origin, "ZSK", zsk, f"#{n} {schedule.state(n, now)}{_mode_note(zsk.path)}")
        change = datetime.datetime.fromtimestamp(schedule.next_change(now), datetime.UTC)
        signer = schedule.signer(now)
        upcoming = (signer or 0) + 1
        roll = datetime.datetime.fromtimestamp(schedule.active(upcoming), datetime.UTC)
        print(f"{'':<32} ZSK rollover every {_span(schedule.lifetime)} by pre-publication: "
              f"next ZSK #{upcoming} signs from {roll:%Y-%m-%d %H:%M:%S}Z; next change of "
              f"the DNSKEY set or signer {change:%Y-%m-%d %H:%M:%S}Z")
    return 0


def _zsk(directory: Path, origin: dns.name.Name, n: int) -> ZoneKey | None:
    path = key_path(directory, origin, f".zsk.{n}.pem")
    if not path.exists():
        return None
    zsk = read_key(path, origin, ZSK_FLAGS)
    return zsk


def _row(origin: dns.name.Name, role: str, key: ZoneKey, state: str) -> None:
    created = datetime.datetime.fromtimestamp(key.created, datetime.UTC)
    print(f"{origin.to_text():<32} {role:<4} ECDSAP256SHA256  {key.key_tag:>5}  "
          f"{created:%Y-%m-%d %H:%M:%S}Z  {state}")


def _mode_note(path: Path) -> str:
    mode = path.stat().st_mode & 0o777
    return "" if mode == 0o600 else f" (file mode {mode:o}: should be 600)"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _roll(args: argparse.Namespace) -> int:
    """Start or finish a hand roll of the zone's CSK/KSK (double-KSK: the successor is
    published and signs the DNSKEY set beside the old key; CDS/CDNSKEY name it)."""
    directory: Path = args.keys
    origin = _origin(args.zone)
    current = key_path(directory, origin)
    successor = key_path(directory, origin, NEXT_SUFFIX)
    if not current.exists():
        raise ConfigError([Problem(str(current), None,
                                   "no key to roll (serve or dnssec ds makes the first)")])
    if args.finish:
        if not successor.exists():
            raise ConfigError([Problem(str(successor), None,
                                       "no roll under way (dnssec roll starts one)")])
        old = load_key(directory, origin, create=False)
        assert old is not None
        entry = old.entry[0] if old.entry else old
        retired = key_path(directory, origin, f".csk.retired-{entry.key_tag}.pem")
        # the current file exists at every moment: a server loading meanwhile never makes
        # a new key in its place
        os.link(current, retired)
        os.replace(successor, current)
        print(f"{origin.to_text()}: key {entry.key_tag} retired ({retired.name}); the "
              "successor signs alone from the servers' next key check (a minute, or SIGHUP)")
        return 0
    if successor.exists():
        raise ConfigError([Problem(str(successor), None,
                                   "a roll is under way: finish it with dnssec roll --finish")])
    load_key(directory, origin, create=False)  # the current key must be sound
    read_key(successor, origin, CSK_FLAGS, create=True)
    key = load_key(directory, origin, create=False)
    assert key is not None
    print(ds_text(key))
    print(f"; {origin.to_text()}: successor published (with CDS/CDNSKEY) from the servers' "
          "next key check. Give the parent the DS above (or let it read CDS); once the "
          "parent serves it and the old DS has left caches (its TTL), run "
          f"dnssec roll --finish --keys {directory} {args.zone}", file=sys.stderr)
    return 0
