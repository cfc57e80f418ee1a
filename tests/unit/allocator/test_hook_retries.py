"""Hooks are tried again with exponential backoff, signed when a secret is set, and report
their final result once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx
import pytest

from shadowdns.allocator.hooks import SIGNATURE_HEADER, HookPayload, HookRunner
from shadowdns.allocator.settings import AllocatorSettings, Hook
from shadowdns.errors import ConfigError


def run(statuses: list[int], hook: Hook, secret: bytes | None = None
        ) -> tuple[list[httpx.Request], list[float], list[tuple[bool, str]], HookRunner]:
    requests: list[httpx.Request] = []
    slept: list[float] = []
    results: list[tuple[bool, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(statuses[min(len(requests), len(statuses)) - 1])

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    runner = HookRunner(transport=httpx.MockTransport(answer), secret=secret, sleep=sleep)

    async def scenario() -> None:
        runner.fire(hook, HookPayload("warmup", "app.", "s-jp", "jp", 1, 0.0, 1),
                    done=lambda ok, detail: results.append((ok, detail)))
        await runner.drain()

    asyncio.run(scenario())
    return requests, slept, results, runner


@pytest.mark.parametrize(("statuses", "retries", "tries", "slept", "ok"), [
    ([204], 3, 1, [], True),
    ([500, 503, 204], 3, 3, [0.5, 1.0], True),
    ([500], 3, 4, [0.5, 1.0, 2.0], False),
    ([500], 0, 1, [], False),
])
def test_retries_back_off_and_report_once(statuses: list[int], retries: int, tries: int,
                                          slept: list[float], ok: bool) -> None:
    """Each failed try waits backoff × 2^n before the next; `done` gets the final result."""
    hook = Hook(url="http://127.0.0.1:9/w", retries=retries, backoff=0.5)
    requests, waited, results, runner = run(statuses, hook)
    assert len(requests) == tries and waited == slept
    assert len(results) == 1 and results[0][0] is ok
    assert runner.failures == ({} if ok else {"warmup": 1})
    if not ok:
        assert "500" in results[0][1] and f"after {tries} attempt" in results[0][1]


def test_a_secret_signs_the_exact_body_with_hmac_sha256() -> None:
    """The signature header is the HMAC-SHA256 of the bytes sent; none without a secret."""
    [request], _, _, _ = run([204], Hook(url="http://127.0.0.1:9/w"), secret=b"s3cret")
    body = request.content
    assert json.loads(body) == {"event": "warmup", "di": "app.", "resource": "s-jp",
                                "region": "jp", "allocation": 1, "ready_by": 0.0,
                                "generation": 1}
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    [unsigned], _, _, _ = run([204], Hook(url="http://127.0.0.1:9/w"))
    assert SIGNATURE_HEADER not in unsigned.headers


@pytest.mark.parametrize(("spec", "field"), [
    ({"url": "http://x/", "retries": -1}, "hooks.warmup.retries"),
    ({"url": "http://x/", "retries": "many"}, "hooks.warmup.retries"),
    ({"url": "http://x/", "backoff": "soon"}, "hooks.warmup.backoff"),
])
def test_bad_retry_settings_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AllocatorSettings.from_mapping({"hooks": {"warmup": spec}})
    assert any(p.file == field or field in str(p) for p in caught.value.problems), \
        caught.value.problems


def test_retry_settings_are_read() -> None:
    settings = AllocatorSettings.from_mapping(
        {"hooks": {"warmup": {"url": "http://x/", "retries": 5, "backoff": "2s"}}})
    assert settings.warmup_hook == Hook(url="http://x/", retries=5, backoff=2.0)
