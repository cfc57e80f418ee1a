"""Log setup: JSON lines with extras, and library request lines held back unless DEBUG."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from shadowdns.logs import JsonFormatter, setup_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.NOTSET)


def test_json_lines_carry_the_extra_fields() -> None:
    """One object per record: time, level, logger, message and every `extra=` field."""
    record = logging.LogRecord("shadowdns.api.access", logging.INFO, __file__, 1,
                               "GET %s %d", ("/x", 200), None)
    record.status = 200
    record.token = "ops"
    out = json.loads(JsonFormatter().format(record))
    assert out["logger"] == "shadowdns.api.access"
    assert out["level"] == "INFO"
    assert out["message"] == "GET /x 200"
    assert (out["status"], out["token"]) == (200, "ops")
    assert out["time"].endswith("+00:00")
    assert "args" not in out and "msg" not in out


def test_json_lines_include_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, "failed",
                                                   (), __import__("sys").exc_info())
    out = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in out["exception"]


@pytest.mark.parametrize(("level", "httpx_level"),
                         [("INFO", logging.WARNING), ("WARNING", logging.WARNING),
                          ("DEBUG", logging.DEBUG)])
def test_http_library_lines_only_at_debug(level: str, httpx_level: int) -> None:
    """httpx logs every request at INFO; operators see that only when they ask for DEBUG."""
    setup_logging(level)
    assert logging.getLogger("httpx").level == httpx_level
    assert logging.getLogger().level == getattr(logging, level)
