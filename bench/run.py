"""The benchmark entry point: `python -m bench.run static|geo|churn [options]` (see
bench/README.md).

`static` and `geo` follow the same steps: optionally install what is missing (apt-get),
generate the workload and every server's configuration in a work directory outside the
repository, then time the servers in alternating rounds with dnsperf pinned to the client
core(s), and print one markdown table. A missing or broken peer is reported, never fatal.

- `--start cold` (geo's default): every round starts every server afresh (a new state, no
  warm-up) and times it from its first answer, so the first seconds count; its answers are
  checked with `dig +subnet` right after the timed run (a server that answers wrongly is
  reported and its figures dropped).
- `--start warm`: each server starts once, is checked, warmed up until its rate stops
  rising, then timed — a steady-state figure, to be quoted only beside the cold one.

Then each server runs at half its own peak (latency) and all at one common offered rate
(server CPU per answer). `churn` (bench/churn.py) times shadowdns while its control plane
works.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import churn, geodb
from bench.check import check_server
from bench.dnsperf import Combined, Stream, combine, run_streams
from bench.geodb import CLIENTS, Client
from bench.peers import PEERS, Peer, Setup, ShadowDNS
from bench.report import ServerReport, machine_facts, markdown, package_version
from bench.servers import ServerProcess, cores_busy, cpu_count, free_port
from bench.workload import MIXES, RESOURCES, Workload

TOOLS_PACKAGES = ("dnsperf", "bind9-dnsutils")
REPO = Path(__file__).resolve().parent.parent
NO_ECS = Client("none", None, None, "def")


# --- small helpers ----------------------------------------------------------------------------


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


def query_streams(workload: Workload, clients: tuple[Client, ...], mode: str,
                  workdir: Path, dnssec: bool = False) -> list[Stream]:
    """Write the query file; one dnsperf stream per client, or one for all (`mixed`).
    `dnssec`: every query sets DO (dnsperf -D)."""
    t0 = time.monotonic()
    if mode == "mixed" and dnssec:
        raise SystemExit("--dnssec needs --client-mode streams (mixed sends prebuilt wire)")
    if mode == "mixed":
        query_file = workload.write_binary_queries(
            workdir / "queries.bin", [c.ecs_payload() for c in clients])
        streams = [Stream("mixed", query_file, binary=True, streams=len(clients))]
    else:
        query_file = workload.write_queries(workdir / "queries.txt")
        streams = [Stream(c.label, query_file, c.ecs_option_hex(), edns=workload.is_geo,
                          dnssec=dnssec) for c in clients]
    names = (f"{workload.dis:,} DIs ({workload.resources} resources), "
             f"{workload.statics:,} static names" if workload.is_geo
             else f"{workload.statics:,} names")
    print(f"workload: {names}, {workload.queries:,} queries ({workload.mix} mix) in "
          f"{query_file} ({time.monotonic() - t0:.1f} s to generate)", flush=True)
    return streams


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


def memory_limit(args: argparse.Namespace) -> int | None:
    """`--memory-limit` in bytes: GiB given, or half of this machine's memory (auto)."""
    if args.memory_limit == "auto":
        with open("/proc/meminfo") as f:
            total_kib = int(f.readline().split()[1])  # MemTotal
        return total_kib * 1024 // 2
    gib = float(args.memory_limit)
    return int(gib * 2**30) if gib > 0 else None


def server_dir(workdir: Path, peer: Peer) -> Path:
    return workdir / peer.name.replace("[", "-").replace("]", "")


def configure(peer: Peer, workload: Workload, geoip: Path | None, args: argparse.Namespace,
              workdir: Path) -> ServerProcess:
    """Write the peer's configuration (on a new port) and return its server, not started."""
    pdir = server_dir(workdir, peer)
    pdir.mkdir(parents=True, exist_ok=True)
    setup = Setup(workload, pdir, free_port(), geoip, cpu_count(args.server_cpus))
    argv = peer.configure(setup)
    return ServerProcess(peer.name, argv, setup.port, args.server_cpus, pdir,
                         memory_limit=memory_limit(args))


def launch(peer: Peer, server: ServerProcess, workload: Workload, args: argparse.Namespace,
           report: ServerReport, quiet: bool = False, record_load: bool = True) -> bool:
    """Start `server` from its configuration alone (fresh state) and wait for its first
    answer; on failure the report says why and the server is stopped."""
    probe = f"di0.{workload.origin}" if workload.is_geo else f"s0.{workload.origin}"
    peer.fresh_state(server.workdir)
    if not quiet:
        print(f"- {peer.name}: starting on 127.0.0.1:{server.port}: {shlex.join(server.argv)}",
              flush=True)
    server.start()
    if not server.wait_ready(probe, args.load_timeout):
        why = (server.killed or "exited") if not server.alive() \
            else f"no answer within {args.load_timeout:g} s"
        report.status = f"did not start ({why})"
        print(f"- {peer.name}: {report.status}; log {server.log_path}:\n{server.log_tail()}",
              flush=True)
        server.stop()
        return False
    assert server.load_seconds is not None
    if record_load:
        report.load_rounds.append(server.load_seconds)
    return True


def available(peers: list[Peer], reports: dict[str, ServerReport]) -> list[Peer]:
    out = []
    for peer in peers:
        reason = peer.missing()
        if reason is None:
            out.append(peer)
        else:
            reports[peer.name].status = f"not run: {reason}"
            print(f"- {peer.name}: {reports[peer.name].status}", flush=True)
    return out


def start_servers(peers: list[Peer], workload: Workload, geoip: Path | None,
                  args: argparse.Namespace, workdir: Path,
                  reports: dict[str, ServerReport]) -> dict[str, ServerProcess]:
    """Start each available peer in turn (alone, so load times do not interfere)."""
    running: dict[str, ServerProcess] = {}
    for peer in available(peers, reports):
        server = configure(peer, workload, geoip, args, workdir)
        if launch(peer, server, workload, args, reports[peer.name]):
            reports[peer.name].load_seconds = server.load_seconds
            print(f"  answering after {server.load_seconds:.2f} s", flush=True)
            running[peer.name] = server
    return running


def check_one(server: ServerProcess, peer: Peer, workload: Workload,
              clients: tuple[Client, ...], report: ServerReport, quiet: bool = False) -> bool:
    """Ask the server what every client stream asks; False (and why, printed) if wrong."""
    try:
        problems, notes = check_server(server.port, workload, clients, peer.geo_aware,
                                       server.workdir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        problems, notes = [f"the check itself failed: {exc}"], []
    report.notes = notes
    if problems:
        report.status = f"wrong answers ({len(problems)})"
        print(f"- {peer.name}: {len(problems)} wrong answers, not timed:", flush=True)
        for p in problems[:8]:
            print(f"    {p}")
        return False
    extra = f" (tolerated: {'; '.join(notes)})" if notes else ""
    if not quiet:
        print(f"- {peer.name}: all answers as expected{extra}", flush=True)
    return True


def check_servers(running: dict[str, ServerProcess], peers: list[Peer], workload: Workload,
                  clients: tuple[Client, ...], reports: dict[str, ServerReport]) -> None:
    for peer in peers:
        server = running.get(peer.name)
        if server is None:
            continue
        if not check_one(server, peer, workload, clients, reports[peer.name]):
            server.stop()
            del running[peer.name]


@dataclass(frozen=True, slots=True)
class Run:
    """One dnsperf run against one server, with the CPU both sides spent on it."""

    combined: Combined
    server_cpu: float  # seconds of CPU time of the server's processes during the run
    wall: float
    client: float  # how busy the client core(s) were, 1.0 = one core

    @property
    def cpu_share(self) -> float:
        return self.server_cpu / self.wall if self.wall else 0.0

    @property
    def cpu_per_answer(self) -> float | None:
        done = self.combined.completed
        return self.server_cpu / done if done else None


def timed_run(server: ServerProcess, streams: list[Stream], args: argparse.Namespace,
              duration: float, total_qps: float | None = None,
              verbose: bool = False, per_second: bool = False) -> Run:
    """One dnsperf run; CPU time from /proc/PID/stat before and after (all its processes)."""
    cpu0, busy0 = server.cpu_seconds(), cores_busy(args.client_cpus)
    t0 = time.monotonic()
    results = run_streams(streams, server.port, duration, args.clients, args.outstanding,
                          total_qps, verbose, args.client_cpus, per_second=per_second)
    wall = time.monotonic() - t0
    busy1 = cores_busy(args.client_cpus)
    client = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * cpu_count(args.client_cpus)
    return Run(combine(results), server.cpu_seconds() - cpu0, wall, client)


def warm_up(name: str, server: ServerProcess, streams: list[Stream], args: argparse.Namespace,
            report: ServerReport) -> None:
    """Untimed runs of `--warmup` seconds until the rate stops rising (caches filled).

    Stops after two runs in a row that are not 5% faster than the best so far (one flat run
    may be noise), or after `--warmup-max` seconds; the rates are kept, so a slow cold start
    stays visible in the report.
    """
    spent, best, flat = 0.0, 0.0, 0
    while spent < args.warmup_max and flat < 2:
        combined = timed_run(server, streams, args, args.warmup).combined
        report.warmup.append(combined.qps)
        spent += args.warmup
        flat = flat + 1 if combined.qps < best * 1.05 else 0
        best = max(best, combined.qps)
    print(f"  warm-up: {name:22s} " + " → ".join(f"{q:,.0f}" for q in report.warmup)
          + " q/s", flush=True)


def record_round(name: str, rnd: int, run: Run, report: ServerReport) -> None:
    combined = run.combined
    report.rounds.append(combined)
    report.cpu_share.append(run.cpu_share)
    report.client_share.append(run.client)
    first = (f"  first s {combined.per_second[0]:,.0f}, worst s {min(combined.per_second):,.0f}"
             if combined.per_second else "")
    print(f"  round {rnd + 1}: {name:22s} {combined.qps:10,.0f} q/s  "
          f"avg {combined.avg_latency * 1000:.3f} ms  loss {combined.loss:.2%}  "
          f"server CPU {run.cpu_share:.0%}  client CPU {run.client:.0%}{first}", flush=True)


def add_ratios(qps: dict[str, float], reports: dict[str, ServerReport]) -> None:
    base = qps.get("powerdns")
    if base:
        for name, value in qps.items():
            reports[name].ratios.append(value / base)


def time_servers(running: dict[str, ServerProcess], streams: list[Stream],
                 args: argparse.Namespace, reports: dict[str, ServerReport]) -> None:
    """Warm mode: servers already running and checked; warm up, then alternate rounds."""
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
            run = timed_run(running[name], streams, args, args.duration)
            record_round(name, rnd, run, reports[name])
            qps[name] = run.combined.qps
        add_ratios(qps, reports)


def time_cold(peers: list[Peer], workload: Workload, geoip: Path | None,
              clients: tuple[Client, ...], streams: list[Stream], args: argparse.Namespace,
              workdir: Path, reports: dict[str, ServerReport]) -> dict[str, ServerProcess]:
    """Cold mode: every round starts every server from its configuration and a fresh state,
    times it from its first answer (no warm-up), checks its answers, stops it.

    Configurations are written once per server; what a start leaves behind (shadowdns's
    --state database, Knot's database) is removed before the next. Returns the servers,
    stopped, for the extra runs."""
    servers = {p.name: configure(p, workload, geoip, args, workdir)
               for p in available(peers, reports)}
    by_name = {p.name: p for p in peers}
    for rnd in range(args.rounds):
        names = list(servers)
        order = names[rnd % len(names):] + names[: rnd % len(names)] if names else []
        qps: dict[str, float] = {}
        for name in order:
            peer, server, report = by_name[name], servers[name], reports[name]
            if not launch(peer, server, workload, args, report, quiet=rnd > 0):
                del servers[name]
                continue
            try:
                run = timed_run(server, streams, args, args.duration, per_second=True)
                rss, peak = server.rss_bytes(), server.peak_rss_bytes()
                # checked after the run, so the timed run starts at the first answer
                good = check_one(server, peer, workload, clients, report, quiet=rnd > 0)
            finally:
                server.stop()
            if not good:
                report.rounds.clear()
                del servers[name]
                continue
            report.rss_bytes = max(report.rss_bytes or 0, rss)
            report.peak_rss_bytes = max(report.peak_rss_bytes or 0, peak)
            print(f"  round {rnd + 1}: {name:22s} first answer after "
                  f"{report.load_rounds[-1]:.2f} s", flush=True)
            record_round(name, rnd, run, report)
            qps[name] = run.combined.qps
        add_ratios(qps, reports)
    for report in reports.values():
        if report.load_rounds:
            report.load_seconds = statistics.median(report.load_rounds)
    return servers


def common_rate(args: argparse.Namespace, reports: dict[str, ServerReport]) -> float | None:
    """The offered rate every server is run at for CPU per answer: `--cpu-rate`, or 80 % of
    the slowest timed server's median (so every one of them keeps up with it)."""
    if args.cpu_rate == "auto":
        timed = [r.median_qps() for r in reports.values() if r.timed]
        return 0.8 * min(timed) if timed else None
    rate = float(args.cpu_rate)
    return rate if rate > 0 else None


def extra_runs(running: dict[str, ServerProcess], streams: list[Stream],
               args: argparse.Namespace, reports: dict[str, ServerReport],
               start: Callable[[str], bool] | None = None) -> None:
    """Half of each server's own peak (latency, `-v`), then one offered rate for all
    (server CPU per answer). Cold mode passes `start`, which starts the server afresh."""
    rate = common_rate(args, reports)
    if not args.half_rate and rate is None:
        return
    for name, server in running.items():
        report = reports[name]
        if not report.timed or (start is not None and not start(name)):
            continue
        try:
            if args.half_rate:
                half = report.median_qps() / 2
                run = timed_run(server, streams, args, args.duration, total_qps=half,
                                verbose=True)
                report.half, report.half_rate = run.combined, half
                p99 = run.combined.percentile(99)
                print(f"  half rate: {name:22s} {run.combined.qps:10,.0f} q/s  "
                      f"avg {run.combined.avg_latency * 1000:.3f} ms  "
                      f"p99 {(p99 or 0) * 1000:.3f} ms  loss {run.combined.loss:.2%}",
                      flush=True)
            if rate is not None:
                run = timed_run(server, streams, args, args.duration, total_qps=rate)
                report.same_rate, report.same_rate_qps = run.combined, rate
                report.same_rate_cpu = run.server_cpu
                per = run.cpu_per_answer
                print(f"  at {rate:,.0f} q/s: {name:20s} {run.combined.qps:10,.0f} q/s  "
                      f"server CPU {run.cpu_share:.0%}, "
                      f"{(per or 0) * 1e6:.2f} µs per answer  loss {run.combined.loss:.2%}",
                      flush=True)
        finally:
            if start is not None:
                report.rss_bytes = max(report.rss_bytes or 0, server.rss_bytes())
                report.peak_rss_bytes = max(report.peak_rss_bytes or 0,
                                            server.peak_rss_bytes())
                server.stop()


def targets(kind: str, reports: dict[str, ServerReport], workload: Workload) -> list[str]:
    """The issue's targets, each with the figure measured and PASS/FAIL."""
    me = reports.get("shadowdns")
    if me is None or not me.timed:
        why = f" ({me.status})" if me is not None and me.status != "timed" else ""
        lines = [f"Targets: shadowdns was not timed{why}."]
        if workload.dis >= 1_000_000:
            lines.append(f"- {workload.dis:,} DIs: load < 60 s, RSS < 2 GiB → FAIL")
        return lines
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
        if me.first_second:
            first = statistics.median(me.first_second)
            lines.append(f"- the first second counts: median first-second rate {first:,.0f} "
                         f"q/s = {first / me.median_qps():.2f}× the run's rate")
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
    if me.same_rate is not None and me.same_rate_cpu is not None:
        mine = me.cpu_per_answer()
        peers = [r for r in reports.values() if r is not me and r.cpu_per_answer()]
        versus = "; ".join(f"{r.name} {r.cpu_per_answer() * 1e6:.2f} µs"  # type: ignore[operator]
                           for r in peers)
        lines.append(f"- server CPU per answer at {me.same_rate_qps:,.0f} q/s offered: "
                     f"{(mine or 0) * 1e6:.2f} µs" + (f" ({versus})" if versus else ""))
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
        workload = Workload.geo(args.dis, args.statics, args.queries, args.resources, args.mix)
        geoip: Path | None = geodb.resolve_database(args.geoip, workdir)
        assert geoip is not None
        problems = geodb.verify(geoip)
        if problems:
            raise SystemExit("GeoIP database does not fit the benchmark:\n" + "\n".join(problems))
        clients = CLIENTS
    else:
        workload = Workload.static(args.names, args.queries)
        geoip, clients = None, (NO_ECS,)
    streams = query_streams(workload, clients, args.client_mode, workdir, args.dnssec)

    reports = {p.name: ServerReport(p.name, geo_aware=p.geo_aware) for p in peers}
    for p in peers:
        if isinstance(p, ShadowDNS):
            reports[p.name].version = shadowdns_version(p)
        elif p.packages:
            reports[p.name].version = package_version(p.packages[0])
    running: dict[str, ServerProcess] = {}
    try:
        if args.start == "cold":
            print(f"timing cold: {args.rounds} round(s) of {args.duration:g} s, every server "
                  f"started afresh each round and timed from its first answer", flush=True)
            running = time_cold(peers, workload, geoip, clients, streams, args, workdir,
                                reports)
            by_name = {p.name: p for p in peers}

            def restart(name: str) -> bool:
                return launch(by_name[name], running[name], workload, args, reports[name],
                              quiet=True, record_load=False)

            extra_runs(running, streams, args, reports, start=restart)
        else:
            running = start_servers(peers, workload, geoip, args, workdir, reports)
            check_servers(running, peers, workload, clients, reports)
            print(f"timing {', '.join(running) or 'nothing'}: {args.rounds} round(s) of "
                  f"{args.duration:g} s", flush=True)
            time_servers(running, streams, args, reports)
            extra_runs(running, streams, args, reports)
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
    elif workload.mix == "full":
        what = (f"{workload.dis:,} DIs with {workload.resources} primaries, "
                f"{workload.statics:,} static names; queries ~68% DI A, ~8% DI AAAA NODATA, "
                f"~8% static A, ~2% AAAA, 1% each apex MX/NS/SOA/TXT, ~10% NXDOMAIN")
    else:
        what = (f"{workload.dis:,} DIs with {workload.resources} primaries, "
                f"{workload.statics:,} static names, a CNAME; queries "
                f"~70% DI A, ~10% DI AAAA NODATA, ~8% static A, ~2% CNAME, ~10% NXDOMAIN")
    if args.client_mode == "mixed":
        how = (f"one dnsperf process sending all {n} clients' queries ({labels}) in turn, "
               f"`-B -c {args.clients * n} -q {args.outstanding * n}`")
    elif n == 1:
        how = f"one dnsperf process, `-c {args.clients} -q {args.outstanding}`"
    else:
        how = (f"{n} dnsperf processes, one per client ({labels}), each "
               f"`-c {args.clients} -q {args.outstanding}`")
    if args.start == "cold":
        start = ("**cold**: each round starts every server afresh (new state, no warm-up) "
                 "and times it from its first answer; load s is the median time to that "
                 "answer; first s is the rate of the first second (dnsperf -S 1)")
    else:
        start = (f"**warm**: each server started once and warmed up (`--warmup "
                 f"{args.warmup:g}`) until its rate stopped rising — a steady-state figure")
    rate = common_rate(args, reports)
    setup_lines = [
        f"Workload: {what}; {how}; {args.rounds} round(s) × {args.duration:g} s, servers "
        f"alternating; medians shown.",
        f"Start: {start}.",
        f"Server cores {args.server_cpus}, client cores {args.client_cpus} (taskset)"
        + (f"; GeoIP {args.geoip}" if kind == "geo" else "") + ".",
        "Server CPU: the server's CPU time over the run's wall time (100% = one core busy); "
        "client CPU: how busy the dnsperf core(s) were — near 100% means dnsperf is the "
        "ceiling."
        + (f" µs CPU/answer: the server's CPU time per answer with every server offered "
           f"{rate:,.0f} q/s (dnsperf -Q), the fair comparison when dnsperf saturates its "
           f"core at peak." if rate else ""),
    ]
    title = ("shadowdns geo benchmark (ECS)" if kind == "geo"
             else "shadowdns static benchmark")
    ordered = [reports[p.name] for p in peers]
    text = markdown(title, facts, setup_lines, ordered, geo=kind == "geo",
                    cold=args.start == "cold")
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
    sub = parser.add_subparsers(dest="kind", required=True, metavar="{static,geo,churn}")

    def common(p: argparse.ArgumentParser, servers: str, clients: int, outstanding: int,
               rounds: int, start: str) -> None:
        p.add_argument("--start", choices=("cold", "warm"), default=start,
                       help="cold: every round starts each server afresh (new state, no "
                            "warm-up) and times it from its first answer; warm: start once, "
                            f"warm up, then time (default {start})")
        p.add_argument("--cpu-rate", default="auto", metavar="QPS|auto|0",
                       help="offer every server this rate (dnsperf -Q) and report its CPU "
                            "time per answer; auto: 80%% of the slowest server's median "
                            "(default); 0: skip")
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
        p.add_argument("--memory-limit", default="auto", metavar="GiB|auto|0",
                       help="stop a server whose processes hold more memory than this "
                            "(auto: half of the machine's; 0: no limit)")
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
        p.add_argument("--dnssec", action="store_true",
                       help="set DO on every query; time signing with e.g. "
                            "--shadowdns-variant 'signed=--dnssec-keys DIR'")
        p.add_argument("--workdir", default=None,
                       help="where configs and results go (default: a new temp directory)")
        p.add_argument("--keep", action="store_true",
                       help="keep generated configs and data (default: only report and logs)")

    static = sub.add_parser("static", help="static zone, shadowdns alone by default (issue: "
                                           "Authoritative DNS core)")
    static.add_argument("--names", type=int, default=10_000, help="A names in the zone")
    common(static, "shadowdns", clients=10, outstanding=100, rounds=1, start="warm")

    geo = sub.add_parser("geo", help="geo + ECS workload, shadowdns against its peers "
                                     "(issue: Speed and scale)")
    geo.add_argument("--dis", type=int, default=10_000, help="DIs (try 100000, 1000000)")
    geo.add_argument("--statics", type=int, default=1000, help="static A names")
    geo.add_argument("--geoip", default="generated",
                     help="generated (default), geolite2 (bundled GeoLite2-City) or a path")
    geo.add_argument("--resources", choices=RESOURCES, default="distinct",
                     help="distinct: each DI its own five primaries and addresses (default); "
                          "shared: every DI the same five")
    geo.add_argument("--mix", choices=MIXES, default="full",
                     help="full: A, AAAA, MX, NS, SOA, TXT, 10%% NXDOMAIN (default); classic: "
                          "A, AAAA, CNAME, 10%% NXDOMAIN")
    common(geo, "shadowdns,powerdns,knot,gdnsd,nsd", clients=2, outstanding=20, rounds=3,
           start="cold")

    churn.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Stopped by `timeout` or a supervisor: unwind, so the servers started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.kind == "churn":
        return churn.run(args)
    return run(args.kind, args)


if __name__ == "__main__":
    sys.exit(main())
