"""Starts the real `shadowdns serve` as a subprocess on 127.0.0.1 and finds its port.

Tests talk to it over real UDP and TCP; the port is read from the server's own log line
"listening on HOST:PORT", so port 0 works and parallel runs never collide.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

_LISTEN_RE = re.compile(r"listening on \[?([0-9a-fA-F:.]+)\]?:(\d+)")


class ServerProcess:
    """A running `shadowdns serve`; use as a context manager."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 listeners: int = 1, timeout: float = 30.0) -> None:
        self.args = [sys.executable, "-m", "shadowdns", *args]
        self.env = {**os.environ, **(env or {})}
        self.listeners = listeners
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.addresses: list[tuple[str, int]] = []
        self.log: list[str] = []
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            match = _LISTEN_RE.search(line)
            if match:
                self.addresses.append((match.group(1), int(match.group(2))))
                if len(self.addresses) >= self.listeners:
                    self._ready.set()
        self._ready.set()

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=self.env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(self.timeout) or len(self.addresses) < self.listeners:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        return self

    def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait until a log line matches `pattern`; return it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = list(self.log)
            for line in lines[seen:]:
                if regex.search(line):
                    return line
            seen = len(lines)
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n" + "".join(self.log))

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        # `serve()` returns a started server: `with serve(...)` must not start a second one
        # (the first would run on, orphaned, after the block)
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(zones: Path, *extra: str, listeners: int = 1) -> ServerProcess:
    """`shadowdns serve --zones ZONES --listen 127.0.0.1:0 EXTRA...`, started."""
    return ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0", *extra],
                         listeners=listeners).start()
