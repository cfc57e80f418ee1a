"""Warm-up and drain hooks: tell the outside world a shadow is starting or has drained.

A hook is a webhook (JSON POST) and/or a command (JSON on stdin, the same fields as
`SHADOWDNS_*` environment variables). Hooks come only from `allocator.yaml`, a file of the
host that neither the API nor the fleet store writes (see `health.privilege`). Hooks run in
the background: a slow or failing hook is logged and never delays allocation or answers.
Every call is remembered (bounded) so the API and tests can see what was called.

Payload: `{"event": "warmup"|"drain", "di", "resource", "region", "allocation",
"ready_by", "generation"}` (`ready_by` is epoch seconds; null for drain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import httpx

from shadowdns.allocator.settings import Hook

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HookCall:
    event: str
    payload: dict[str, Any]
    ok: bool
    detail: str


class HookRunner:
    """Runs hooks in background tasks; `calls` keeps the most recent results."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None,
                 history: int = 200) -> None:
        self.transport = transport
        self.calls: deque[HookCall] = deque(maxlen=history)
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, hook: Hook | None, event: str, payload: dict[str, Any]) -> None:
        """Start `hook` for `event` in the background (no-op without a hook)."""
        if hook is None:
            return
        task = asyncio.get_running_loop().create_task(self.call(hook, event, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def call(self, hook: Hook, event: str, payload: dict[str, Any]) -> None:
        body = {"event": event, **payload}
        if hook.url:
            ok, detail = await self._post(hook, body)
            self._remember(event, body, ok, detail)
        if hook.command:
            ok, detail = await self._run(hook, body)
            self._remember(event, body, ok, detail)

    def _remember(self, event: str, body: dict[str, Any], ok: bool, detail: str) -> None:
        self.calls.append(HookCall(event, body, ok, detail))
        if not ok:
            log.warning("%s hook for %s/%s failed: %s", event, body.get("di"),
                        body.get("resource"), detail)

    async def _post(self, hook: Hook, body: dict[str, Any]) -> tuple[bool, str]:
        assert hook.url is not None
        try:
            async with httpx.AsyncClient(transport=self.transport,
                                         timeout=hook.timeout) as client:
                response = await client.post(hook.url, json=body)
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
