"""Fixtures the end-to-end tests share: a TCP listener on 127.0.0.1 for a resource's
health check to connect to, and the standby's HTTP endpoint (health and warm-up webhook)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.integration.test_failover_e2e import Backend


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.fixture
def backend() -> Iterator[Backend]:
    b = Backend()
    try:
        yield b
    finally:
        if b.server is not None:
            b.stop()
