"""The CLI's HTTP client and output: errors keep status, message and problems; tables align."""

from __future__ import annotations

import httpx
import pytest

from shadowdns.api.client import ApiClient, ApiClientError
from shadowdns.api.commands import EXIT_CODES, table


def mock(status: int, body: object) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer T"
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handler)


def test_error_answer_becomes_client_error_with_every_problem() -> None:
    """A 422 body turns into status, code, message and each problem's path."""
    body = {"error": {"status": 422, "code": "invalid", "message": "2 problem(s)", "problems": [
        {"path": "body.address", "message": "bad", "line": None},
        {"path": "body.text", "message": "syntax", "line": 4}]}}
    with ApiClient("http://api.test", "T", transport=mock(422, body)) as client, \
            pytest.raises(ApiClientError) as info:
        client.get("/api/v1/zones")
    error = info.value
    assert (error.status, error.code) == (422, "invalid")
    assert str(error).splitlines() == ["HTTP 422 invalid: 2 problem(s)",
                                       "  body.address: bad", "  body.text (line 4): syntax"]
    assert EXIT_CODES[error.status] == 6


def test_non_json_error_still_says_the_status() -> None:
    """A proxy's HTML error page is reported by status and text."""
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="<h1>Bad gateway</h1>"))
    with ApiClient("http://api.test", "T", transport=transport) as client, \
            pytest.raises(ApiClientError) as info:
        client.get("/api/v1/zones")
    assert info.value.status == 502 and "Bad gateway" in str(info.value)


def test_zone_of_picks_the_longest_origin() -> None:
    """A name belongs to the most specific served zone."""
    zones = [{"origin": "example.com."}, {"origin": "sub.example.com."}]
    with ApiClient("http://api.test", "T", transport=mock(200, zones)) as client:
        assert client.zone_of("www.sub.example.com") == "sub.example.com."
        assert client.zone_of("example.com.") == "example.com."
        with pytest.raises(ApiClientError):
            client.zone_of("example.org.")


def test_table_aligns_columns_and_formats_cells() -> None:
    """Headers are upper case; None is '-', booleans yes/no, lists joined."""
    text = table([{"a": "x", "b": None, "c": True, "d": [1, 2]},
                  {"a": "longer", "b": 1.5, "c": False, "d": []}],
                 [("a", "a"), ("b", "b"), ("c", "c"), ("d", "d")])
    assert text.splitlines() == ["A       B    C    D", "x       -    yes  1, 2",
                                 "longer  1.5  no"]
