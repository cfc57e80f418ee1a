"""The benchmark's output: machine facts, one markdown table, per-round figures, targets."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from bench.dnsperf import Combined

__all__ = ["ServerReport", "machine_facts", "markdown", "package_version"]


@dataclass
class ServerReport:
    """Everything measured about one server in one benchmark run."""

    name: str
    geo_aware: bool = True
    status: str = "timed"  # or why it was not timed
    notes: list[str] = field(default_factory=list)  # tolerated differences in its answers
    version: str = ""
    load_seconds: float | None = None
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    rounds: list[Combined] = field(default_factory=list)
    cpu_share: list[float] = field(default_factory=list)  # server CPU per round, 1.0 = 1 core
    client_share: list[float] = field(default_factory=list)  # client cores busy per round
    ratios: list[float] = field(default_factory=list)  # q/s over PowerDNS's, same round
    warmup: list[float] = field(default_factory=list)  # q/s of each untimed warm-up run
    half: Combined | None = None
    half_rate: float | None = None
    load_rounds: list[float] = field(default_factory=list)  # cold: every start's first answer
    same_rate: Combined | None = None  # the run at the rate offered to every server
    same_rate_qps: float | None = None
    same_rate_cpu: float | None = None  # server CPU seconds during that run

    def cpu_per_answer(self) -> float | None:
        """Seconds of server CPU per answer at the common offered rate."""
        if self.same_rate is None or self.same_rate_cpu is None or not self.same_rate.completed:
            return None
        return self.same_rate_cpu / self.same_rate.completed

    @property
    def first_second(self) -> list[float]:
        """The rate of each round's first second (cold runs record every second)."""
        return [r.per_second[0] for r in self.rounds if r.per_second]

    def to_json(self) -> dict[str, object]:
        """Plain data for results.json: per-response latencies become percentiles."""
        data = asdict(self)
        runs = [*data["rounds"], data["half"], data["same_rate"]]
        for run, combined in zip(runs, [*self.rounds, self.half, self.same_rate], strict=True):
            if run is not None and combined is not None:
                latencies = run.pop("latencies")
                if latencies:
                    run["latency_percentiles"] = {
                        f"p{p}": combined.percentile(p) for p in (50, 90, 99, 99.9)}
        return data

    @property
    def timed(self) -> bool:
        return self.status == "timed" and bool(self.rounds)

    def median_qps(self) -> float:
        return statistics.median(r.qps for r in self.rounds) if self.rounds else 0.0

    def median_round(self) -> Combined | None:
        if not self.rounds:
            return None
        ordered = sorted(self.rounds, key=lambda r: r.qps)
        return ordered[(len(ordered) - 1) // 2]


def package_version(package: str) -> str:
    """The installed Debian package version, or empty."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                             capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def machine_facts() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "dnsperf": package_version("dnsperf"),
    }


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.3f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.2f}%"


def _rss(s: ServerReport) -> str:
    if s.rss_bytes is None:
        return "–"
    peak = f" ({s.peak_rss_bytes / 2**20:,.0f})" if s.peak_rss_bytes else ""
    return f"{s.rss_bytes / 2**20:,.0f}{peak}"


def markdown(title: str, facts: dict[str, str], setup_lines: list[str],
             servers: list[ServerReport], geo: bool, cold: bool = False) -> str:
    out = [f"## {title} — {facts['date']}", ""]
    out.append(f"Machine: {facts['cpu']}, nproc {facts['nproc']}, Linux {facts['kernel']}, "
               f"Python {facts['python']}, dnsperf {facts['dnsperf']}.")
    out += setup_lines
    out.append("")
    head = ["server", "version", "answers", "load s", "RSS MiB (peak)", "q/s (median)"]
    if cold:
        head.append("first s q/s")
    if geo:
        head.append("× PowerDNS")
    head += ["avg ms", "loss", "server CPU", "client CPU",
             "q/s @half", "avg ms @half", "p99 ms @half", "loss @half"]
    rate = next((s.same_rate_qps for s in servers if s.same_rate_qps), None)
    if rate:
        head.append(f"µs CPU/answer @{rate:,.0f}")
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    for s in servers:
        m = s.median_round()
        answers = ("ok" if s.geo_aware or not geo else "ok (static)") if s.timed else s.status
        if s.timed and s.notes:
            answers += "*"
        row = [s.name, s.version or "–", answers,
               "–" if s.load_seconds is None else f"{s.load_seconds:.2f}",
               _rss(s),
               f"{s.median_qps():,.0f}" if s.timed else "–"]
        if cold:
            row.append(f"{statistics.median(s.first_second):,.0f}"
                       if s.timed and s.first_second else "–")
        if geo:
            row.append(f"{statistics.median(s.ratios):.2f}" if s.ratios else "–")
        row += [
            _ms(m.avg_latency) if m else "–",
            _pct(m.loss) if m else "–",
            f"{statistics.median(s.cpu_share) * 100:.0f}%" if s.cpu_share else "–",
            f"{statistics.median(s.client_share) * 100:.0f}%" if s.client_share else "–",
            f"{s.half.qps:,.0f}" if s.half else "–",
            _ms(s.half.avg_latency) if s.half else "–",
            _ms(s.half.percentile(99)) if s.half else "–",
            _pct(s.half.loss) if s.half else "–",
        ]
        if rate:
            per = s.cpu_per_answer()
            row.append("–" if per is None else f"{per * 1e6:.2f}")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    rounds = [s for s in servers if s.rounds]
    if rounds:
        out.append("Per round q/s (loss): " + "; ".join(
            f"{s.name} " + ", ".join(f"{r.qps:,.0f} ({r.loss * 100:.2f}%)" for r in s.rounds)
            for s in rounds) + ".")
    seconds = [s for s in servers if any(r.per_second for r in s.rounds)]
    if seconds:
        out.append("Per second q/s of the first round (from the first answer on): " + "; ".join(
            f"{s.name} " + " ".join(f"{q / 1000:,.0f}k" for q in s.rounds[0].per_second)
            for s in seconds) + ".")
    loads = [s for s in servers if len(s.load_rounds) > 1]
    if loads:
        out.append("First answer after (s), per round: " + "; ".join(
            f"{s.name} " + ", ".join(f"{x:.2f}" for x in s.load_rounds) for s in loads) + ".")
    warm = [s for s in servers if len(s.warmup) > 1]
    if warm:
        out.append("Warm-up q/s (cold start first): " + "; ".join(
            f"{s.name} " + " → ".join(f"{q:,.0f}" for q in s.warmup) for s in warm) + ".")
    for s in servers:
        if s.timed and s.notes:
            out.append(f"\\* {s.name}: {'; '.join(s.notes)}.")
    for s in servers:
        errors = sorted({e for r in s.rounds for e in r.errors})
        if errors:
            out.append(f"{s.name} dnsperf errors: {'; '.join(errors[:3])}")
    return "\n".join(out) + "\n"
