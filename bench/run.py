"""The benchmark entry point: `python -m bench.run static|geo [options]` (see bench/README.md).

Both subcommands follow the same steps: optionally install what is missing (apt-get),
generate the workload and every server's configuration in a work directory outside the
repository, start each server pinned to the server core(s) and time its load to the first
answer, check every server's answers with `dig +subnet` (a server that answers wrongly is
reported and not timed), then time the servers in alternating rounds with dnsperf pinned to
the client core(s), run each again at half its peak rate for latency, and print one markdown
table. A missing or broken peer is reported, never fatal.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import geodb
from bench.check import check_server
from bench.dnsperf import Combined, Stream, combine, run_streams
from bench.geodb import CLIENTS, Client
from bench.peers import PEERS, Peer, Setup, ShadowDNS
from bench.report import ServerReport, machine_facts, markdown, package_version
from bench.servers import ServerProcess
from bench.workload import Workload

TOOLS_PACKAGES = ("dnsperf", "bind9-dnsutils")
REPO = Path(__file__).resolve().parent.parent
NO_ECS = Client("none", None, None, "def")


# --- small helpers ----------------------------------------------------------------------------


def cpu_count(spec: str) -> int:
    """Number of CPUs in a taskset list such as `0`, `0-1` or `0,2`."""
    total = 0
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def cores_busy(cpus: str) -> tuple[int, int]:
    """(busy, total) jiffies of the listed cores, from /proc/stat."""
    wanted: set[int] = set()
    for part in cpus.split(","):
        lo, _, hi = part.partition("-")
        wanted.update(range(int(lo), int(hi or lo) + 1))
    busy = total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
                v = [int(x) for x in values]
                idle = v[3] + v[4]
                total += sum(v[:8])
                busy += sum(v[:8]) - idle
    return busy, total


def install(peers: list[Peer]) -> None:
    packages = sorted({p for peer in peers for p in peer.packages} | set(TOOLS_PACKAGES))
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing: {' '.join(packages)}", flush=True)
    subprocess.run([*sudo, "apt-get", "update"], check=False, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", *packages], check=True, env=env)


def shadowdns_version(peer: ShadowDNS) -> str:
    try:
        out = subprocess.run([*peer.command, "--version"], capture_output=True, text=True,
                             timeout=30).stdout.split()
        rev = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return ""
    return " ".join([*out[-1:], rev]).strip()


def clean(workdir: Path) -> None:
    """Remove the generated configs and data; keep the report, raw results and logs."""
    for path in sorted(workdir.rglob("*"), reverse=True):
        if path.is_dir():
            if not any(path.iterdir()):
                path.rmdir()
        elif path.name not in ("report.md", "results.json") and path.suffix != ".log":
            path.unlink()


# --- the steps --------------------------------------------------------------------------------


def select_peers(args: argparse.Namespace) -> list[Peer]:
    peers: list[Peer] = []
    for name in [n.strip() for n in args.servers.split(",") if n.strip()]:
        if name == "shadowdns":
            peers.append(ShadowDNS(args.shadowdns))
            for n in args.workers:
                peers.append(ShadowDNS(args.shadowdns, label=f"w{n}", workers=n))
            for variant in args.shadowdns_variant:
                label, _, extra = variant.partition("=")
                peers.append(ShadowDNS(args.shadowdns, extra_args=extra, label=label))
        elif name in PEERS:
            peers.append(PEERS[name]())
        else:
            raise SystemExit(f"unknown server {name!r}; known: shadowdns, {', '.join(PEERS)}")
    return peers


def start_servers(peers: list[Peer], workload: Workload, geoip: Path | None,
                  args: argparse.Namespace, workdir: Path,
                  reports: dict[str, ServerReport]) -> dict[str, ServerProcess]:
    """Start each available peer in turn (alone, so load times do not interfere)."""
    running: dict[str, ServerProcess] = {}
    probe = f"di0.{workload.origin}" if workload.is_geo else f"s0.{workload.origin}"
    for peer in peers:
        report = reports[peer.name]
        reason = peer.missing()
        if reason is not None:
            report.status = f"not run: {reason}"
            print(f"- {peer.name}: {report.status}", flush=True)
            continue
        pdir = workdir / peer.name.replace("[", "-").replace("]", "")
        pdir.mkdir(parents=True, exist_ok=True)
        setup = Setup(workload, pdir, free_port(), geoip, cpu_count(args.server_cpus))
        argv = peer.configure(setup)
        server = ServerProcess(peer.name, argv, setup.port, args.server_cpus, pdir)
        print(f"- {peer.name}: starting on 127.0.0.1:{setup.port}: {shlex.join(argv)}",
              flush=True)
        server.start()
        if not server.wait_ready(probe, args.load_timeout):
            why = "exited" if not server.alive() else f"no answer within {args.load_timeout:g} s"
            report.status = f"did not start ({why})"
            print(f"  {report.status}; log {server.log_path}:\n{server.log_tail()}", flush=True)
            server.stop()
            continue
        report.load_seconds = server.load_seconds
        print(f"  answering after {server.load_seconds:.2f} s", flush=True)
        running[peer.name] = server
    return running


def check_servers(running: dict[str, ServerProcess], peers: list[Peer], workload: Workload,
                  clients: tuple[Client, ...], reports: dict[str, ServerReport]) -> None:
    for peer in peers:
        server = running.get(peer.name)
        if server is None:
            continue
        try:
            problems, notes = check_server(server.port, workload, clients, peer.geo_aware,
                                           server.workdir)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            problems, notes = [f"the check itself failed: {exc}"], []
        reports[peer.name].notes = notes
        if problems:
            reports[peer.name].status = f"wrong answers ({len(problems)})"
            print(f"- {peer.name}: {len(problems)} wrong answers, not timed:", flush=True)
            for p in problems[:8]:
                print(f"    {p}")
            server.stop()
            del running[peer.name]
        else:
            extra = f" (tolerated: {'; '.join(notes)})" if notes else ""
            print(f"- {peer.name}: all answers as expected{extra}", flush=True)


def timed_run(server: ServerProcess, streams: list[Stream], args: argparse.Namespace,
              duration: float, total_qps: float | None = None,
              verbose: bool = False) -> tuple[Combined, float, float]:
    """One dnsperf run; returns the results and the server's and client cores' CPU share."""
    cpu0, busy0 = server.cpu_seconds(), cores_busy(args.client_cpus)
    t0 = time.monotonic()
    results = run_streams(streams, server.port, duration, args.clients, args.outstanding,
                          total_qps, verbose, args.client_cpus)
    wall = time.monotonic() - t0
    busy1 = cores_busy(args.client_cpus)
    client = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * cpu_count(args.client_cpus)
    return combine(results), (server.cpu_seconds() - cpu0) / wall, client


def warm_up(name: str, server: ServerProcess, streams: list[Stream], args: argparse.Namespace,
            report: ServerReport) -> None:
    """Untimed runs of `--warmup` seconds until the rate stops rising (caches filled).

    Stops after two runs in a row that are not 5% faster than the best so far (one flat run
    may be noise), or after `--warmup-max` seconds; the rates are kept, so a slow cold start
    stays visible in the report.
    """
    spent, best, flat = 0.0, 0.0, 0
    while spent < args.warmup_max and flat < 2:
        combined, _, _ = timed_run(server, streams, args, args.warmup)
        report.warmup.append(combined.qps)
        spent += args.warmup
        flat = flat + 1 if combined.qps < best * 1.05 else 0
        best = max(best, combined.qps)
    print(f"  warm-up: {name:22s} " + " → ".join(f"{q:,.0f}" for q in report.warmup)
          + " q/s", flush=True)


def time_servers(running: dict[str, ServerProcess], streams: list[Stream],
                 args: argparse.Namespace, reports: dict[str, ServerReport]) -> None:
    names = list(running)
    if not names:
        return
    if args.warmup > 0:
        for name in names:
            warm_up(name, running[name], streams, args, reports[name])
    for rnd in range(args.rounds):
        order = names[rnd % len(names):] + names[: rnd % len(names)]
        qps: dict[str, float] = {}
        for name in order:
            combined, cpu, client = timed_run(running[name], streams, args, args.duration)
            report = reports[name]
            report.rounds.append(combined)
            report.cpu_share.append(cpu)
            report.client_share.append(client)
            qps[name] = combined.qps
            print(f"  round {rnd + 1}: {name:22s} {combined.qps:10,.0f} q/s  "
                  f"avg {combined.avg_latency * 1000:.3f} ms  loss {combined.loss:.2%}  "
                  f"server CPU {cpu:.0%}  client CPU {client:.0%}", flush=True)
        base = qps.get("powerdns")
        if base:
            for name, value in qps.items():
                reports[name].ratios.append(value / base)
    if args.half_rate:
        for name in names:
            report = reports[name]
            rate = report.median_qps() / 2
            combined, _, _ = timed_run(running[name], streams, args, args.duration,
                                       total_qps=rate, verbose=True)
            report.half, report.half_rate = combined, rate
            p99 = combined.percentile(99)
            print(f"  half rate: {name:22s} {combined.qps:10,.0f} q/s  "
                  f"avg {combined.avg_latency * 1000:.3f} ms  "
                  f"p99 {(p99 or 0) * 1000:.3f} ms  loss {combined.loss:.2%}", flush=True)


def targets(kind: str, reports: dict[str, ServerReport], workload: Workload) -> list[str]:
    """The issue's targets, each with the figure measured and PASS/FAIL."""
    me = reports.get("shadowdns")
    if me is None or not me.timed:
        return ["Targets: shadowdns was not timed."]
    lines = ["Targets (shadowdns):"]
    m = me.median_round()
    assert m is not None

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    if kind == "static":
        lines.append(f"- ≥ 40,000 q/s static on one core: {me.median_qps():,.0f} "
                     f"→ {verdict(me.median_qps() >= 40_000)}")
    else:
        if me.ratios:
            ratio = statistics.median(me.ratios)
            lines.append(f"- ≥ 2× PowerDNS q/s, same round, no loss: {ratio:.2f}×, "
                         f"loss {m.loss:.2%} → {verdict(ratio >= 2 and m.loss == 0)}")
        else:
            lines.append("- ≥ 2× PowerDNS: PowerDNS was not timed, no ratio")
        if workload.dis >= 1_000_000:
            load = me.load_seconds or 0.0
            rss = max(me.rss_bytes or 0, me.peak_rss_bytes or 0) / 2**30
            lines.append(f"- {workload.dis:,} DIs: load+first answer {load:.1f} s (< 60), "
                         f"peak RSS {rss:.2f} GiB (< 2) → {verdict(load < 60 and rss < 2)}")
    if kind == "static":
        others = [r for r in reports.values() if r.timed and not r.name.startswith("shadowdns")]
        if others:
            best = max(others, key=lambda r: r.median_qps())
            lines.append(f"- static answers at the dnsperf ceiling: {me.median_qps():,.0f} q/s "
                         f"= {me.median_qps() / best.median_qps():.0%} of {best.name} "
                         f"({best.median_qps():,.0f}; see client CPU)")
    for r in reports.values():
        if r.name.startswith("shadowdns[") and r.timed:
            lines.append(f"- {r.name}: {r.median_qps():,.0f} q/s = "
                         f"{r.median_qps() / me.median_qps():.2f}× shadowdns")
    if me.half is not None:
        lines.append(f"- avg latency < 1 ms at half peak ({me.half_rate:,.0f} q/s): "
                     f"{me.half.avg_latency * 1000:.3f} ms (p99 "
                     f"{(me.half.percentile(99) or 0) * 1000:.3f} ms) "
                     f"→ {verdict(me.half.avg_latency < 0.001)}")
    return lines


def run(kind: str, args: argparse.Namespace) -> int:
    peers = select_peers(args)
    if args.install:
        install(peers)
    for tool in ("dnsperf", "dig", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found; run with --install (Debian) or install it")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"shadowdns-bench-{kind}-"))
    workdir = workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        raise SystemExit("--workdir must be outside the repository")
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir}", flush=True)

    if kind == "geo":
        workload = Workload.geo(args.dis, args.statics, args.queries)
        geoip: Path | None = geodb.resolve_database(args.geoip, workdir)
        assert geoip is not None
        problems = geodb.verify(geoip)
        if problems:
            raise SystemExit("GeoIP database does not fit the benchmark:\n" + "\n".join(problems))
        clients = CLIENTS
    else:
        workload = Workload.static(args.names, args.queries)
        geoip, clients = None, (NO_ECS,)
    t0 = time.monotonic()
    if args.client_mode == "mixed":
        query_file = workload.write_binary_queries(
            workdir / "queries.bin", [c.ecs_payload() for c in clients])
        streams = [Stream("mixed", query_file, binary=True, streams=len(clients))]
    else:
        query_file = workload.write_queries(workdir / "queries.txt")
        streams = [Stream(c.label, query_file, c.ecs_option_hex(), edns=kind == "geo")
                   for c in clients]
    names = (f"{workload.dis:,} DIs, {workload.statics:,} static names" if workload.is_geo
             else f"{workload.statics:,} names")
    print(f"workload: {names}, {workload.queries:,} queries in {query_file} "
          f"({time.monotonic() - t0:.1f} s to generate)", flush=True)

    reports = {p.name: ServerReport(p.name, geo_aware=p.geo_aware) for p in peers}
    for p in peers:
        if isinstance(p, ShadowDNS):
            reports[p.name].version = shadowdns_version(p)
        elif p.packages:
            reports[p.name].version = package_version(p.packages[0])
    running: dict[str, ServerProcess] = {}
    try:
        running = start_servers(peers, workload, geoip, args, workdir, reports)
        check_servers(running, peers, workload, clients, reports)
        print(f"timing {', '.join(running) or 'nothing'}: {args.rounds} round(s) of "
              f"{args.duration:g} s", flush=True)
        time_servers(running, streams, args, reports)
        for name, server in running.items():
            reports[name].rss_bytes = server.rss_bytes()
            reports[name].peak_rss_bytes = server.peak_rss_bytes()
    finally:
        for server in running.values():
            server.stop()

    facts = machine_facts()
    labels = " ".join(c.label for c in clients)
    n = len(clients)
    if kind == "static":
        what = (f"zone of {workload.statics:,} A names + a CNAME; queries ~78% A, ~10% AAAA "
                f"NODATA, ~2% CNAME, ~10% NXDOMAIN, no EDNS")
    else:
        what = (f"{workload.dis:,} DIs, {workload.statics:,} static names, a CNAME; queries "
                f"~70% DI A, ~10% DI AAAA NODATA, ~8% static A, ~2% CNAME, ~10% NXDOMAIN")
    if args.client_mode == "mixed":
        how = (f"one dnsperf process sending all {n} clients' queries ({labels}) in turn, "
               f"`-B -c {args.clients * n} -q {args.outstanding * n}`")
    elif n == 1:
        how = f"one dnsperf process, `-c {args.clients} -q {args.outstanding}`"
    else:
        how = (f"{n} dnsperf processes, one per client ({labels}), each "
               f"`-c {args.clients} -q {args.outstanding}`")
    setup_lines = [
        f"Workload: {what}; {how}; {args.rounds} round(s) × {args.duration:g} s, servers "
        f"alternating; medians shown.",
        f"Server cores {args.server_cpus}, client cores {args.client_cpus} (taskset)"
        + (f"; GeoIP {args.geoip}" if kind == "geo" else "") + ".",
        "Server CPU: the server's CPU time over the run's wall time (100% = one core busy); "
        "client CPU: how busy the dnsperf core(s) were — near 100% means dnsperf is the "
        "ceiling.",
    ]
    title = ("shadowdns geo benchmark (ECS)" if kind == "geo"
             else "shadowdns static benchmark")
    ordered = [reports[p.name] for p in peers]
    text = markdown(title, facts, setup_lines, ordered, geo=kind == "geo")
    text += "\n".join(targets(kind, reports, workload)) + "\n"
    print()
    print(text)
    (workdir / "report.md").write_text(text)
    (workdir / "results.json").write_text(json.dumps(
        {"facts": facts, "args": vars(args),
         "servers": [r.to_json() for r in ordered]}, default=str, indent=1))
    print(f"(report.md, results.json and server logs in {workdir})")
    if not args.keep:
        clean(workdir)
    return 0


# --- command line -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{static,geo}")

    def common(p: argparse.ArgumentParser, servers: str, clients: int, outstanding: int,
               rounds: int) -> None:
        p.add_argument("--servers", default=servers,
                       help=f"comma-separated: shadowdns, {', '.join(PEERS)} (default {servers})")
        p.add_argument("--install", action="store_true",
                       help="apt-get install the selected peers, dnsperf and dig first")
        p.add_argument("--duration", type=float, default=10.0, help="seconds per timed run")
        p.add_argument("--rounds", type=int, default=rounds, help="rounds over all servers")
        p.add_argument("--warmup", type=float, default=3.0,
                       help="seconds per untimed warm-up run; runs repeat until the rate "
                            "stops rising (0: no warm-up)")
        p.add_argument("--warmup-max", type=float, default=120.0,
                       help="most seconds of warm-up per server")
        p.add_argument("--clients", type=int, default=clients, help="dnsperf -c per stream")
        p.add_argument("--outstanding", type=int, default=outstanding,
                       help="dnsperf -q (queries in flight) per stream")
        p.add_argument("--client-mode", choices=("streams", "mixed"), default="streams",
                       help="streams: one dnsperf process per client subnet (default); "
                            "mixed: one process sending every subnet's queries (wire "
                            "format, -B), which costs the client core less")
        p.add_argument("--queries", type=int, default=None,
                       help="lines in the query file (default max(200k, names))")
        p.add_argument("--no-half-rate", dest="half_rate", action="store_false",
                       help="skip the latency run at half of each server's peak rate")
        p.add_argument("--server-cpus", default="0", help="taskset list for servers")
        p.add_argument("--client-cpus", default="1", help="taskset list for dnsperf")
        p.add_argument("--load-timeout", type=float, default=180.0,
                       help="seconds a server may take to load and answer")
        p.add_argument("--shadowdns", default=None, metavar="CMD",
                       help="command that runs shadowdns (default: this Python -m shadowdns)")
        p.add_argument("--shadowdns-variant", action="append", default=[],
                       metavar="LABEL=ARGS",
                       help="also time shadowdns with extra serve arguments, e.g. "
                            "'bare=--no-api' (repeatable)")
        p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                       default=[], metavar="N[,N...]",
                       help="also time shadowdns --workers N for each N (give "
                            "--server-cpus as many cores)")
        p.add_argument("--workdir", default=None,
                       help="where configs and results go (default: a new temp directory)")
        p.add_argument("--keep", action="store_true",
                       help="keep generated configs and data (default: only report and logs)")

    static = sub.add_parser("static", help="static zone, shadowdns alone by default (issue: "
                                           "Authoritative DNS core)")
    static.add_argument("--names", type=int, default=10_000, help="A names in the zone")
    common(static, "shadowdns", clients=10, outstanding=100, rounds=1)

    geo = sub.add_parser("geo", help="geo + ECS workload, shadowdns against its peers "
                                     "(issue: Speed and scale)")
    geo.add_argument("--dis", type=int, default=10_000, help="DIs (try 100000, 1000000)")
    geo.add_argument("--statics", type=int, default=1000, help="static A names")
    geo.add_argument("--geoip", default="generated",
                     help="generated (default), geolite2 (bundled GeoLite2-City) or a path")
    common(geo, "shadowdns,powerdns,knot,gdnsd,nsd", clients=2, outstanding=20, rounds=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Stopped by `timeout` or a supervisor: unwind, so the servers started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args.kind, args)


if __name__ == "__main__":
    sys.exit(main())
