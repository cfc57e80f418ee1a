"""Runs the API with uvicorn inside the service's event loop, as tasks of the service.

uvicorn normally owns the process (signals, logging); here the service does: signal
handling is left to the service, logging goes to the root logger, and the socket is bound
before uvicorn starts so port 0 works and the log says which port was chosen ("api
listening on http://HOST:PORT"). Without --api-cert/--api-key the API speaks plain HTTP, and
says so loudly when it listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI

from shadowdns.api.app import create_app
from shadowdns.api.context import ApiContext, ApiService
from shadowdns.errors import ConfigError, Problem
from shadowdns.resolver.server import ListenAddress

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_warning(host: str, tls: bool) -> str | None:
    """What to warn about when the API would send tokens in clear text beyond this host."""
    if tls or is_loopback(host):
        return None
    return (f"the API listens on {host} without TLS: bearer tokens cross the network in "
            "clear text; give --api-cert and --api-key")


def bind(address: ListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as exc:
        sock.close()
        raise ConfigError([Problem("--api", None, f"cannot listen on {address}: {exc}")]) \
            from None
    sock.setblocking(False)
    return sock


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.shutdown(sockets=[sock]), 5)
        raise
    finally:
        sock.close()


async def _sample_kinds(ctx: ApiContext) -> None:
    while True:
        ctx.kinds.sample()
        await asyncio.sleep(ctx.kinds.interval)


@dataclass(frozen=True, slots=True)
class RunningApi:
    """A started API: where it listens and the tasks to cancel on stop."""

    url: str
    tasks: list[asyncio.Task[None]]


async def _warm(app: FastAPI) -> None:
    """Route one request (past the middleware: it is not counted or logged) that matches
    nothing, so every route is tried now: FastAPI builds an included router's routes on
    first use, ~80 ms holding the GIL, which would otherwise fall on an operator's first
    request while DNS answers wait."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": "/.shadowdns-warm-up",
             "raw_path": b"/.shadowdns-warm-up", "root_path": "", "query_string": b"",
             "headers": [], "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    await app.router(scope, receive, send)


async def start_api(service: ApiService) -> RunningApi:
    """Start the API on service.config.api (port 0 picks one; see `RunningApi.url`)."""
    config = service.config
    assert config.api is not None
    try:
        address = ListenAddress.parse(config.api)
    except ValueError as exc:
        raise ConfigError([Problem("--api", None, str(exc))]) from None
    tls = config.api_cert is not None or config.api_key is not None
    if tls and (config.api_cert is None or config.api_key is None):
        raise ConfigError([Problem("--api-cert/--api-key", None,
                                   "TLS needs both a certificate and its key")])
    sock = bind(address)
    port = sock.getsockname()[1]
    ctx = ApiContext(service)
    app = create_app(service, context=ctx)
    await _warm(app)
    uv_config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", server_header=False,
        proxy_headers=False, ssl_certfile=config.api_cert, ssl_keyfile=config.api_key,
        timeout_graceful_shutdown=2,
    )
    server = _EmbeddedServer(uv_config)
    loop = asyncio.get_running_loop()
    serve_task = loop.create_task(_serve(server, sock))
    while not server.started:
        if serve_task.done():
            serve_task.result()  # raises what went wrong
            raise ConfigError([Problem("--api", None, "the API server stopped at start")])
        await asyncio.sleep(0.01)
    scheme = "https" if tls else "http"
    host = f"[{address.host}]" if ":" in address.host else address.host
    url = f"{scheme}://{host}:{port}"
    log.info("api listening on %s", url)
    warning = plaintext_warning(address.host, tls)
    if warning:
        log.warning("%s", warning)
    return RunningApi(url, [serve_task, loop.create_task(_sample_kinds(ctx))])
