"""Drive dnsperf: one process per query stream, all pinned to the client core, parsed.

dnsperf 2.10 prints average/min/max/stddev latency only; with `-v` it prints one line per
response with its latency, from which the percentiles are computed. `-v` costs the client
some CPU, so it is used only for the rate-limited (half peak) latency runs, never for peaks.
With `-S 1` it prints the rate of every second, which shows how a server started cold does
in its first second and in its worst one.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Combined", "Result", "Stream", "combine", "run_streams"]


@dataclass(frozen=True, slots=True)
class Stream:
    """One dnsperf process: its label, query file and ECS option (hex payload or None)."""

    label: str
    query_file: Path
    ecs_hex: str | None = None
    edns: bool = True
    binary: bool = False  # query_file holds length-prefixed wire queries (dnsperf -B)
    streams: int = 1  # how many per-subnet streams it stands for (scales -c and -q)
    dnssec: bool = False  # set DO on every query (dnsperf -D)


@dataclass
class Result:
    label: str
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    runtime: float = 0.0
    avg_latency: float = 0.0
    min_latency: float = 0.0
    max_latency: float = 0.0
    stddev_latency: float = 0.0
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    per_second: list[float] = field(default_factory=list)  # q/s of each second (-S 1)
    error: str | None = None


@dataclass
class Combined:
    """All streams of one run together."""

    qps: float
    sent: int
    lost: int
    avg_latency: float
    max_latency: float
    rcodes: dict[str, int]
    latencies: list[float]
    errors: list[str]
    completed: int = 0
    per_second: list[float] = field(default_factory=list)  # summed over the streams

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


_NUM = r"([0-9.]+)"
_PATTERNS = {
    "sent": re.compile(r"Queries sent:\s+(\d+)"),
    "completed": re.compile(r"Queries completed:\s+(\d+)"),
    "lost": re.compile(r"Queries lost:\s+(\d+)"),
    "qps": re.compile(rf"Queries per second:\s+{_NUM}"),
    "runtime": re.compile(rf"Run time \(s\):\s+{_NUM}"),
    "latency": re.compile(rf"Average Latency \(s\):\s+{_NUM} \(min {_NUM}, max {_NUM}\)"),
    "stddev": re.compile(rf"Latency StdDev \(s\):\s+{_NUM}"),
    "rcodes": re.compile(r"Response codes:\s+(.*)"),
}
_VERBOSE = re.compile(r"^> \S+ \S+ \S+ ([0-9.]+)$")
_INTERVAL = re.compile(r"^([0-9]+\.[0-9]+): ([0-9.]+)$")


def parse(label: str, text: str) -> Result:
    """A dnsperf report (and, with -v, its per-response lines) -> Result."""
    result = Result(label)
    m = _PATTERNS["sent"].search(text)
    if m is None:
        result.error = text.strip().splitlines()[-1] if text.strip() else "no output"
        return result
    result.sent = int(m.group(1))
    for key in ("completed", "lost"):
        if (m := _PATTERNS[key].search(text)) is not None:
            setattr(result, key, int(m.group(1)))
    for key in ("qps", "runtime"):
        if (m := _PATTERNS[key].search(text)) is not None:
            setattr(result, key, float(m.group(1)))
    if (m := _PATTERNS["latency"].search(text)) is not None:
        result.avg_latency, result.min_latency, result.max_latency = map(float, m.groups())
    if (m := _PATTERNS["stddev"].search(text)) is not None:
        result.stddev_latency = float(m.group(1))
    if (m := _PATTERNS["rcodes"].search(text)) is not None:
        for part in m.group(1).split(","):
            bits = part.split()
            if len(bits) >= 2 and bits[1].isdigit():
                result.rcodes[bits[0]] = int(bits[1])
    result.latencies = [float(m.group(1)) for line in text.splitlines()
                        if (m := _VERBOSE.match(line)) is not None]
    intervals = [(float(m.group(1)), float(m.group(2))) for line in text.splitlines()
                 if (m := _INTERVAL.match(line)) is not None]
    result.per_second = [rate for _, rate in intervals]
    if intervals and intervals[0][1] < 1.0 and result.completed:
        # dnsperf 2.10 now and then divides the first interval's count by the time since
        # the epoch instead of since its start (it prints e.g. 0.000053 where the next
        # second says 92474): the count is that rate times the timestamp, over ~1 s.
        result.per_second[0] = intervals[0][1] * intervals[0][0]
    return result


def command(stream: Stream, port: int, duration: float, clients: int, outstanding: int,
            qps: float | None, verbose: bool, cpus: str, host: str = "127.0.0.1",
            per_second: bool = False) -> list[str]:
    argv = ["taskset", "-c", cpus, "dnsperf", "-s", host, "-p", str(port),
            "-d", str(stream.query_file), "-l", f"{duration:g}",
            "-c", str(clients * stream.streams), "-T", "1",
            "-q", str(outstanding * stream.streams), "-t", "2"]
    if stream.binary:
        argv += ["-B"]
    elif stream.ecs_hex is not None:
        argv += ["-E", f"8:{stream.ecs_hex}"]
    elif stream.edns:
        argv += ["-e"]
    if stream.dnssec and not stream.binary:
        argv += ["-D"]
    if qps is not None:
        argv += ["-Q", str(max(1, int(qps)))]
    if verbose:
        argv += ["-v"]
    if per_second:
        argv += ["-S", "1"]
    return argv


def run_streams(streams: list[Stream], port: int, duration: float, clients: int,
                outstanding: int, total_qps: float | None = None, verbose: bool = False,
                cpus: str = "1", outdir: Path | None = None,
                per_second: bool = False) -> list[Result]:
    """Run every stream at once against 127.0.0.1:`port`; `total_qps` is split evenly.

    Output goes to files (in tmpfs by default), not pipes: with -v a pipe left unread while
    another process is waited for would fill up and stall that dnsperf mid-run.
    """
    per_stream = None if total_qps is None else total_qps / len(streams)
    if outdir is None and os.access("/dev/shm", os.W_OK):
        outdir = Path("/dev/shm")  # -v writes a line per response: keep that off the disk
    with tempfile.TemporaryDirectory(dir=outdir, prefix="dnsperf-") as tmp:
        outputs = [Path(tmp) / f"{i}-{s.label}.out" for i, s in enumerate(streams)]
        procs = []
        for stream, out_path in zip(streams, outputs, strict=True):
            with out_path.open("w") as out:
                procs.append(subprocess.Popen(
                    command(stream, port, duration, clients, outstanding, per_stream, verbose,
                            cpus, per_second=per_second),
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        for proc in procs:
            try:
                proc.wait(timeout=duration + 60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        results = [parse(s.label, p.read_text(errors="replace"))
                   for s, p in zip(streams, outputs, strict=True)]
    for r in results:  # an interval printed while waiting for the last replies is not one
        del r.per_second[max(1, int(duration)):]
    return results


def combine(results: list[Result]) -> Combined:
    completed = sum(r.completed for r in results)
    rcodes: dict[str, int] = {}
    for r in results:
        for code, n in r.rcodes.items():
            rcodes[code] = rcodes.get(code, 0) + n
    return Combined(
        qps=sum(r.qps for r in results),
        sent=sum(r.sent for r in results),
        lost=sum(r.lost for r in results),
        avg_latency=(sum(r.avg_latency * r.completed for r in results) / completed
                     if completed else 0.0),
        max_latency=max((r.max_latency for r in results), default=0.0),
        rcodes=rcodes,
        latencies=[x for r in results for x in r.latencies],
        errors=[f"{r.label}: {r.error}" for r in results if r.error],
        completed=completed,
        # second k of every stream together (the streams start within milliseconds)
        per_second=[sum(r.per_second[k] for r in results if k < len(r.per_second))
                    for k in range(max((len(r.per_second) for r in results), default=0))],
    )
