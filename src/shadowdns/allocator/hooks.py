"""Warm-up and drain hooks: tell the outside world a shadow is starting or has drained.

A hook is a webhook (JSON POST) and/or a command (JSON on stdin, the same fields as
`SHADOWDNS_*` environment variables). Hooks come only from `allocator.yaml`, a file of the
host that neither the API nor the fleet store writes (see `health.privilege`). Hooks run in
the background and never delay allocation or other answers; a failing one is tried again
with exponential backoff (`retries`, `backoff`), and its final result is reported to the
caller: the controller keeps a shadow whose warm-up hook has not worked out of answers.
Every call is remembered (bounded) so the API and tests can see what was called.

With a secret (`serve --hook-secret-file`), each webhook POST carries
`X-Shadowdns-Signature: sha256=<hex HMAC-SHA256 of the exact body>`, as GitHub signs its
webhooks, so the receiver can tell shadowdns from anyone who can reach the URL.

Payload: `{"event": "warmup"|"drain", "di", "resource", "region", "allocation",
"ready_by", "generation"}` (`ready_by` is epoch seconds; null for drain).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from shadowdns.allocator.settings import Hook

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Shadowdns-Signature"

Done = Callable[[bool, str], None]  # called once with the hook's final (ok, detail)


def signature(secret: bytes, body: bytes) -> str:
    """The value of `SIGNATURE_HEADER` for `body`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class HookPayload:
    """What a hook is told (see the module docstring)."""

    event: Literal["warmup", "drain"]
    di: str
    resource: str
    region: str
    allocation: int
    ready_by: float | None  # epoch seconds the shadow should be warm by; None for drain
    generation: int

    def to_json(self) -> dict[str, Any]:
        """The JSON body of the webhook and the command's stdin, `event` first."""
        return {"event": self.event, "di": self.di, "resource": self.resource,
                "region": self.region, "allocation": self.allocation,
                "ready_by": self.ready_by, "generation": self.generation}


@dataclass(frozen=True, slots=True)
class HookCall:
    event: str
    payload: dict[str, Any]
    ok: bool
    detail: str


class HookRunner:
    """Runs hooks in background tasks; `calls` keeps the most recent results."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None,
                 history: int = 200, secret: bytes | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.transport = transport
        self.secret = secret
        self.sleep = sleep
        self.calls: deque[HookCall] = deque(maxlen=history)
        self.failures: dict[str, int] = {}  # event -> hooks that failed after every retry
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, hook: Hook | None, payload: HookPayload, done: Done | None = None) -> None:
        """Start `hook` for `payload.event` in the background (no-op without a hook);
        `done` gets its final result."""
        if hook is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._call_then(hook, payload.event, payload.to_json(), done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call_then(self, hook: Hook, event: str, body: dict[str, Any],
                         done: Done | None) -> None:
        try:
            ok, detail = await self.call(hook, event, body)
        except Exception as exc:  # a bug here must still settle the shadow
            log.exception("%s hook crashed", event)
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        if done is not None:
            done(ok, detail)

    async def call(self, hook: Hook, event: str, body: dict[str, Any]) -> tuple[bool, str]:
        """Run the webhook and/or command, each with retries; (all worked, what happened)."""
        results: list[tuple[bool, str]] = []
        if hook.url:
            raw = json.dumps(body, separators=(",", ":")).encode()
            results.append(await self._retried(hook, event, body, lambda: self._post(hook, raw)))
        if hook.command:
            results.append(await self._retried(hook, event, body, lambda: self._run(hook, body)))
        ok = all(r[0] for r in results)
        if not ok:
            self.failures[event] = self.failures.get(event, 0) + 1
        return ok, "; ".join(r[1] for r in results if not r[0]) or "ok"

    async def _retried(self, hook: Hook, event: str, body: dict[str, Any],
                       attempt: Callable[[], Awaitable[tuple[bool, str]]]) -> tuple[bool, str]:
        tries = hook.retries + 1
        for n in range(1, tries + 1):
            ok, detail = await attempt()
            if ok:
                self._remember(event, body, True, detail)
                return True, detail
            if n < tries:
                log.info("%s hook for %s/%s failed (%s); try %d of %d in %gs", event,
                         body.get("di"), body.get("resource"), detail, n + 1, tries,
                         hook.backoff * 2 ** (n - 1))
                await self.sleep(hook.backoff * 2 ** (n - 1))
        detail = f"{detail} (after {tries} attempt{'s' if tries > 1 else ''})"
        self._remember(event, body, False, detail)
        return False, detail

    def _remember(self, event: str, body: dict[str, Any], ok: bool, detail: str) -> None:
        self.calls.append(HookCall(event, body, ok, detail))
        if not ok:
            log.warning("%s hook for %s/%s failed: %s", event, body.get("di"),
                        body.get("resource"), detail)

    async def _post(self, hook: Hook, raw: bytes) -> tuple[bool, str]:
        assert hook.url is not None
        headers = {"Content-Type": "application/json"}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, raw)
        try:
            async with httpx.AsyncClient(transport=self.transport,
                                         timeout=hook.timeout) as client:
                response = await client.post(hook.url, content=raw, headers=headers)
        except httpx.HTTPError as exc:
            return False, f"POST {hook.url}: {type(exc).__name__}: {exc}"
        return response.is_success, f"POST {hook.url}: {response.status_code}"

    async def _run(self, hook: Hook, body: dict[str, Any]) -> tuple[bool, str]:
        env = {**os.environ, **{f"SHADOWDNS_{k.upper()}": "" if v is None else str(v)
                                for k, v in body.items()}}
        try:
            proc = await asyncio.create_subprocess_exec(
                *hook.command, stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env)
        except OSError as exc:
            return False, f"{hook.command[0]}: {exc.strerror or exc}"
        try:
            _, err = await asyncio.wait_for(proc.communicate(json.dumps(body).encode()),
                                            hook.timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False, f"{hook.command[0]}: timeout after {hook.timeout:g}s"
        tail = err.decode(errors="replace").strip()[-200:]
        return proc.returncode == 0, f"{hook.command[0]} exited {proc.returncode} {tail}".strip()

    async def drain(self) -> None:
        """Wait for running hooks (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
