"""Warm-up hooks over the real wire: a failing one keeps its shadow out of answers (and says
so in the API and /metrics); a working one is signed with HMAC-SHA256 over its body.

The hook receiver and the standby's health check are an HTTP server this test owns on
127.0.0.1; demand for jp is seeded before the server starts, as in test_failover_e2e.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadowdns.store import DemandRow, open_store
from tests.integration.test_failover_e2e import (
    BR,
    INTERVAL,
    JP,
    P_HOME,
    POLICY,
    S_JP,
    ZONE,
    answer,
    wait_answer,
)
from tests.serverproc import ServerProcess
from tests.unit.api.support import make_tokens

SECRET = b"hook-secret-for-tests"

ALLOCATOR = """allocator:
  mode: active
  window: 1s
  bucket: 1m
  tick: 0.2
  hooks:
    warmup: {{url: "http://127.0.0.1:{port}/warmup", retries: 2, backoff: 0.1, timeout: 2}}
"""


class Receiver:
    """Health check (GET /health: 200) and warm-up webhook (POST: `status`), recording each
    POST with whether its signature matched `SECRET`."""

    def __init__(self, status: int) -> None:
        self.posts: list[tuple[dict[str, Any], bool]] = []
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                wanted = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                signed = hmac.compare_digest(self.headers.get("X-Shadowdns-Signature", ""),
                                             wanted)
                posts.append((json.loads(body), signed))
                self.send_response(status if signed else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tcp_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def start(tmp: Path, receiver: Receiver, tcp: int) -> tuple[ServerProcess, str, dict[str, str]]:
    zones = tmp / "zones"
    zones.mkdir()
    (zones / "fo.test.zone").write_text(ZONE)
    (zones / "fo.test.policy.yaml").write_text(POLICY.format(
        p_home=P_HOME, s_jp=S_JP, tcp=tcp, http=receiver.port, i=INTERVAL, rise=2, fall=2))
    (zones / "allocator.yaml").write_text(ALLOCATOR.format(port=receiver.port))
    secret = tmp / "hook.secret"
    secret.write_bytes(SECRET + b"\n")
    state = tmp / "state.db"
    tokens = make_tokens(state)
    store = open_store(str(state))
    end = int(time.time() // 60 * 60) + 60
    try:
        store.add_demand([DemandRow("app.fo.test.", "jp", end - 60 * i, "primary", 200)
                          for i in range(1, 31)])
    finally:
        store.close()
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--api", "127.0.0.1:0",
                            "--hook-secret-file", str(secret)]).start()
    line = server.wait_log(r"api listening on \S+", timeout=30)
    url = re.search(r"api listening on (\S+)", line).group(1)  # type: ignore[union-attr]
    return server, url, {"Authorization": f"Bearer {tokens['reader']}"}


def test_a_failing_warmup_hook_keeps_the_shadow_out_of_answers(tmp_path: Path,
                                                               tcp_port: int) -> None:
    """The receiver answers 500 to every (signed) POST: the hook is tried 1 + 2 times, the
    shadow stays warming with the reason in the API and a count in /metrics, and jp keeps
    the primary although the shadow's health check passes."""
    receiver = Receiver(status=500)
    server, url, auth = start(tmp_path, receiver, tcp_port)
    try:
        with httpx.Client(base_url=url, timeout=10) as http:
            deadline = time.monotonic() + 30
            problem = None
            while time.monotonic() < deadline:
                rows = http.get("/api/v1/allocations", headers=auth).json()
                problem = rows[0]["problem"] if rows else None
                if problem and "failed" in problem:
                    break
                time.sleep(0.1)
            assert problem and "warm-up hook failed" in problem and "500" in problem, rows
            assert rows[0]["state"] == "warming" and rows[0]["resource"] == "s-jp"
            assert len(receiver.posts) == 3 and all(signed for _, signed in receiver.posts)
            assert {p["allocation"] for p, _ in receiver.posts} == {rows[0]["id"]}
            text = http.get("/metrics").text
            assert 'shadowdns_allocator_hook_failures_total{event="warmup"} 1.0' in text
            assert "shadowdns_allocator_warmup_blocked 1.0" in text
            # the health check has long passed (rise 2 × 0.5 s): only the hook holds it back
            time.sleep(2 * INTERVAL * 2 + 0.5)
            assert answer(server, JP) == [P_HOME]
            assert answer(server, BR) == [P_HOME]
            assert http.get("/api/v1/allocations", headers=auth).json()[0]["state"] == "warming"
    finally:
        server.stop()
        receiver.close()


def test_a_signed_hook_that_works_lets_the_shadow_answer(tmp_path: Path, tcp_port: int) -> None:
    """The receiver checks the HMAC of each body with the shared secret and answers 204
    only when it matches: the shadow turns ready and answers jp, with no problem shown."""
    receiver = Receiver(status=204)
    server, url, auth = start(tmp_path, receiver, tcp_port)
    try:
        wait_answer(server, JP, [S_JP], deadline=30)
        assert [signed for _, signed in receiver.posts] == [True]
        [post] = [p for p, _ in receiver.posts]
        assert (post["event"], post["di"], post["resource"], post["region"]) == (
            "warmup", "app.fo.test.", "s-jp", "jp")
        with httpx.Client(base_url=url, timeout=10) as http:
            [row] = http.get("/api/v1/allocations", headers=auth).json()
            assert row["state"] == "ready" and row["problem"] is None
    finally:
        server.stop()
        receiver.close()
