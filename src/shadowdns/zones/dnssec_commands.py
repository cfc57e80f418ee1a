"""`shadowdns dnssec`: the DS hand-off to the parent and the state of the signing keys."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from shadowdns.errors import ConfigError, Problem
from shadowdns.zones.keys import KEY_SUFFIX, ds_text, load_key


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    group = subparsers.add_parser("dnssec", help="DNSSEC keys: DS for the parent, status")
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
    print(f"{'zone':<32} {'role':<4} {'alg':<16} {'tag':>5}  {'created':<20} state / next rollover")
    for path in files:
        origin = _origin(path.name[: -len(KEY_SUFFIX)])
        key = load_key(directory, origin, create=False)
        assert key is not None
        created = datetime.datetime.fromtimestamp(key.created, datetime.UTC)
        mode = path.stat().st_mode & 0o777
        note = "" if mode == 0o600 else f" (file mode {mode:o}: should be 600)"
        print(f"{origin.to_text():<32} CSK  ECDSAP256SHA256  {key.key_tag:>5}  "
              f"{created:%Y-%m-%d %H:%M:%S}Z  active, DNSKEY+CDS+CDNSKEY published; "
              f"rollover by hand, none scheduled{note}")
    return 0
