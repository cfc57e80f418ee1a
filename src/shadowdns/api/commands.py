"""The operator's CLI over the REST API: zone, record, di, resource, health, alloc, token.

Every API command takes ``--api URL`` and ``--token T`` (or ``SHADOWDNS_API`` /
``SHADOWDNS_TOKEN``), prints a readable table by default and JSON with ``--json``. An error
prints the HTTP status, the server's message and every problem it listed, and exits with a
code that says what kind of failure it was (`EXIT_CODES`). `token create|list|delete` works
on the local state database instead (it is how the first admin token is made).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shadowdns.api.client import DEFAULT_API, ApiClient, ApiClientError, seg
from shadowdns.durations import duration_arg
from shadowdns.output import ALLOC_COLUMNS, ALLOC_FORMATS, TIMES, table, when

EXIT_CODES = {0: 7, 401: 3, 403: 3, 404: 4, 409: 5, 412: 5, 422: 6}
"""Exit status per HTTP status: 3 auth, 4 not found, 5 conflict, 6 invalid, 7 unreachable,
1 anything else."""

Handler = Callable[[ApiClient, argparse.Namespace], Any]


# -- output ----------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, render: Callable[[Any], str] | None = None) -> None:
    if args.json or render is None:
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        print(render(data))


# -- plumbing --------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> ApiClient:
    verify: bool | str = True
    if args.cacert:
        verify = str(args.cacert)
    return ApiClient(args.api, args.token, verify=verify)


ZONE_FOUND_HELP = "zone (default: found from the name)"


def _zone_arg(parser: argparse.ArgumentParser) -> None:
    """`--zone Z`, as every command takes it; the older positional form still works."""
    parser.add_argument("zone_positional", nargs="?", default=None, metavar="ZONE",
                        help="the zone, as --zone (kept for older scripts)")
    parser.add_argument("--zone", default=None, help="zone origin, e.g. example.com.")
    parser.set_defaults(zone_required=True)


def _zone_of_args(args: argparse.Namespace) -> None:
    """Fold the positional zone into `args.zone`; refuse none, or two different ones."""
    positional = getattr(args, "zone_positional", None)
    if positional is not None:
        if args.zone is not None and args.zone != positional:
            raise ApiClientError(422, "invalid", f"two zones given: {positional} and "
                                 f"--zone {args.zone}")
        args.zone = positional
    if getattr(args, "zone_required", False) and not args.zone:
        raise ApiClientError(422, "invalid", "say which zone with --zone")


def _run(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            _zone_of_args(args)
            with _client(args) as client:
                handler(client, args)
        except ApiClientError as exc:
            print(f"shadowdns: error: {exc}", file=sys.stderr)
            return EXIT_CODES.get(exc.status, 1)
        return 0

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=os.environ.get("SHADOWDNS_API", DEFAULT_API),
                        metavar="URL", help="API base URL (default $SHADOWDNS_API or "
                        f"{DEFAULT_API})")
    parser.add_argument("--token", default=os.environ.get("SHADOWDNS_TOKEN"),
                        help="bearer token (default $SHADOWDNS_TOKEN)")
    parser.add_argument("--cacert", type=Path, default=os.environ.get("SHADOWDNS_CACERT"),
                        help="CA bundle to verify an HTTPS API (default $SHADOWDNS_CACERT)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _group(subparsers: argparse._SubParsersAction[Any], name: str,
           help_text: str) -> Subparsers:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text)
    parser.set_defaults(handler=lambda _a: _usage(parser))
    return parser.add_subparsers(dest=f"{name}_action", metavar="ACTION")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _action(group: Subparsers, name: str, help_text: str,
            handler: Handler) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text, description=help_text)
    _common(parser)
    parser.set_defaults(handler=_run(handler))
    return parser


def _read_object(args: argparse.Namespace) -> Any:
    """The object given by --file (YAML or JSON) or --data (JSON)."""
    if args.data is not None:
        try:
            return json.loads(args.data)
        except ValueError as exc:
            raise ApiClientError(422, "invalid", f"--data is not JSON: {exc}") from None
    text = sys.stdin.read() if str(args.file) == "-" else Path(args.file).read_text("utf-8")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApiClientError(422, "invalid", f"{args.file} is not YAML: {exc}") from None


def _object_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="YAML or JSON file with the object (- for stdin)")
    source.add_argument("--data", help="the object as JSON")
    parser.add_argument("--if-match", default=None, help="ETag the change is based on")


# -- zone and record -------------------------------------------------------------------------


def zone_list(c: ApiClient, args: argparse.Namespace) -> None:
    emit(args, c.get("/api/v1/zones"), lambda rows: table(rows, [
        ("zone", "origin"), ("serial", "serial"), ("rrsets", "rrsets"), ("dis", "dis"),
        ("policy", "policy"), ("file", "file")]))


def zone_export(c: ApiClient, args: argparse.Namespace) -> None:
    text = c.request("GET", f"/api/v1/zones/{seg(args.zone)}/export").text
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def zone_import(c: ApiClient, args: argparse.Namespace) -> None:
    path = Path(args.file)
    text = path.read_text(encoding="utf-8")
    origin = args.zone or _origin_of(path, text)
    served = {z["origin"] for z in c.get("/api/v1/zones")}
    if origin.lower().rstrip(".") + "." in served:
        out = c.send("PUT", f"/api/v1/zones/{seg(origin)}", {"text": text}, args.if_match)
        verb = "replaced"
    else:
        out = c.send("POST", "/api/v1/zones", {"origin": origin, "text": text})
        verb = "created"
    emit(args, out, lambda z: f"{verb} zone {z['origin']} serial {z['serial']}")


def _origin_of(path: Path, text: str) -> str:
    for line in text.splitlines():
        bare = line.split(";", 1)[0].strip()
        if bare.upper().startswith("$ORIGIN"):
            parts = bare.split()
            if len(parts) > 1:
                return parts[1]
        elif bare and not bare.startswith("$"):
            break
    return path.name.removesuffix(".zone") + "."


def zone_create(c: ApiClient, args: argparse.Namespace) -> None:
    out = c.send("POST", "/api/v1/zones", {"origin": args.zone, "nameservers": args.ns or []})
    emit(args, out, lambda z: f"created zone {z['origin']} serial {z['serial']}")


def zone_delete(c: ApiClient, args: argparse.Namespace) -> None:
    if not args.yes:
        raise ApiClientError(412, "confirm", f"deleting {args.zone} removes its zone and "
                             "policy files; add --yes to confirm")
    c.send("DELETE", f"/api/v1/zones/{seg(args.zone)}", None, args.if_match)
    emit(args, {"deleted": args.zone}, lambda _: f"deleted zone {args.zone}")


def _rrsets(rows: list[dict[str, Any]]) -> str:
    flat = [{**r, "rdata": rd} for r in rows for rd in r["rdata"]]
    return table(flat, [("name", "name"), ("ttl", "ttl"), ("type", "type"), ("rdata", "rdata")])


def record_list(c: ApiClient, args: argparse.Namespace) -> None:
    rows = c.get(f"/api/v1/zones/{seg(args.zone)}/rrsets", name=args.name, type=args.type)
    emit(args, rows, _rrsets)


def _record_target(c: ApiClient, args: argparse.Namespace) -> tuple[str, str]:
    zone = args.zone or c.zone_of(args.name)
    return zone, f"/api/v1/zones/{seg(zone)}/rrsets/{seg(args.name)}/{seg(args.type.upper())}"


def record_set(c: ApiClient, args: argparse.Namespace) -> None:
    _, path = _record_target(c, args)
    out = c.send("PUT", path, {"ttl": args.ttl, "rdata": args.rdata}, args.if_match)
    emit(args, out, lambda r: _rrsets([r]))


def record_delete(c: ApiClient, args: argparse.Namespace) -> None:
    _, path = _record_target(c, args)
    c.send("DELETE", path, None, args.if_match)
    emit(args, {"deleted": f"{args.name} {args.type.upper()}"},
         lambda _: f"deleted {args.name} {args.type.upper()}")


# -- policy objects --------------------------------------------------------------------------


def _objects(kind: str) -> tuple[Handler, Handler, Handler, Handler]:
    def zone_for(c: ApiClient, args: argparse.Namespace) -> str:
        if args.zone:
            return str(args.zone)
        return c.zone_of(args.name) if kind == "dis" else c.zone_of_object(kind, args.name)

    def path(c: ApiClient, args: argparse.Namespace) -> str:
        return f"/api/v1/zones/{seg(zone_for(c, args))}/{kind}/{seg(args.name)}"

    def render(rows: list[dict[str, Any]]) -> str:
        return table(rows, [("zone", "zone"), ("name", "name"), ("config", "config")])

    def list_(c: ApiClient, args: argparse.Namespace) -> None:
        where = f"/api/v1/zones/{seg(args.zone)}/{kind}" if args.zone else f"/api/v1/{kind}"
        emit(args, c.get(where), render)

    def show(c: ApiClient, args: argparse.Namespace) -> None:
        emit(args, c.get(path(c, args)), lambda o: yaml.safe_dump(
            {o["name"]: o["config"]}, sort_keys=False).rstrip())

    def set_(c: ApiClient, args: argparse.Namespace) -> None:
        out = c.send("PUT", path(c, args), _read_object(args), args.if_match)
        emit(args, out, lambda o: f"saved {kind[:-1] if kind != 'dis' else 'DI'} {o['name']} "
             f"in {o['zone']}")

    def delete(c: ApiClient, args: argparse.Namespace) -> None:
        c.send("DELETE", path(c, args), None, args.if_match)
        emit(args, {"deleted": args.name}, lambda _: f"deleted {args.name}")

    return list_, show, set_, delete


def _register_objects(subparsers: argparse._SubParsersAction[Any], command: str, kind: str,
                      what: str) -> None:
    list_, show, set_, delete = _objects(kind)
    group = _group(subparsers, command, f"list and edit {what} over the API")
    p = _action(group, "list", f"list {what}", list_)
    p.add_argument("--zone", help="only this zone")
    for name, help_text, handler in (("show", "show one", show), ("set", "create or replace",
                                     set_), ("delete", "delete one", delete)):
        p = _action(group, name, help_text, handler)
        p.add_argument("name", help="DI name (absolute)" if kind == "dis" else "id")
        p.add_argument("--zone", help=ZONE_FOUND_HELP)
        if name == "set":
            _object_args(p)
        elif name == "delete":
            p.add_argument("--if-match", default=None, help="ETag the change is based on")


# -- health ----------------------------------------------------------------------------------


def health_list(c: ApiClient, args: argparse.Namespace) -> None:
    emit(args, c.get("/api/v1/health"), lambda rows: table(rows, [
        ("resource", "resource"), ("state", "state"), ("probes", "probe_state"),
        ("override", "override"), ("since", "since"), ("location", "location"),
        ("role", "role"), ("reason", "reason")], TIMES))


def health_events(c: ApiClient, args: argparse.Namespace) -> None:
    rows = c.get("/api/v1/health/events", resource=args.resource, limit=args.limit)
    emit(args, rows, lambda rs: table(rs, [("time", "ts"), ("resource", "resource"),
                                           ("from", "old"), ("to", "new"),
                                           ("reason", "reason")], TIMES))


def health_override(c: ApiClient, args: argparse.Namespace) -> None:
    zone = args.zone or c.zone_of_object("resources", args.resource)
    out = c.send("PUT", f"/api/v1/zones/{seg(zone)}/resources/{seg(args.resource)}/override",
                 {"override": args.override})
    emit(args, out, lambda o: f"{o['name']}: override {args.override}")


# -- allocations and forecasts ---------------------------------------------------------------

def alloc_list(c: ApiClient, args: argparse.Namespace) -> None:
    rows = c.get("/api/v1/allocations", di=args.di, active=str(not args.all).lower())
    emit(args, rows, lambda rs: table(rs, ALLOC_COLUMNS, ALLOC_FORMATS))


def alloc_history(c: ApiClient, args: argparse.Namespace) -> None:
    rows = c.get("/api/v1/allocations/history", di=args.di, limit=args.limit)
    emit(args, rows, lambda rs: table(rs, ALLOC_COLUMNS, ALLOC_FORMATS))


def alloc_generation(c: ApiClient, args: argparse.Namespace) -> None:
    emit(args, c.get("/api/v1/allocations/generation"), lambda g: (
        f"generation {g['generation']} (answers from snapshot {g['snapshot_generation']}), "
        f"{g['active']} active: " + (", ".join(f"{k} {v}" for k, v in g["by_state"].items())
                                     or "none")))


def alloc_diff(c: ApiClient, args: argparse.Namespace) -> None:
    out = c.get("/api/v1/allocations/diff", since_generation=args.since_generation)

    def render(d: dict[str, Any]) -> str:
        rows = [{**a, "change": "+"} for a in d["added"]] + \
               [{**a, "change": "-"} for a in d["ended"]]
        head = f"generation {d['since_generation']} -> {d['generation']}"
        return head + "\n" + table(rows, [("", "change"), *ALLOC_COLUMNS], ALLOC_FORMATS)

    emit(args, out, render)


def alloc_pin(c: ApiClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"di": args.di, "resource": args.resource, "region": args.region,
                            "reason": args.reason or ""}
    if args.hold is not None:
        body["until"] = time.time() + args.hold
    out = c.send("POST", "/api/v1/allocations/pins", body)
    emit(args, out, lambda a: f"pinned allocation {a['id']}: {a['resource']} serves "
         f"{a['di']} in {a['region']}")


def alloc_release(c: ApiClient, args: argparse.Namespace) -> None:
    out = c.send("DELETE", f"/api/v1/allocations/{args.id}")
    emit(args, out, lambda a: f"released allocation {a['id']} ({a['resource']} for {a['di']} "
         f"in {a['region']})")


def alloc_forecasts(c: ApiClient, args: argparse.Namespace) -> None:
    rows = c.get("/api/v1/forecasts", di=args.di, region=args.region, hours=args.hours)

    def render(rs: list[dict[str, Any]]) -> str:
        now = time.time()
        flat = []
        for r in rs:
            nxt = next((p for p in r["points"] if p["ts"] >= now), None)
            last = r["actual"][-1] if r["actual"] else None
            flat.append({"di": r["di"], "region": r["region"], "model": r["model"],
                         "model_error": r["model_error"], "recent_error": r["recent_error"],
                         "actual": None if last is None else last["queries"],
                         "next": None if nxt is None else nxt["point"],
                         "upper": None if nxt is None else nxt["upper"],
                         "shadows": sum(1 for a in r["allocations"] if a["state"] != "released"),
                         })
        return table(flat, [("di", "di"), ("region", "region"), ("model", "model"),
                            ("model err", "model_error"), ("recent err", "recent_error"),
                            ("last actual", "actual"), ("next", "next"), ("upper", "upper"),
                            ("shadows", "shadows")])

    emit(args, rows, render)


# -- tokens (local state) --------------------------------------------------------------------


def _open_local(args: argparse.Namespace) -> Any:
    from shadowdns.store.commands import open_state

    return open_state(args)


def token_create(args: argparse.Namespace) -> int:
    from shadowdns.api.auth import new_token

    secret, row = new_token(args.role, args.name or "", expires_in=args.expires)
    store = _open_local(args)
    try:
        store.add_token(row)
    finally:
        store.close()
    base = (args.api or DEFAULT_API).rstrip("/")
    if "://" not in base:  # `serve --api` takes HOST:PORT; accept the same here
        base = f"http://{base}"
    dashboard = f"{base}/#token={secret}"
    if args.json:
        print(json.dumps({"id": row.id, "name": row.name, "role": row.role,
                          "expires_at": row.expires_at, "token": secret,
                          "dashboard": dashboard}))
    else:
        print(secret)
        print(f"token {row.id} ({row.role}) created; the secret above is shown only once. "
              f"Dashboard: {dashboard}", file=sys.stderr)
    return 0


def token_list(args: argparse.Namespace) -> int:
    store = _open_local(args)
    try:
        rows = [{"id": t.id, "name": t.name, "role": t.role, "created_at": t.created_at,
                 "expires_at": t.expires_at} for t in store.list_tokens()]
    finally:
        store.close()
    now = time.time()
    for r in rows:  # the table says in words what the JSON leaves to the reader
        at = r["expires_at"]
        r["expires"] = "never" if at is None else (
            when(at) + (" (expired)" if at <= now else ""))
    emit(args, rows, lambda rs: table(rs, [("id", "id"), ("name", "name"), ("role", "role"),
                                           ("created", "created_at"), ("expires", "expires")],
                                      TIMES))
    return 0


def token_delete(args: argparse.Namespace) -> int:
    store = _open_local(args)
    try:
        deleted = store.delete_token(args.id)
    finally:
        store.close()
    if not deleted:
        print(f"shadowdns: error: no token {args.id}", file=sys.stderr)
        return 4
    print(f"revoked token {args.id}")
    return 0


# -- registration ----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    from shadowdns.store.commands import add_state_argument

    zone = _group(subparsers, "zone", "list, import, export, create and delete zones over the API")
    _action(zone, "list", "list the served zones", zone_list)
    p = _action(zone, "export", "print a zone as an RFC 1035 master file", zone_export)
    _zone_arg(p)
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p = _action(zone, "import", "create a zone from a master file, or replace one (admin)",
                zone_import)
    p.add_argument("file", help="RFC 1035 master file")
    p.add_argument("--zone", help="origin (default: $ORIGIN of the file, else its name)")
    p.add_argument("--if-match", default=None, help="ETag the change is based on")
    p = _action(zone, "create", "create an empty zone (SOA and NS)", zone_create)
    _zone_arg(p)
    p.add_argument("--ns", action="append", help="name server name, repeatable (default ns1)")
    p = _action(zone, "delete", "stop serving a zone and delete its files (admin)", zone_delete)
    _zone_arg(p)
    p.add_argument("--yes", action="store_true", help="confirm")
    p.add_argument("--if-match", default=None, help="ETag the change is based on")

    record = _group(subparsers, "record", "list, set and delete RRsets over the API")
    p = _action(record, "list", "list a zone's RRsets", record_list)
    _zone_arg(p)
    p.add_argument("--name", help="only this owner name")
    p.add_argument("--type", help="only this record type")
    p = _action(record, "set", "create or replace an RRset", record_set)
    p.add_argument("name", help="owner name (absolute, or relative with --zone)")
    p.add_argument("type", help="record type, e.g. A, AAAA, MX, TXT")
    p.add_argument("rdata", nargs="+", help="record data, one argument per record")
    p.add_argument("--ttl", type=int, default=300, help="TTL in seconds (default 300)")
    p.add_argument("--zone", help=ZONE_FOUND_HELP)
    p.add_argument("--if-match", default=None, help="ETag the change is based on")
    p = _action(record, "delete", "delete an RRset", record_delete)
    p.add_argument("name", help="owner name (absolute, or relative with --zone)")
    p.add_argument("type", help="record type")
    p.add_argument("--zone", help=ZONE_FOUND_HELP)
    p.add_argument("--if-match", default=None, help="ETag the change is based on")

    _register_objects(subparsers, "di", "dis", "DIs")
    _register_objects(subparsers, "resource", "resources", "resources and their health checks")

    health = _group(subparsers, "health", "resource health and operator overrides over the API")
    _action(health, "list", "every resource's state", health_list)
    p = _action(health, "events", "recent state changes (failovers)", health_events)
    p.add_argument("--resource", help="only this resource")
    p.add_argument("--limit", type=int, default=50, help="most events shown (default 50)")
    p = _action(health, "override", "pin a resource up or down, or obey the probes",
                health_override)
    p.add_argument("resource", help="resource id")
    p.add_argument("override", choices=["up", "down", "obey"],
                   help="up or down whatever the probes say, or obey them again")
    p.add_argument("--zone", help=ZONE_FOUND_HELP)

    alloc = _group(subparsers, "alloc", "shadow allocations and forecasts over the API")
    p = _action(alloc, "list", "active allocations", alloc_list)
    p.add_argument("--di", help="only this DI")
    p.add_argument("--all", action="store_true", help="released ones too")
    p = _action(alloc, "history", "every allocation, newest last", alloc_history)
    p.add_argument("--di", help="only this DI")
    p.add_argument("--limit", type=int, default=100, help="most allocations shown (default 100)")
    _action(alloc, "generation", "the current generation", alloc_generation)
    p = _action(alloc, "diff", "allocations added and ended since a generation", alloc_diff)
    p.add_argument("--since-generation", type=int, default=0,
                   help="compare with this generation (default 0: everything)")
    p = _action(alloc, "pin", "lend a resource to a DI for one region now", alloc_pin)
    p.add_argument("di", help="DI name (absolute)")
    p.add_argument("resource", help="standby resource id")
    p.add_argument("region", help="region (location name) it serves")
    p.add_argument("--hold", type=duration_arg, default=None, metavar="DURATION",
                   help="release by itself after this long, e.g. 2h (default: until released)")
    p.add_argument("--reason", help="why (kept with the allocation)")
    p = _action(alloc, "release", "release an allocation", alloc_release)
    p.add_argument("id", type=int, help="allocation id (alloc list)")
    p = _action(alloc, "forecasts", "forecast vs actual per DI and region", alloc_forecasts)
    p.add_argument("--di", help="only this DI")
    p.add_argument("--region", help="only this region")
    p.add_argument("--hours", type=float, default=6.0,
                   help="hours of actual demand shown (default 6)")

    token = subparsers.add_parser(
        "token", help="create, list and revoke API tokens in the local state database",
        description="API tokens live hashed in the state database; these commands open it "
        "directly (run them where the server's --state is).")
    token.set_defaults(handler=lambda _a: _usage(token))
    tsub = token.add_subparsers(dest="token_action", metavar="ACTION")
    p = tsub.add_parser("create", help="create a token and print its secret once")
    p.add_argument("--role", required=True, choices=["reader", "operator", "admin"],
                   help="reader reads; operator also edits; admin also manages tokens")
    p.add_argument("--name", default="", help="who holds it (shown in the audit log)")
    p.add_argument("--expires", type=duration_arg, default=None, metavar="DURATION",
                   help="refuse the token after this long, e.g. 30d or 12h (default: never)")
    p.add_argument("--api", default=os.environ.get("SHADOWDNS_API"), metavar="URL",
                   help="the server's API URL, for the dashboard link printed "
                        f"(default $SHADOWDNS_API, else {DEFAULT_API}: serve --api's usual "
                        "address)")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_state_argument(p)
    p.set_defaults(handler=token_create)
    p = tsub.add_parser("list", help="list tokens (never their secrets)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_state_argument(p)
    p.set_defaults(handler=token_list)
    p = tsub.add_parser("delete", help="revoke a token")
    p.add_argument("id", help="token id (token list)")
    add_state_argument(p)
    p.set_defaults(handler=token_delete)
