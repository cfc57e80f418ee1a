"""`shadowdns shadow add|list|remove`: operators manage shadow allocations by hand.

A running server polls the store every second and recompiles its answers when the
allocations change, so these commands take effect without a restart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import UTC, datetime
from typing import Any

import dns.name

from shadowdns.errors import ConfigError, Problem
from shadowdns.store import NewAllocation
from shadowdns.store.commands import add_state_argument, open_state


def _when(text: str | None) -> float | None:
    """Absolute ISO 8601 time, epoch seconds, or a duration from now (`+30m`, `+2h`)."""
    if text is None:
        return None
    text = text.strip()
    try:
        if text.startswith("+"):
            units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
            unit = units.get(text[-1], 1)
            number = float(text[1:-1] if text[-1] in units else text[1:])
            return time.time() + number * unit
        if text.replace(".", "", 1).isdigit():
            return float(text)
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    except ValueError:
        raise ConfigError([Problem("--until", None, f"cannot read time {text!r}: use ISO 8601, "
                                                    "epoch seconds or +30m")]) from None


def _di(text: str) -> str:
    return dns.name.from_text(text).to_text()


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    shadow = subparsers.add_parser("shadow", help="manage shadow allocations by hand")
    shadow_sub = shadow.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)

    add = shadow_sub.add_parser("add", help="lend a standby resource to a DI for a region")
    add.add_argument("di", help="DI name (absolute, e.g. app.example.com.)")
    add.add_argument("resource", help="resource id from the policy file")
    add.add_argument("--region", required=True, help="region (location name) it serves")
    add.add_argument("--until", default=None, help="end time: ISO 8601, epoch, or +30m")
    add.add_argument("--state-name", dest="alloc_state", default="ready",
                     choices=["warming", "ready"], help="initial state (default ready)")
    add.add_argument("--reason", default="manual", help="why (kept with the allocation)")
    add_state_argument(add)
    add.set_defaults(handler=cmd_add)

    lst = shadow_sub.add_parser("list", help="list active shadow allocations")
    lst.add_argument("--all", action="store_true", help="include released allocations")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_state_argument(lst)
    lst.set_defaults(handler=cmd_list)

    rm = shadow_sub.add_parser("remove", help="remove a shadow allocation")
    rm.add_argument("target", help="allocation id, or DI name with RESOURCE and --region")
    rm.add_argument("resource", nargs="?", default=None,
                    help="resource id, when TARGET is a DI name")
    rm.add_argument("--region", default=None, help="region, when TARGET is a DI name")
    add_state_argument(rm)
    rm.set_defaults(handler=cmd_remove)


def cmd_add(args: argparse.Namespace) -> int:
    store = open_state(args)
    try:
        now = time.time()
        generation = store.current_generation()
        alloc = store.add_allocation(NewAllocation(
            di=_di(args.di), resource=args.resource, region=args.region, valid_from=now,
            generation=generation, created_at=now, state=args.alloc_state,
            valid_until=_when(args.until), reason=args.reason, pinned=True,
        ))
    finally:
        store.close()
    print(f"shadow {alloc.id}: {alloc.di} -> {alloc.resource} for region {alloc.region} "
          f"({alloc.state})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = open_state(args)
    try:
        rows = store.list_allocations(active_only=not args.all)
    finally:
        store.close()
    if args.json:
        print(json.dumps([{
            "id": a.id, "di": a.di, "resource": a.resource, "region": a.region,
            "state": a.state, "valid_from": a.valid_from, "valid_until": a.valid_until,
            "generation": a.generation, "reason": a.reason, "pinned": a.pinned,
        } for a in rows]))
        return 0
    from shadowdns.output import ALLOC_COLUMNS, ALLOC_FORMATS, table

    print(table([dataclasses.asdict(a) for a in rows], ALLOC_COLUMNS, ALLOC_FORMATS))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    store = open_state(args)
    try:
        if args.resource is None:
            if not args.target.isdigit():
                raise ConfigError([Problem("target", None,
                                           "give an allocation id, or DI RESOURCE --region R")])
            removed = store.remove_allocation(int(args.target))
        else:
            if args.region is None:
                raise ConfigError([Problem("--region", None, "required with DI RESOURCE")])
            removed = store.remove_allocation((_di(args.target), args.resource, args.region))
    finally:
        store.close()
    if not removed:
        print("no such active allocation")
        return 1
    print(f"removed {removed} allocation(s)")
    return 0
