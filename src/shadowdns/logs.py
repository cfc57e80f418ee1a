"""Logging for every command: the level, text or JSON lines, and quiet libraries.

The CLI calls `setup_logging` once. Libraries that log each request at INFO (httpx, whose
"HTTP Request:" line every API command would print) are held at WARNING unless the operator
asks for DEBUG. `--log-format json` writes one JSON object per line with the record's
`extra` fields (the access and query logs put theirs there), so log shippers need no regex.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
ACCESS_LOG_MODES = ("changes", "all", "off")
"""`serve --access-log`: API changes and errors (the default: an open dashboard reads six
endpoints every two seconds), every request, or none."""
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Loggers that speak for every request they make; their INFO is noise to an operator.
NOISY_LIBRARIES = ("httpx", "httpcore")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", with_pid: bool = False) -> None:
    """Configure the root logger for this process (replacing any earlier configuration);
    `with_pid` marks text lines with the process id (spawned `--workers`)."""
    handler = logging.StreamHandler(sys.stderr)
    text = TEXT_FORMAT.replace("%(name)s:", "%(name)s[%(process)d]:") if with_pid else TEXT_FORMAT
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
