"""A small HTTP client of the REST API, used by the CLI (and handy in tests).

Errors come back as `ApiClientError` carrying the HTTP status, the server's message and
every problem it listed; connection failures carry status 0. The transport can be
injected (`httpx.MockTransport` in unit tests).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from shadowdns.errors import ShadowDNSError

DEFAULT_API = "http://127.0.0.1:8053"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path} (line {self.line})"
        return f"{where}: {self.message}"


class ApiClientError(ShadowDNSError):
    """An HTTP error answer (or no answer: status 0)."""

    def __init__(self, status: int, code: str, message: str,
                 problems: list[Problem] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.problems = problems or []
        super().__init__(str(self))

    def __str__(self) -> str:
        head = (f"cannot reach the API: {self.message}" if self.status == 0
                else f"HTTP {self.status} {self.code}: {self.message}")
        return "\n".join([head, *(f"  {p}" for p in self.problems)])


def seg(text: str) -> str:
    """Quote one path segment (names may hold '*' or '/')."""
    return quote(text, safe="")


class ApiClient:
    """Talks to one shadowdns API with one token."""

    def __init__(self, base_url: str = DEFAULT_API, token: str | None = None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 verify: bool | str = True) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify)
        try:
            self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                     transport=transport, timeout=timeout, verify=tls)
        except httpx.InvalidURL as exc:
            raise ApiClientError(422, "invalid", f"API URL {base_url!r}: {exc}") from None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, json: Any = None,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        clean = None if params is None else {k: v for k, v in params.items() if v is not None}
        try:
            response = self.http.request(method, path, json=json, params=clean,
                                         headers=headers)
        except httpx.HTTPError as exc:
            raise ApiClientError(0, "unreachable", f"{self.http.base_url}: {exc}") from None
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def send(self, method: str, path: str, body: Any = None,
             if_match: str | None = None) -> Any:
        headers = {"If-Match": if_match} if if_match else None
        response = self.request(method, path, json=body, headers=headers)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- helpers the CLI needs ---------------------------------------------------------------

    def zone_of(self, name: str) -> str:
        """The served zone holding an absolute name (the longest matching origin)."""
        wanted = name.lower().rstrip(".") + "."
        best = ""
        for zone in self.get("/api/v1/zones"):
            origin = str(zone["origin"]).lower()
            if (wanted == origin or wanted.endswith("." + origin) or origin == ".") \
                    and len(origin) > len(best):
                best = origin
        if not best:
            raise ApiClientError(404, "not_found", f"no served zone holds {name}")
        return best

    def zone_of_object(self, kind: str, name: str) -> str:
        """The zone of a resource or location id (unique across zones, else ask for --zone)."""
        zones = sorted({o["zone"] for o in self.get(f"/api/v1/{kind}") if o["name"] == name})
        if not zones:
            raise ApiClientError(404, "not_found", f"no zone has a {kind[:-1]} {name!r}")
        if len(zones) > 1:
            raise ApiClientError(409, "ambiguous", f"{name!r} is in several zones "
                                 f"({', '.join(zones)}); say which with --zone")
        return str(zones[0])


def error_from(response: httpx.Response) -> ApiClientError:
    try:
        body = response.json()
        error = body["error"]
        problems = [Problem(str(p.get("path", "")), str(p.get("message", "")), p.get("line"))
                    for p in error.get("problems", [])]
        return ApiClientError(response.status_code, str(error.get("code", "error")),
                              str(error.get("message", "")), problems)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ApiClientError(response.status_code, "error", text)
