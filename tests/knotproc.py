"""Starts a real Knot DNS (`knotd`) on 127.0.0.1 as the reference server for differential tests.

Knot is configured as plainly as possible: zone files loaded whole, no journal, no DNSSEC
signing, no zone file syncing back, every file kept in a temporary directory. The port is
picked free for UDP and TCP; `start` returns once Knot answers a SOA query for each zone.
`knotd_path()` returns None when Knot is not installed, so callers can skip with a reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

SKIP_REASON = "knotd not found on PATH or in /usr/sbin (apt-get install knot)"


def knotd_path() -> str | None:
    """Where knotd is, or None if Knot is not installed."""
    found = shutil.which("knotd")
    if found:
        return found
    for candidate in ("/usr/sbin/knotd", "/usr/local/sbin/knotd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _user_spec() -> str:
    """The user:group knotd runs as: whoever runs the tests (knotd's default is root:root,
    which an unprivileged user cannot switch to). Every file lives in a directory we own."""
    import grp
    import pwd

    return f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free port")


def _soa_query(origin: str, qid: int) -> bytes:
    wire = b"".join(
        bytes([len(label)]) + label.encode() for label in origin.rstrip(".").split(".") if label
    )
    return struct.pack("!HHHHHH", qid, 0, 1, 0, 0, 0) + wire + b"\x00" + struct.pack("!HH", 6, 1)


class KnotProcess:
    """A running knotd serving `zones` (origin -> path of its master file)."""

    def __init__(self, zones: dict[str, Path], *, nsid: str = "", identity: str = "",
                 version: str = "", host: str = "127.0.0.1", timeout: float = 20.0) -> None:
        binary = knotd_path()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        self.binary = binary
        self.zones = zones
        self.nsid = nsid
        self.identity = identity
        self.version = version
        self.host = host
        self.port = 0
        self.timeout = timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="knotdiff-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.tmp / "knotd.log"

    def config_text(self) -> str:
        storage = self.tmp / "zones"
        lines = [
            "server:",
            f'    rundir: "{self.tmp}"',
            f"    listen: {self.host}@{self.port}",
            f'    identity: "{self.identity}"',
            f'    version: "{self.version}"',
            f'    nsid: "{self.nsid}"',
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            f"    user: {_user_spec()}",
            "    udp-max-payload: 1232",
            "    edns-client-subnet: on",
            "",
            "database:",
            f'    storage: "{self.tmp / "db"}"',
            "",
            "log:",
            "  - target: stderr",
            "    any: info",
            "",
            "template:",
            "  - id: default",
            f'    storage: "{storage}"',
            '    file: "%s.zone"',
            "    zonefile-load: whole",
            "    zonefile-sync: -1",
            "    journal-content: none",
            "    semantic-checks: off",
            "    dnssec-signing: off",
            "",
            "zone:",
        ]
        lines += [f"  - domain: {origin}" for origin in self.zones]
        return "\n".join(lines) + "\n"

    def start(self) -> KnotProcess:
        storage = self.tmp / "zones"
        storage.mkdir()
        for origin, path in self.zones.items():
            shutil.copy(path, storage / f"{origin.rstrip('.').lower()}.zone")
        (self.tmp / "db").mkdir()
        self.port = free_port(self.host)
        conf = self.tmp / "knot.conf"
        conf.write_text(self.config_text())
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        pending = list(self.zones)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            qid = 1
            while pending:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"knotd exited {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"knotd did not answer for {pending}:\n{self.log()}")
                qid = (qid + 1) & 0xFFFF
                try:
                    sock.sendto(_soa_query(pending[0], qid), (self.host, self.port))
                    data = sock.recv(65535)
                except OSError:
                    time.sleep(0.05)
                    continue
                # NOERROR with an answer: the zone is loaded (SERVFAIL while loading).
                if len(data) >= 12 and data[:2] == struct.pack("!H", qid):
                    if data[3] & 0xF == 0 and data[6:8] != b"\x00\x00":
                        pending.pop(0)
                    else:
                        time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> KnotProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def knot(zones: dict[str, Path], **kwargs: str) -> KnotProcess:
    """A started KnotProcess; use as a context manager or call stop()."""
    return KnotProcess(zones, **kwargs).start()


__all__: Sequence[str] = ("SKIP_REASON", "KnotProcess", "free_port", "knot", "knotd_path")
