"""Subcommands that run or check the DNS server: `serve` and `check`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from shadowdns import __version__
from shadowdns.durations import duration_arg
from shadowdns.errors import ConfigError, Problem, ShadowDNSError
from shadowdns.logs import ACCESS_LOG_MODES
from shadowdns.resolver.render import EDNS_PAYLOAD, Identity
from shadowdns.resolver.server import ListenAddress
from shadowdns.resolver.tcp import EVICT_AFTER, TCPLimits
from shadowdns.resolver.transfer import (
    TransferConfig,
    parse_key,
    parse_key_file,
    parse_target,
)
from shadowdns.secret_files import read_secret_file
from shadowdns.store import Retention
from shadowdns.store.commands import add_state_argument, open_state, state_location

# Minute buckets kept at least this long: the allocator reads the new ones every window.
MIN_MINUTE_RETENTION = 3600.0

DEFAULT_LISTEN = "127.0.0.1:5353"


def demo_zones_dir() -> Path:
    """The zones bundled with the package, served when no --zones is given."""
    return Path(__file__).resolve().parent.parent / "data" / "demo"


def _nsid(text: str | None) -> bytes | None:
    if text is None:
        return None
    if text.startswith("0x"):
        return bytes.fromhex(text[2:])
    return text.encode()


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    serve = subparsers.add_parser("serve", help="run the authoritative server")
    serve.add_argument("--zones", type=Path, default=None,
                       help="directory of *.zone master files (default: the bundled demo)")
    serve.add_argument("--listen", action="append", default=None, metavar="ADDR:PORT",
                       help=f"address to listen on, repeatable; [::1]:5353 for IPv6 "
                            f"(default {DEFAULT_LISTEN})")
    serve.add_argument("--nsid", default=None,
                       help="NSID to return when asked (RFC 5001); text, or 0x-prefixed hex")
    serve.add_argument("--identity", default=None,
                       help="CHAOS TXT id.server / hostname.bind answer (default: hostname)")
    serve.add_argument("--hide-identity", action="store_true",
                       help="refuse id.server / hostname.bind")
    serve.add_argument("--server-version", default=f"shadowdns {__version__}",
                       help="CHAOS TXT version.server / version.bind answer")
    serve.add_argument("--hide-version", action="store_true",
                       help="refuse version.server / version.bind")
    serve.add_argument("--edns-payload", type=int, default=EDNS_PAYLOAD,
                       help="EDNS UDP payload size to advertise and honour "
                            f"(default {EDNS_PAYLOAD})")
    add_state_argument(serve, creates=True)
    serve.add_argument("--node-id", default=None,
                       help="this node's name in a fleet; the default NSID and CHAOS identity")
    serve.add_argument("--geoip", type=Path, default=None,
                       help="MaxMind DB (City or Country) to locate clients "
                            "(default: the bundled GeoLite2-City)")
    serve.add_argument("--api", default=None, metavar="ADDR:PORT",
                       help="serve the REST API, dashboard and /metrics here "
                            "(e.g. 127.0.0.1:8053)")
    serve.add_argument("--api-cert", type=Path, default=None, help="TLS certificate (PEM)")
    serve.add_argument("--api-key", type=Path, default=None, help="TLS private key (PEM)")
    serve.add_argument("--api-max-body", type=int, default=None, metavar="BYTES",
                       help="largest API request body; bigger ones get 413 before the token "
                            "is looked at (default 1 MiB)")
    serve.add_argument("--api-login-failures", type=int, default=None, metavar="N",
                       help="bad tokens one client address may send in a minute before it "
                            "gets 429 (default 10; 0: no limit)")
    serve.add_argument("--ecs-trust", action="append", default=None, metavar="CIDR",
                       help="believe the EDNS Client Subnet option only from these sources "
                            "(repeatable; default: from every source). From others the "
                            "source address locates the client and answers carry scope 0")
    serve.add_argument("--demand-prefix-cap", type=int, default=0, metavar="N",
                       help="count at most N queries a minute from one client prefix (/24, "
                            "/56; the believed ECS subnet, else the source) as demand for "
                            "one DI and region, so one client cannot drive allocations "
                            "(default 0: no cap)")
    serve.add_argument("--rrl-rate", type=int, default=0, metavar="N",
                       help="response rate limiting: at most N UDP replies a second per "
                            "client prefix (/24, /56) and answer class (default 0: off)")
    serve.add_argument("--rrl-slip", type=int, default=2, metavar="K",
                       help="send every K-th limited reply truncated (TC=1) so real clients "
                            "retry over TCP; 0 drops them all (default 2)")
    serve.add_argument("--rrl-exempt", action="append", default=[], metavar="CIDR",
                       help="never rate-limit replies to these networks (repeatable)")
    serve.add_argument("--rrl-dry-run", action="store_true",
                       help="count and log what rate limiting would drop, send everything")
    serve.add_argument("--transfer-acl", action="append", default=[], metavar="CIDR",
                       help="allow AXFR/IXFR from these networks, repeatable (default: none)")
    serve.add_argument("--tsig-key", action="append", default=[],
                       metavar="[ALG:]NAME:SECRET",
                       help="TSIG key (base64 secret); with keys, transfers must be signed")
    serve.add_argument("--tsig-key-file", action="append", default=[], type=Path,
                       metavar="FILE",
                       help="TSIG keys from a file (BIND `key` blocks as tsig-keygen writes "
                            "them, or [ALG:]NAME:SECRET lines), so secrets stay out of `ps`; "
                            "repeatable")
    serve.add_argument("--hook-secret-file", type=Path, default=None, metavar="FILE",
                       help="sign warm-up and drain webhooks with HMAC-SHA256 using the "
                            "secret in this file (header X-Shadowdns-Signature: sha256=HEX)")
    serve.add_argument("--notify", action="append", default=[], metavar="HOST[:PORT]",
                       help="secondary to send NOTIFY to on start and on every serial change")
    serve.add_argument("--health-quorum", type=int, default=0, metavar="N",
                       help="in a fleet, a resource is down when N nodes see it down "
                            "(default 0: a majority of the nodes probing it)")
    serve.add_argument("--dnssec-keys", type=Path, default=None, metavar="DIR",
                       help="sign every zone (DNSSEC, ECDSAP256SHA256, one CSK per zone); "
                            "keys are read from DIR and made there (mode 0600) if missing; "
                            "in a fleet (postgres:// state) shared through the store")
    serve.add_argument("--workers", type=int, default=1,
                       help="processes sharing the listening ports with SO_REUSEPORT "
                            "(default 1)")
    serve.add_argument("--udp-batch", action=argparse.BooleanOptionalAction, default=True,
                       help="read and answer UDP with recvmmsg/sendmmsg where the compiled "
                            "helper is built (default); --no-udp-batch: one recvfrom and "
                            "sendto per datagram")
    serve.add_argument("--answer-only", action="store_true",
                       help="only answer queries: no demand counting to the store, health "
                            "probes, forecasts, allocator or API (e.g. to measure their cost)")
    serve.add_argument("--allow-commands", action="store_true",
                       help="accept command health checks through the API and the fleet store "
                            "(ROOT-EQUIVALENT: any operator token can then run programs as "
                            "this server's user); without it they come only from host files")
    serve.add_argument("--flush-interval", type=duration_arg, default=60.0, metavar="DURATION",
                       help="write demand counts to the store this often; divides a minute "
                            "(default 60s)")
    serve.add_argument("--rollup-interval", type=duration_arg, default=60.0, metavar="DURATION",
                       help="roll demand up into 5-minute and hourly buckets and apply "
                            "retention this often (default 60s)")
    kept = Retention()
    for flag, field_name, what in (("--retention-minute", "minute", "minute"),
                                   ("--retention-5m", "five_minute", "5-minute"),
                                   ("--retention-hour", "hour", "hourly")):
        serve.add_argument(flag, dest=f"retention_{field_name}", type=duration_arg,
                           default=getattr(kept, field_name), metavar="DURATION",
                           help=f"keep {what} demand buckets this long (default "
                                f"{_days(getattr(kept, field_name))})")
    # For tests: stamp and roll up demand this many seconds from the wall clock.
    serve.add_argument("--access-log", choices=ACCESS_LOG_MODES, default=ACCESS_LOG_MODES[0],
                       help="API requests logged to shadowdns.api.access (method, path, "
                            "status, duration, token name): changes and errors (default), "
                            "all (reads too; an open dashboard reads 3 a second), or off")
    serve.add_argument("--query-log-sample", type=_sample_rate, default=0.0, metavar="RATE",
                       help="log this fraction of answered queries (0.01: one in a hundred, "
                            "1: all) to the shadowdns.queries logger; default 0: off, at no "
                            "cost to answering")
    serve.add_argument("--clock-offset", type=float, default=0.0, help=argparse.SUPPRESS)
    serve.add_argument("--stall-trace", type=float, default=0.0, metavar="MS",
                       help="log each event-loop stall of at least MS milliseconds with the "
                       "stacks of every thread during it (diagnostics; off by default)")
    tcp = TCPLimits()
    serve.add_argument("--tcp-max-connections", type=int, default=tcp.max_connections,
                       metavar="N",
                       help="TCP connections served at once; when full, a new one takes "
                            "the slot of the connection longest mid-message, else of the one "
                            f"longest without progress if over {EVICT_AFTER:g} s, else it is "
                            f"refused (default {tcp.max_connections})")
    serve.add_argument("--tcp-idle-timeout", type=float, default=tcp.idle_timeout,
                       metavar="SECONDS",
                       help="close a TCP connection idle this long between messages "
                            f"(default {tcp.idle_timeout:g})")
    serve.add_argument("--tcp-message-timeout", type=float, default=tcp.message_timeout,
                       metavar="SECONDS",
                       help="a TCP message must arrive whole this long after its first "
                            "byte, and a client must take some of its pending answers within "
                            f"this; else the connection is closed (default "
                            f"{tcp.message_timeout:g})")
    serve.add_argument("--tcp-lifetime", type=float, default=tcp.lifetime, metavar="SECONDS",
                       help="close a TCP connection this long after it opened, between "
                            f"messages and never mid-transfer; 0: no limit "
                            f"(default {tcp.lifetime:g})")
    serve.add_argument("--tcp-per-prefix", type=int, default=tcp.per_prefix, metavar="N",
                       help="TCP connections per client /24 (IPv4) or /56 (IPv6); one more "
                            f"is refused; 0: no limit (default {tcp.per_prefix})")
    serve.set_defaults(handler=cmd_serve)

    check = subparsers.add_parser(
        "check", help="validate zone and policy files without serving them")
    check.add_argument("zones", type=Path, help="directory of *.zone master files")
    check.add_argument("--geoip", type=Path, default=None,
                       help="MaxMind DB that serve will use (default: the bundled GeoLite2)")
    check.set_defaults(handler=cmd_check)

    explain = subparsers.add_parser(
        "explain", help="show the answer a client would get, and why (dry run)")
    explain.add_argument("name", help="query name")
    explain.add_argument("--client", required=True, metavar="IP[/PREFIX]",
                         help="client address; with /PREFIX it is treated as an ECS subnet")
    explain.add_argument("--qtype", default="A", help="query type (default A)")
    explain.add_argument("--zones", type=Path, default=None,
                         help="zones directory (default: the bundled demo)")
    explain.add_argument("--geoip", type=Path, default=None, help="MaxMind DB to use")
    add_state_argument(explain)  # shadow allocations and health, if given
    explain.add_argument("--api", default=None, metavar="URL",
                         help="ask this running server (its API) instead of reading files: "
                              "it answers from the zones, shadows and health it serves; "
                              "token from --token or $SHADOWDNS_TOKEN")
    explain.add_argument("--token", default=None,
                         help="bearer token for --api (default $SHADOWDNS_TOKEN)")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(handler=cmd_explain)


def _sample_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= rate <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return rate


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g}d"


def demand_settings(args: argparse.Namespace) -> tuple[float, float, Retention]:
    """(flush interval, rollup interval, retention) of `serve`, checked."""
    problems = []
    flush = args.flush_interval
    if not 0 < flush <= 60 or not (60 / flush).is_integer():
        problems.append(Problem("--flush-interval", None,
                                f"{flush:g}s must be positive and divide a minute"))
    if not args.rollup_interval > 0:
        problems.append(Problem("--rollup-interval", None, "must be positive"))
    if args.retention_minute < MIN_MINUTE_RETENTION:
        problems.append(Problem("--retention-minute", None,
                                f"must be at least {MIN_MINUTE_RETENTION / 3600:g}h"))
    for flag, value in (("--retention-5m", args.retention_five_minute),
                        ("--retention-hour", args.retention_hour)):
        if not value > 0:
            problems.append(Problem(flag, None, "must be positive"))
    if problems:
        raise ConfigError(problems)
    return flush, args.rollup_interval, Retention(
        args.retention_minute, args.retention_five_minute, args.retention_hour)


def transfer_config(args: argparse.Namespace) -> TransferConfig:
    import ipaddress

    try:
        acl = tuple(ipaddress.ip_network(c, strict=False) for c in args.transfer_acl)
    except ValueError as exc:
        raise ConfigError([Problem("--transfer-acl", None, str(exc))]) from None
    keys = {}
    for text in args.tsig_key:
        key = parse_key(text)
        keys[key.name] = key
    for path in getattr(args, "tsig_key_file", ()):
        for key in parse_key_file(path):
            keys[key.name] = key
    try:
        targets = tuple(parse_target(t) for t in args.notify)
    except ValueError as exc:
        raise ConfigError([Problem("--notify", None, str(exc))]) from None
    return TransferConfig(acl=acl, keys=keys, notify=targets)


def identity_from_args(args: argparse.Namespace) -> Identity:
    import socket

    node_id = getattr(args, "node_id", None)
    server_id = None if args.hide_identity else (args.identity or node_id
                                                 or socket.gethostname())
    nsid = args.nsid if args.nsid is not None else node_id
    version = None if args.hide_version else args.server_version
    if not 512 <= args.edns_payload <= 65535:
        raise ConfigError([Problem("--edns-payload", None, "must be between 512 and 65535")])
    return Identity(nsid=_nsid(nsid), server_id=server_id, version=version,
                    payload=args.edns_payload)


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress
    import socket

    from shadowdns.app import API_LOGIN_FAILURES, API_MAX_BODY, ServeConfig, run_service
    from shadowdns.resolver.rrl import RRLConfig, parse_exempt

    try:
        listen = tuple(ListenAddress.parse(a) for a in (args.listen or [DEFAULT_LISTEN]))
    except ValueError as exc:
        raise ConfigError([Problem("--listen", None, str(exc))]) from None
    if args.answer_only and args.api:
        raise ConfigError([Problem("--answer-only", None, "cannot be combined with --api")])
    flush_interval, rollup_interval, retention = demand_settings(args)
    for cidr in args.ecs_trust or ():
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError([Problem("--ecs-trust", None, str(exc))]) from None
    if args.demand_prefix_cap < 0:
        raise ConfigError([Problem("--demand-prefix-cap", None, "must be 0 or more")])
    if args.rrl_rate < 0 or args.rrl_slip < 0:
        raise ConfigError([Problem("--rrl-rate" if args.rrl_rate < 0 else "--rrl-slip", None,
                                   "must be 0 or more")])
    try:
        rrl = RRLConfig(args.rrl_rate, args.rrl_slip, parse_exempt(args.rrl_exempt),
                        args.rrl_dry_run)
    except ValueError as exc:
        raise ConfigError([Problem("--rrl-exempt", None, str(exc))]) from None
    api_max_body = API_MAX_BODY if args.api_max_body is None else args.api_max_body
    login_failures = (API_LOGIN_FAILURES if args.api_login_failures is None
                      else args.api_login_failures)
    if api_max_body < 1 or login_failures < 0:
        raise ConfigError([Problem("--api-max-body" if api_max_body < 1
                                   else "--api-login-failures", None, "must be positive")])
    tcp = TCPLimits(args.tcp_max_connections, args.tcp_idle_timeout,  # checks every flag
                    args.tcp_message_timeout, args.tcp_lifetime, args.tcp_per_prefix)
    config = ServeConfig(
        zones_dir=args.zones or demo_zones_dir(),
        listen=listen,
        identity=identity_from_args(args),
        state=state_location(args),
        geoip=args.geoip,
        api=args.api,
        api_cert=args.api_cert,
        api_key=args.api_key,
        api_max_body=api_max_body,
        api_login_failures=login_failures,
        workers=args.workers,
        udp_batch=args.udp_batch,
        answer_only=args.answer_only,
        allow_commands=args.allow_commands,
        hook_secret=(None if args.hook_secret_file is None else
                     read_secret_file(args.hook_secret_file, "--hook-secret-file").encode()),
        health_quorum=args.health_quorum,
        node_id=args.node_id or socket.gethostname(),
        transfers=transfer_config(args),
        ecs_trust=None if args.ecs_trust is None else tuple(args.ecs_trust),
        demand_prefix_cap=args.demand_prefix_cap,
        rrl=rrl,
        flush_interval=flush_interval,
        rollup_interval=rollup_interval,
        retention=retention,
        clock_offset=args.clock_offset,
        stall_trace=args.stall_trace / 1000.0,
        tcp_max_connections=tcp.max_connections,
        tcp_idle_timeout=tcp.idle_timeout,
        tcp_message_timeout=tcp.message_timeout,
        tcp_lifetime=tcp.lifetime,
        tcp_per_prefix=tcp.per_prefix,
        dnssec_keys=args.dnssec_keys,
        log_format=args.log_format,
        access_log=args.access_log,
        query_log_sample=args.query_log_sample,
    )
    return run_service(config)


def cmd_check(args: argparse.Namespace) -> int:
    from shadowdns.allocator.settings import SETTINGS_FILE
    from shadowdns.resolver.snapshot import build_snapshot, load_config, policy_path

    try:  # what serve and reload run: load everything, then compile a snapshot of it
        config = load_config(args.zones, args.geoip)
        build_snapshot(config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s): serve would refuse this configuration",
              file=sys.stderr)
        return 1
    except ShadowDNSError as exc:
        print(exc, file=sys.stderr)
        return 1
    for origin, zone in config.zones.items():
        count = sum(len(rr) for rr in zone.rrsets())
        print(f"{zone.file}: zone {origin} serial {zone.serial}, {count} records: ok")
        policy = config.policies.get(origin)
        if policy is not None:
            print(f"{policy_path(zone)}: {len(policy.locations)} locations, "
                  f"{len(policy.resources)} resources, {len(policy.dis)} DIs: ok")
    settings = args.zones / SETTINGS_FILE
    if settings.exists():
        print(f"{settings}: allocator mode {config.allocator.mode}: ok")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from shadowdns.resolver.explain import Explanation, explain

    if args.api:
        from shadowdns.api.client import ApiClient

        if args.zones or args.state or args.state_file:
            raise ConfigError([Problem("--api", None, "asks the running server, which uses "
                                       "its own zones and state: drop --zones/--state")])
        with ApiClient(args.api, args.token or os.environ.get("SHADOWDNS_TOKEN")) as client:
            data = client.get("/api/v1/explain", name=args.name, client=args.client,
                              qtype=args.qtype)
        print(json.dumps(data) if args.json else
              Explanation(**{k: v for k, v in data.items() if k != "source"}).to_text()
              + f"\nsource:  the server at {args.api}")
        return 0
    zones = args.zones or demo_zones_dir()
    if args.zones is None:
        print(f"explain: reading the bundled demo zones ({zones}); give --zones DIR, or "
              "--api URL to ask a running server", file=sys.stderr)
    store = None
    if args.state or args.state_file or os.environ.get("SHADOWDNS_STATE"):
        store = open_state(args)  # a typo in --state is an error, not an empty database
    try:
        report = explain(zones_dir=zones, name=args.name,
                         client=args.client, qtype=args.qtype, geoip=args.geoip, store=store)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps(report.to_json(), indent=None))
    else:
        print(report.to_text())
    return 0
