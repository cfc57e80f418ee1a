"""Does shadowdns keep its rate, and keep answering, while its control plane works?

    python -m bench.run churn [--dis 10000] [--duration 30] [--rounds 3] [...]

One `shadowdns serve` as users start it (control plane on, REST API on, a fresh state) on
the geo workload (each DI its own primaries, every query type), pinned to the server core,
with dnsperf unthrottled from the client core, in alternating windows of `--duration`
seconds: *steady* (nothing is changed) and *churn*, during which

- every `--generation-every` (10) s the allocator writes a new generation: `pins:` in
  `<zones>/allocator.yaml`, each starting at its own time, lend two standby resources to
  two DIs for a region — a real generation (numbered, audited, with its TTL plan, warm-up
  and readiness) — and the benchmark releases the shadows of an earlier one through the
  REST API (`DELETE /api/v1/allocations/{id}`), as an operator would;
- every `--ttl-every` (5) s a TTL cut starts: the allocator's TTL plan shortens a (DI,
  region)'s TTL from TTL seconds before its answer changes; the two shadows of a
  generation warm up for TTL and TTL + 5 s, so their cuts start 5 s apart;
- every `--flap-every` (3) s a TCP port the benchmark opens and closes takes the health
  check (`interval: 1, rise: 1, fall: 1`) of `--flap-resources` resources down or up;
- with `--edit-every` S, every S seconds an operator's edit of one DI (its TTL) through
  the REST API (`PUT /api/v1/zones/bench.test./dis/<name>`): the policy file is written
  and reloaded, and only that DI's answers are compiled again.

The allocator reads its settings once, at start, and `pins:` hold absolute times; so the
server is started once untimed to learn its load time, then afresh with a schedule that
begins after it has loaded. `allocator.yaml` keeps the default window (5 min): a pin is
taken up at the allocator's next run, and every health change wakes it, so within one
flap interval (`--allocator-window` sets a shorter window, which makes it run that often
in steady windows too). Nothing in the server is changed for the benchmark.

A separate process (bench/gap_probe.py) asks one query every `--probe-interval` (1 ms)
from the client core throughout; the figure is the longest time without a reply inside
each window (and, to tell a busy client core from a silent server, the longest time the
probe itself did not send). The targets: churn q/s ≥ 0.9× steady, longest gap < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import gap_probe, geodb
from bench.check import check_server
from bench.geodb import CLIENTS
from bench.peers import Setup, ShadowDNS
from bench.peers.shadowdns import policy_lines, resource_id, write_policy
from bench.report import machine_facts
from bench.servers import ServerProcess, cpu_count, free_port
from bench.workload import LOCATIONS, MIXES, RESOURCES, Workload, wire_query
from shadowdns.app import FLUSH_DELAY, ServeConfig

__all__ = ["add_parser", "run"]

PINNED_TTL = 10  # TTL of the DIs that get shadows: a cut lasts this long
TTL_FLOOR = 2  # the cut's TTL (allocator.yaml ttl_floor)
REGIONS = tuple(LOCATIONS)
STANDBY = {"sb-a": "203.0.113.1", "sb-b": "203.0.113.2"}
_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")
EVENTS = {  # server log line -> what it counts
    "allocator: generation": "generations",
    "TTL plan:": "ttl changes",
    "live state changed": "live changes",
    "health: ": "health transitions",
}


# --- the schedule ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    kind: str  # "steady" or "churn"
    start: float  # epoch seconds
    end: float


@dataclass(frozen=True, slots=True)
class PinPlan:
    di: int
    resource: str
    region: str
    start: float
    until: float
    release_at: float


@dataclass(frozen=True, slots=True)
class Schedule:
    windows: tuple[Window, ...]
    pins: tuple[PinPlan, ...]
    flaps: tuple[tuple[float, bool], ...]  # (when, port open)
    edits: tuple[tuple[float, int], ...] = ()  # (when, DI number): its TTL edited (API)

    def allocator_yaml(self, window: float | None = None) -> str:
        lines = ["allocator:", "  mode: active", f"  ttl_floor: {TTL_FLOOR}"]
        if window is not None:
            lines.append(f"  window: {window:g}")
        lines.append("  pins:")
        for p in self.pins:  # times in epoch seconds
            lines.append(f"    - {{di: di{p.di}.bench.test., resource: {p.resource}, "
                         f"region: {p.region}, start: {p.start:.0f}, until: {p.until:.0f}}}")
        return "\n".join(lines) + "\n"


def plan_schedule(start: float, args: argparse.Namespace, dis: int) -> Schedule:
    """Steady and churn windows in turn from `start`; the churn inside each churn window.

    A generation at T (taken up by the allocator within `lag`: the next flap wakes it) adds
    a shadow ready PINNED_TTL later (its TTL cut starts at once) and one ready PINNED_TTL +
    ttl_every later (cut ttl_every later); the API releases each 3 s after it is due ready,
    and its pin ends 1 s after that, so the DELETE is what ends a shadow (a pin that ended
    first ended its shadow itself, and the DELETE found nothing: 10 of 16 did). An allocator
    run in that second may make the shadow again; the first run after the pin ends
    releases it. Generations start only while that all fits in the window, so a steady
    window sees none of it (a health flap may settle up to one check interval into it)."""
    d = args.duration
    gen, ttl_every, flap = args.generation_every, args.ttl_every, args.flap_every
    warmups = {"sb-a": float(PINNED_TTL), "sb-b": float(PINNED_TTL + ttl_every)}
    lag = args.allocator_window or flap
    settle = max(warmups.values()) + lag + 5.0
    windows: list[Window] = []
    pins: list[PinPlan] = []
    flaps: list[tuple[float, bool]] = []
    edits: list[tuple[float, int]] = []
    first_pinned = args.flap_resources + 1
    stride = max(1, (dis - first_pinned) // max(1, 2 * args.rounds * int(d // gen + 1)))
    k = 0
    for r in range(args.rounds):
        s0 = start + 2 * r * d
        c0 = s0 + d
        windows += [Window("steady", s0, c0), Window("churn", c0, c0 + d)]
        t = c0
        while t + settle <= c0 + d:
            for resource, warmup in warmups.items():
                region = REGIONS[k % len(REGIONS)]
                di = first_pinned + (k * stride) % max(1, dis - first_pinned)
                pins.append(PinPlan(di, resource, region, t, t + warmup + lag + 4.0,
                                    t + warmup + lag + 3.0))
                k += 1
            t += gen
        t, up = c0 + flap, False
        while t + flap <= c0 + d:
            flaps.append((t, up))
            up = not up
            t += flap
        if not up:  # leave the port open (resources up) for the steady window
            flaps.append((t, True))
        if args.edit_every:
            t = c0 + args.edit_every / 2
            while t + 1.0 <= c0 + d:
                edits.append((t, first_pinned + (len(edits) * 7919) % max(1, dis - first_pinned)))
                t += args.edit_every
    return Schedule(tuple(windows), tuple(pins), tuple(flaps), tuple(edits))


# --- the moving parts -----------------------------------------------------------------------


class FlapPort:
    """A TCP port on 127.0.0.1 that is accepting (health checks pass) or closed (they fail)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def set(self, up: bool) -> None:
        with self._lock:
            if up and self._sock is None:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                for attempt in range(20):
                    try:  # the last listener's kernel socket can linger a moment (EADDRINUSE)
                        sock.bind(("127.0.0.1", self.port))
                        break
                    except OSError:
                        if attempt == 19:
                            sock.close()
                            raise
                        time.sleep(0.05)
                sock.listen(64)
                sock.settimeout(0.2)
                self._sock = sock
                threading.Thread(target=self._accept, args=(sock,), daemon=True).start()
            elif not up and self._sock is not None:
                self._sock.close()
                self._sock = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by set(False)
                return
            conn.close()


def api_call(base: str, token: str, method: str, path: str) -> Any:
    from shadowdns.api.client import ApiClient

    with ApiClient(base, token, timeout=10.0) as client:
        return client.send(method, path) if method != "GET" else client.get(path)


class Driver(threading.Thread):
    """Carries out the benchmark's side of the churn: flaps, and API releases of pins."""

    def __init__(self, schedule: Schedule, flap: FlapPort, api: str, token: str) -> None:
        super().__init__(daemon=True, name="churn-driver")
        actions: list[tuple[float, str, Callable[[], None]]] = []
        for when, up in schedule.flaps:
            actions.append((when, "flap", lambda up=up: flap.set(up)))
        for p in schedule.pins:
            actions.append((p.release_at, "release",
                            lambda p=p: self._release(p)))
        for when, di in schedule.edits:
            actions.append((when, "edit", lambda di=di: self._edit(di)))
        self.actions = sorted(actions, key=lambda a: a[0])
        self.api, self.token = api, token
        # (planned, done, what, outcome): an API call's time is `done - planned`
        self.done: list[tuple[float, float, str, str]] = []
        self.stop = threading.Event()

    def _release(self, p: PinPlan) -> None:
        name = f"di{p.di}.bench.test."
        rows = api_call(self.api, self.token, "GET", f"/api/v1/allocations?di={name}")
        ids = [a["id"] for a in rows if a["resource"] == p.resource and a["region"] == p.region
               and a["state"] != "released"]
        for allocation in ids:
            api_call(self.api, self.token, "DELETE", f"/api/v1/allocations/{allocation}")
        if not ids:
            raise RuntimeError(f"no allocation of {name} {p.resource} {p.region} to release")

    def _edit(self, di: int) -> None:
        """An operator's edit of one DI through the API: its TTL, up or down by one."""
        from shadowdns.api.client import ApiClient

        path = f"/api/v1/zones/bench.test./dis/di{di}"
        with ApiClient(self.api, self.token, timeout=10.0) as client:
            config = dict(client.get(path)["config"])
            config["ttl"] = int(config.get("ttl", 30)) + (1 if di % 2 else -1)
            client.send("PUT", path, config)

    def run(self) -> None:
        for when, what, action in self.actions:
            if self.stop.wait(max(0.0, when - time.time())):
                return
            try:
                action()
                self.done.append((when, time.time(), what, "ok"))
            except Exception as exc:  # reported, never fatal
                self.done.append((when, time.time(), what, f"failed: {exc}"))


def log_events(log: Path, since: float) -> list[tuple[float, str]]:
    """(epoch seconds, kind) of every server log line of EVENTS after `since`."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if m is None:
            continue
        when = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        if when < since:
            continue
        for needle, kind in EVENTS.items():
            if needle in line:
                out.append((when, kind))
    return out


def demand_flushes(window: Window) -> int:
    """How many of the server's demand flushes (just after each minute) fall in `window`:
    each writes a row per (DI, region) with queries, the costliest regular task beside the
    query path, so steady and churn windows must hold as many of them."""
    interval = ServeConfig.__dataclass_fields__["flush_interval"].default
    assert isinstance(interval, float)
    first = math.ceil((window.start - FLUSH_DELAY) / interval) * interval + FLUSH_DELAY
    return max(0, math.ceil((window.end - first) / interval))


# --- one run ------------------------------------------------------------------------------


@dataclass
class WindowResult:
    window: Window
    qps: float = 0.0
    worst_second: float = 0.0
    loss: float = 0.0
    max_latency: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    gap: float = 0.0  # longest time without a reply (s)
    gap_at: float = 0.0  # when it ended, seconds into the window
    send_gap: float = 0.0  # longest time the probe did not send
    probe_replies: int = 0
    events: dict[str, int] = field(default_factory=dict)


def probe_queries(pinned: list[int], flapped: int) -> list[str]:
    """Wire queries (hex) the gap probe sends in turn: DIs the churn touches, from each
    client stream, and names nothing touches."""
    names = [f"di{i}.bench.test." for i in [*pinned[:8], *range(flapped)]]
    names += ["s0.bench.test.", "nx1.bench.test.", "bench.test."]
    out = []
    for i, name in enumerate(names):
        client = CLIENTS[i % len(CLIENTS)]
        qtype = "SOA" if name == "bench.test." else "A"
        out.append(wire_query(name, qtype, client.ecs_payload()).hex())
    return out


def token_for(peer: ShadowDNS, state: Path) -> str:
    out = subprocess.run([*peer.command, "token", "create", "--role", "operator",
                          "--name", "churn-bench", "--state", str(state), "--create", "--json"],
                         capture_output=True, text=True, timeout=120, check=True)
    return str(json.loads(out.stdout)["token"])


def run(args: argparse.Namespace) -> int:
    from bench.run import query_streams, timed_run  # here: bench.run imports this module

    for tool in ("dnsperf", "dig", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found; install dnsperf and bind9-dnsutils")
    shortest = (args.generation_every + PINNED_TTL + args.ttl_every + 3
                + (args.allocator_window or args.flap_every))
    if args.duration < shortest:
        raise SystemExit(f"--duration must be at least {shortest:g} s")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shadowdns-bench-churn-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory: {workdir}", flush=True)
    # The driver and probe stay off the server's core: only the server runs there.
    client_cpus = set()
    for part in args.client_cpus.split(","):
        lo, _, hi = part.partition("-")
        client_cpus.update(range(int(lo), int(hi or lo) + 1))
    os.sched_setaffinity(0, client_cpus)

    workload = Workload.geo(args.dis, args.statics, args.queries, args.resources, args.mix)
    geoip = geodb.resolve_database(args.geoip, workdir)
    problems = geodb.verify(geoip)
    if problems:
        raise SystemExit("GeoIP database does not fit the benchmark:\n" + "\n".join(problems))
    streams = query_streams(workload, CLIENTS, args.client_mode, workdir)

    api_port, flap = free_port(), FlapPort()
    peer = ShadowDNS(args.shadowdns,
                     extra_args=f"--api 127.0.0.1:{api_port} {args.server_args}".strip())
    if (reason := peer.missing()) is not None:
        raise SystemExit(f"shadowdns cannot run: {reason}")
    pdir = workdir / "shadowdns"
    pdir.mkdir(parents=True, exist_ok=True)
    setup = Setup(workload, pdir, free_port(), geoip, cpu_count(args.server_cpus))
    argv = peer.configure(setup)
    argv[argv.index("--log-level") + 1] = "INFO"  # the events are counted from the log
    zones = pdir / "zones"
    check = (f", check: {{type: tcp, host: 127.0.0.1, port: {flap.port}, interval: 1, "
             f"timeout: 0.5, rise: 1, fall: 1}}")
    flapped = {resource_id(workload, i, "eu"): check for i in range(args.flap_resources)}
    standby = [f"  {rid}: {{address: {address}, location: def, role: standby, "
               f"warmup: {PINNED_TTL if rid == 'sb-a' else PINNED_TTL + args.ttl_every}}}"
               for rid, address in STANDBY.items()]
    server = ServerProcess("shadowdns", argv, setup.port, args.server_cpus, pdir)
    flap.set(True)

    # 1. An untimed start, to learn how long this server takes to load.
    print(f"- starting once untimed: {' '.join(argv)}", flush=True)
    write_policy(zones / "bench.test.policy.yaml", policy_lines(workload, flapped, standby))
    server.start()
    if not server.wait_ready("di0.bench.test.", args.load_timeout):
        raise SystemExit(f"shadowdns did not start:\n{server.log_tail()}")
    load = server.load_seconds or 0.0
    server.stop()
    print(f"  first answer after {load:.2f} s", flush=True)

    # 2. The schedule, which must begin after the real start has loaded (which DIs get
    # pins does not depend on when).
    pinned_ttls = {p.di: PINNED_TTL for p in plan_schedule(0.0, args, workload.dis).pins}
    write_policy(zones / "bench.test.policy.yaml",
                 policy_lines(workload, flapped, standby, pinned_ttls))
    peer.fresh_state(pdir)
    token = token_for(peer, pdir / "state.sqlite")
    start = float(int(time.time() + 1.5 * load + args.lead) + 1)
    schedule = plan_schedule(start, args, workload.dis)
    (zones / "allocator.yaml").write_text(schedule.allocator_yaml(args.allocator_window))
    end = schedule.windows[-1].end

    results: list[WindowResult] = []
    driver = Driver(schedule, flap, f"http://127.0.0.1:{api_port}", token)
    trace_path = workdir / "gaps.bin"
    probe: subprocess.Popen[bytes] | None = None
    try:
        # 3. The real start, then the windows.
        server.start()
        if not server.wait_ready("di0.bench.test.", args.load_timeout):
            raise SystemExit(f"shadowdns did not start:\n{server.log_tail()}")
        print(f"- serving after {server.load_seconds:.2f} s; windows start in "
              f"{start - time.time():.1f} s", flush=True)
        if start - time.time() < 1:
            raise SystemExit("the server loaded after the schedule began: raise --lead")
        # Right after start a probe of the flapping resource may still be failing (its
        # first check can time out while the server starts up): ask until all is right.
        for _ in range(10):
            bad, _ = check_server(setup.port, workload, CLIENTS, True, pdir)
            if not bad or time.time() > start - 2:
                break
            time.sleep(1.0)
        if bad:
            raise SystemExit("wrong answers before the churn:\n" + "\n".join(bad[:8]))
        probe = subprocess.Popen(
            ["taskset", "-c", args.client_cpus, sys.executable, "-m", "bench.gap_probe",
             str(setup.port), "--seconds", f"{end - time.time() + 1:.1f}", "--out",
             str(trace_path), "--interval", str(args.probe_interval),
             *[a for q in probe_queries([p.di for p in schedule.pins], args.flap_resources)
               for a in ("--query", q)]],
            cwd=Path(__file__).resolve().parent.parent)
        driver.start()
        for window in schedule.windows:
            time.sleep(max(0.0, window.start - time.time()))
            run_ = timed_run(server, streams, args, window.end - time.time(),
                             per_second=True)
            c = run_.combined
            result = WindowResult(window, c.qps, min(c.per_second, default=0.0), c.loss,
                                  c.max_latency, run_.cpu_share, run_.client)
            results.append(result)
            print(f"  {window.kind:6s} {c.qps:10,.0f} q/s  worst second "
                  f"{result.worst_second:,.0f}  max latency {c.max_latency * 1000:.1f} ms  "
                  f"loss {c.loss:.2%}  server CPU {run_.cpu_share:.0%}", flush=True)
        rss, peak = server.rss_bytes(), server.peak_rss_bytes()
        if probe.wait(timeout=60) != 0:
            raise SystemExit("the gap probe failed")
    finally:
        driver.stop.set()
        if probe is not None and probe.poll() is None:
            probe.kill()
        server.stop()
        flap.set(False)

    # 4. Gaps and events, window by window.
    trace = gap_probe.read(trace_path)
    offset = time.time() - time.monotonic()  # the probe's clock is CLOCK_MONOTONIC
    events = log_events(server.log_path, schedule.windows[0].start)
    for r in results:
        lo, hi = r.window.start - offset, r.window.end - offset
        r.gap, at = gap_probe.longest_gap(trace.replies, lo, hi)
        r.gap_at = at - lo
        r.send_gap, _ = gap_probe.longest_gap(trace.sends, lo, hi)
        r.probe_replies = sum(1 for t in trace.replies if lo <= t < hi)
        for when, kind in events:
            if r.window.start <= when < r.window.end:
                r.events[kind] = r.events.get(kind, 0) + 1
        flushes = demand_flushes(r.window)
        if flushes:
            r.events["demand flushes"] = flushes
    failures = [f"{time.strftime('%H:%M:%S', time.localtime(w))} {what}: {outcome}"
                for w, _, what, outcome in driver.done if outcome != "ok"]
    releases = [done - planned for planned, done, what, _ in driver.done if what == "release"]
    generations = sorted(when for when, kind in events if kind == "generations")
    lags = [next((g - t for g in generations if g >= t), math.inf)
            for t in sorted({p.start for p in schedule.pins})]
    text = report(args, workload, results, rss, peak, failures, load, releases, lags)
    print()
    print(text)
    (workdir / "report.md").write_text(text)
    (workdir / "results.json").write_text(json.dumps(
        {"facts": machine_facts(), "args": vars(args),
         "windows": [asdict(r) for r in results],
         "driver": driver.done}, default=str, indent=1))
    print(f"(report.md, results.json, the server log and the probe trace in {workdir})")
    if not args.keep:
        for path in (workdir / "queries.txt", workdir / "queries.bin"):
            path.unlink(missing_ok=True)
    return 0


def report(args: argparse.Namespace, workload: Workload, results: list[WindowResult],
           rss: int, peak: int, failures: list[str], load: float,
           releases: list[float], lags: list[float]) -> str:
    facts = machine_facts()
    steady = [r for r in results if r.window.kind == "steady"]
    churn = [r for r in results if r.window.kind == "churn"]
    out = [f"## shadowdns under churn — {facts['date']}", "",
           f"Machine: {facts['cpu']}, nproc {facts['nproc']}, Linux {facts['kernel']}, "
           f"Python {facts['python']}, dnsperf {facts['dnsperf']}.",
           f"Workload: {workload.dis:,} DIs ({workload.resources} resources), {workload.mix} "
           f"query mix, 6 client streams ({args.client_mode}); `shadowdns serve` with its "
           f"control plane and API, first answer after {load:.2f} s; server core "
           f"{args.server_cpus}, dnsperf and the probe on {args.client_cpus}.",
           f"Windows of {args.duration:g} s, steady and churn in turn, {args.rounds} of each. "
           f"Churn: a generation every {args.generation_every:g} s (two pinned shadows, "
           f"released through the API), a TTL cut every {args.ttl_every:g} s, a health flap "
           f"of {args.flap_resources} resource(s) every {args.flap_every:g} s"
           + (f", a DI edit through the API every {args.edit_every:g} s"
              if args.edit_every else "") + ". Gap probe: one "
           f"query every {args.probe_interval * 1000:g} ms.", "",
           "| window | q/s | worst second | loss | dnsperf max ms | longest gap ms (at s) "
           "| probe send gap ms | server CPU | client CPU | events |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ev = ", ".join(f"{n} {k}" for k, n in sorted(r.events.items())) or "–"
        out.append(f"| {r.window.kind} | {r.qps:,.0f} | {r.worst_second:,.0f} | "
                   f"{r.loss:.2%} | {r.max_latency * 1000:.1f} | {r.gap * 1000:.1f} "
                   f"({r.gap_at:.1f}) | {r.send_gap * 1000:.1f} | {r.server_cpu:.0%} | "
                   f"{r.client_cpu:.0%} | {ev} |")
    out.append("")
    out.append(f"RSS {rss / 2**20:,.0f} MiB (peak {peak / 2**20:,.0f}).")
    if lags:
        taken = [x for x in lags if math.isfinite(x)]
        out.append(f"Generations: {len(taken)} of {len(lags)} scheduled were written, each "
                   f"{statistics.median(taken) if taken else math.nan:.1f} s (median), at most "
                   f"{max(taken, default=math.nan):.1f} s after its pins began.")
    if releases:
        out.append(f"API releases (GET the DI's allocations, DELETE each, from the client "
                   f"core): {len(releases)}, median {statistics.median(releases):.2f} s, "
                   f"longest {max(releases):.2f} s.")
    if failures:
        out.append("Driver actions that failed: " + "; ".join(failures[:5]) + ".")
    if steady and churn:
        s_qps = statistics.median(r.qps for r in steady)
        c_qps = statistics.median(r.qps for r in churn)
        gap = max(r.gap for r in churn)
        s_gap = max(r.gap for r in steady)
        send = max(r.send_gap for r in churn)
        ratio = c_qps / s_qps if s_qps else 0.0
        out += ["", "Targets:",
                f"- q/s during churn ≥ 0.9× steady: {c_qps:,.0f} / {s_qps:,.0f} = "
                f"{ratio:.2f}× → {'PASS' if ratio >= 0.9 else 'FAIL'}",
                f"- longest gap between answers during churn < 50 ms: {gap * 1000:.1f} ms "
                f"(steady windows: {s_gap * 1000:.1f} ms; the probe's own longest pause "
                f"in sending: {send * 1000:.1f} ms) → {'PASS' if gap < 0.05 else 'FAIL'}"]
    return "\n".join(out) + "\n"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("churn", help="shadowdns under load while its control plane changes "
                                     "allocations, TTLs and health (bench/churn.py)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dis", type=int, default=10_000)
    p.add_argument("--statics", type=int, default=1000)
    p.add_argument("--resources", choices=RESOURCES, default="distinct")
    p.add_argument("--mix", choices=MIXES, default="full")
    p.add_argument("--queries", type=int, default=None)
    p.add_argument("--geoip", default="generated")
    p.add_argument("--duration", type=float, default=60.0,
                   help="seconds per window; whole minutes give every window the same "
                        "number of the server's once-a-minute demand flushes (default 60)")
    p.add_argument("--rounds", type=int, default=3, help="steady + churn window pairs")
    p.add_argument("--generation-every", type=float, default=10.0)
    p.add_argument("--ttl-every", type=float, default=5.0)
    p.add_argument("--flap-every", type=float, default=3.0)
    p.add_argument("--edit-every", type=float, default=0.0, metavar="SECONDS",
                   help="in churn windows, edit one DI's TTL through the API this often "
                        "(0: never)")
    p.add_argument("--flap-resources", type=int, default=1,
                   help="resources (the eu primaries of di0, di1, ...) whose TCP check flaps")
    p.add_argument("--probe-interval", type=float, default=0.001)
    p.add_argument("--allocator-window", type=float, default=None, metavar="SECONDS",
                   help="write this allocation window into allocator.yaml (default: the "
                        "server's own, 5 min; pins are taken up when a flap wakes it)")
    p.add_argument("--lead", type=float, default=10.0,
                   help="seconds between the server's expected first answer and the first "
                        "window")
    p.add_argument("--clients", type=int, default=2, help="dnsperf -c per stream")
    p.add_argument("--outstanding", type=int, default=20, help="dnsperf -q per stream")
    p.add_argument("--client-mode", choices=("streams", "mixed"), default="mixed")
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--load-timeout", type=float, default=180.0)
    p.add_argument("--shadowdns", default=None, metavar="CMD")
    p.add_argument("--workdir", default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--server-args", default="", metavar="ARGS",
                   help="more `shadowdns serve` options, e.g. '--stall-trace 20' to log what "
                   "held the event loop in each gap")
