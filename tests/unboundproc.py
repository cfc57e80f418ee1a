"""Starts a real Unbound on 127.0.0.1 as a validating resolver in front of the server.

Unbound runs with `module-config: "subnetcache validator iterator"`: it forwards the
client's ECS option to the server, caches answers per subnet, and validates them against
the trust anchor given (the DS from `shadowdns dnssec ds`). It sends only from
127.0.0.1 and is told never to query the documentation networks the test zones name, so
it cannot reach outside addresses. `unbound_path()` installs Unbound with apt-get when it
is missing and that is possible (as scripts/bootstrap --test does), else returns None.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.knotproc import free_port

SKIP_REASON = "unbound not found and apt-get install unbound not possible"


def _find() -> str | None:
    found = shutil.which("unbound")
    if found:
        return found
    for candidate in ("/usr/sbin/unbound", "/usr/local/sbin/unbound"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def unbound_path() -> str | None:
    """Where unbound is, installing it with apt-get first if missing and root."""
    found = _find()
    if found is not None or shutil.which("apt-get") is None or os.getuid() != 0:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "unbound"]):
        try:
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if _find() is not None:
            break
    return _find()


class UnboundProcess:
    """A running unbound resolving `zone` from 127.0.0.1@`server_port`, anchored on `anchor`
    (a DS or DNSKEY record in presentation format)."""

    def __init__(self, zone: str, server_port: int, anchor: str, timeout: float = 20.0) -> None:
        binary = unbound_path()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        self.binary = binary
        self.zone = zone
        self.server_port = server_port
        self.anchor = anchor
        self.timeout = timeout
        self.host = "127.0.0.1"
        self.port = 0
        self.tmp = Path(tempfile.mkdtemp(prefix="unbound-"))
        self.log_path = self.tmp / "unbound.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        return "\n".join([
            "server:",
            f"    interface: {self.host}@{self.port}",
            f"    outgoing-interface: {self.host}",
            "    do-ip6: no",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{self.tmp}"',
            f'    pidfile: "{self.tmp / "unbound.pid"}"',
            "    use-syslog: no",
            f'    logfile: "{self.log_path}"',
            "    verbosity: 1",
            "    val-log-level: 2",
            "    num-threads: 1",
            "    access-control: 127.0.0.0/8 allow",
            "    do-not-query-localhost: no",
            "    do-not-query-address: 192.0.2.0/24",
            "    do-not-query-address: 198.51.100.0/24",
            "    do-not-query-address: 203.0.113.0/24",
            "    qname-minimisation: no",
            "    prefetch: no",
            # RFC 6761 names (test., invalid.) are answered locally by default.
            '    local-zone: "test." nodefault',
            '    module-config: "subnetcache validator iterator"',
            f"    send-client-subnet: {self.host}",
            "    max-client-subnet-ipv4: 32",
            f'    trust-anchor: "{self.anchor}"',
            "remote-control:",
            "    control-enable: no",
            "stub-zone:",
            f'    name: "{self.zone}"',
            f"    stub-addr: {self.host}@{self.server_port}",
            "    stub-prime: no",
            "",
        ])

    def start(self) -> UnboundProcess:
        self.port = free_port(self.host)
        conf = self.tmp / "unbound.conf"
        conf.write_text(self.config_text())
        with (self.tmp / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen([self.binary, "-d", "-c", str(conf)],
                                         stdout=err, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        query = dns.message.make_query("localhost.", "A")
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"unbound exited {self.proc.returncode}:\n{self.log()}")
            try:
                dns.query.udp(query, self.host, port=self.port, timeout=0.3)
                return
            except (OSError, dns.exception.Timeout):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"unbound did not answer:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        out = []
        for path in (self.log_path, self.tmp / "stderr.log"):
            try:
                out.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


__all__: Sequence[str] = ("SKIP_REASON", "UnboundProcess", "unbound_path")
