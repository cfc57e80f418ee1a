"""A real `Service` on a copy of the demo zone, with its API and DNS listener in a thread.

The API and the DNS listener run on their own event loop in a background thread, exactly as
`serve` runs them (same app, same uvicorn, same file editor and reload), while the test
talks HTTP with httpx and DNS with dnspython. The control plane and health probes are not
started, so nothing but the test changes allocations or health.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import httpx

from shadowdns.api.auth import Role, new_token
from shadowdns.api.server import start_api
from shadowdns.app import ServeConfig, Service
from shadowdns.resolver.commands import demo_zones_dir
from shadowdns.resolver.server import ListenAddress
from shadowdns.store import open_store
from tests.serverproc import ServerProcess

ZONE = "demo.shadowdns.test."
ROLES: tuple[Role, ...] = ("reader", "operator", "admin")


@dataclass
class Api:
    """The running API, its service and a token per role."""

    http: httpx.Client
    service: Service
    zones: Path
    dns_port: int
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, path: str, role: str = "reader", **params: Any) -> Any:
        response = self.http.get(path, headers=self.auth(role), params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, method: str, path: str, body: Any = None, role: str = "operator",
             **headers: str) -> httpx.Response:
        return self.http.request(method, path, json=body,
                                 headers={**self.auth(role), **headers})

    def ask(self, name: str, rdtype: str = "A") -> list[str]:
        """The addresses (or rdata) the DNS listener answers now."""
        query = dns.message.make_query(name, rdtype)
        reply = dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=2)
        return sorted(rd.to_text() for rrset in reply.answer for rd in rrset
                      if rrset.rdtype == query.question[0].rdtype)

    def in_store(self, fn: Any, *args: Any) -> Any:
        return self.service.io.submit(fn, *args).result()

    @property
    def zone_file(self) -> Path:
        return self.zones / "demo.shadowdns.test.zone"

    @property
    def policy_file(self) -> Path:
        return self.zones / "demo.shadowdns.test.policy.yaml"


@contextmanager
def running_api(tmp_path: Path, zones_source: Path | None = None,
                **settings: Any) -> Iterator[Api]:
    """The API on a copy of `zones_source`; `settings` are further `ServeConfig` fields."""
    zones = tmp_path / "zones"
    shutil.copytree(zones_source or demo_zones_dir(), zones)
    config = ServeConfig(zones_dir=zones, listen=(ListenAddress("127.0.0.1", 0),),
                         state=str(tmp_path / "state.db"), api="127.0.0.1:0", **settings)
    service = Service(config)
    tokens = {}
    for role in ROLES:
        secret, row = new_token(role, f"test-{role}")
        service.io.submit(service.store.add_token, row).result()
        tokens[role] = secret
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-test-loop", daemon=True)
    thread.start()

    async def start() -> tuple[str, int]:
        bound = await service.server.listen(config.listen[0])
        running = await start_api(service)
        service.tasks.extend(running.tasks)
        return running.url, bound.port

    async def stop() -> None:
        for task in service.tasks:
            task.cancel()
        await asyncio.gather(*service.tasks, return_exceptions=True)
        await service.server.close()

    started: Future[tuple[str, int]] = asyncio.run_coroutine_threadsafe(start(), loop)
    url, port = started.result(30)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            yield Api(http, service, zones, port, tokens)
    finally:
        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        service.io.submit(service.store.close).result()
        service.io.shutdown(wait=True)


@dataclass
class ServedApi:
    """A `shadowdns serve --api` subprocess on a copy of the demo zone."""

    server: ServerProcess
    url: str
    zones: Path
    state: Path
    tokens: dict[str, str]

    def auth(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_tokens(state: Path) -> dict[str, str]:
    """A token per role in the state database at `state`."""
    store = open_store(str(state))
    tokens = {}
    try:
        for role in ROLES:
            secret, row = new_token(role, f"test-{role}")
            store.add_token(row)
            tokens[role] = secret
    finally:
        store.close()
    return tokens


@contextmanager
def served_api(tmp_path: Path, *extra: str,
               prepare: Callable[[Path], None] | None = None) -> Iterator[ServedApi]:
    """Start `shadowdns serve` with the API on port 0; the URL comes from its log.
    `prepare` gets the zones directory (a copy of the demo's) before the server starts."""
    zones = tmp_path / "zones"
    shutil.copytree(demo_zones_dir(), zones)
    if prepare is not None:
        prepare(zones)
    state = tmp_path / "state.db"
    tokens = make_tokens(state)
    server = ServerProcess(["serve", "--zones", str(zones), "--listen", "127.0.0.1:0",
                            "--state", str(state), "--api", "127.0.0.1:0", *extra]).start()
    try:
        line = server.wait_log(r"api listening on \S+", timeout=30)
        url = re.search(r"api listening on (\S+)", line).group(1)  # type: ignore[union-attr]
        yield ServedApi(server, url, zones, state, tokens)
    finally:
        server.stop()
