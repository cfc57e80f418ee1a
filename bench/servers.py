"""Run a DNS server under test: start it pinned, wait for its first answer, watch, stop.

A server is started in its own session (so it and any processes it forks can be stopped
together) under `taskset`, with its output in a log file in its work directory. Its load time
is the time from the start to the first correct-looking answer; RSS and CPU time are summed
over the process and its descendants, read from /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerProcess", "cores_busy", "cpu_count", "dns_query", "free_port"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_query(port: int, qname: str, qtype: int = 1, timeout: float = 0.5,
              host: str = "127.0.0.1") -> tuple[int, int] | None:
    """Send one query; return (rcode, answer count) or None on timeout or refusal."""
    qid = int.from_bytes(os.urandom(2), "big")
    packet = struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + _encode_name(qname)
    packet += struct.pack("!HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(packet, (host, port))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = sock.recv(65535)
                if len(data) >= 12 and int.from_bytes(data[:2], "big") == qid:
                    flags, _, ancount = struct.unpack("!HHH", data[2:8])
                    return flags & 0xF, ancount
        except OSError:
            return None
    return None


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


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


@dataclass
class ServerProcess:
    """One server under test, started from `argv` pinned to `cpus`."""

    name: str
    argv: list[str]
    port: int
    cpus: str
    workdir: Path
    env: dict[str, str] | None = None
    # Stop it (SIGKILL) once its processes hold more than this many bytes: a server that
    # cannot fit a million DIs must fail alone, not take a shared machine down with it.
    memory_limit: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    load_seconds: float | None = None
    killed: str | None = None  # why the memory watch stopped it
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")  # every start of this server, one after another
        env = {**os.environ, **(self.env or {})}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            ["taskset", "-c", self.cpus, *self.argv],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.workdir, env=env, start_new_session=True,
        )
        log.close()
        self.killed = None
        if self.memory_limit:
            threading.Thread(target=self._watch_memory, args=(self.proc, self.memory_limit),
                             daemon=True, name=f"{self.name}-memory").start()

    def _watch_memory(self, proc: subprocess.Popen[bytes], limit: int) -> None:
        while proc.poll() is None:
            rss = self.rss_bytes()
            if rss > limit:
                self.killed = (f"stopped by the benchmark {time.monotonic() - self.started_at:.0f}"
                               f" s after start: RSS {rss / 2**30:.1f} GiB over the "
                               f"{limit / 2**30:.1f} GiB limit (--memory-limit)")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(0.25)

    def wait_ready(self, qname: str, timeout: float) -> bool:
        """Poll until `qname` A gets an answer with records; record the load time."""
        assert self.proc is not None
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            reply = dns_query(self.port, qname, timeout=0.2)
            if reply is not None and reply[0] == 0 and reply[1] > 0:
                self.load_seconds = time.monotonic() - self.started_at
                return True
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        if not self.alive():
            return []
        assert self.proc is not None
        todo, seen = [self.proc.pid], []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            todo += _children(pid)
        # `taskset` execs the server, so the tree starts at the server itself.
        return seen

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except OSError:
                pass
        return total

    def peak_rss_bytes(self) -> int:
        """The sum of each process's high-water RSS (VmHWM), loading included."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError):
                pass
        return total / _CLK_TCK

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # its own session: the group holds only what it forked
        try:
            os.killpg(pgid, signal.SIGTERM)
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
