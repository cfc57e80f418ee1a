"""How the CLI shows things to a person: aligned tables, UTC times, durations and reasons.

Every listing command prints through `table` (and `--json` prints the data untouched), so
times, empty cells and allocation reasons read the same in `alloc list`, `shadow list`,
`health events` and `token list`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = ["ALLOC_COLUMNS", "ALLOC_FORMATS", "TIMES", "Progress", "cell", "duration_words",
           "reason_words", "table", "when"]


def when(ts: object) -> str:
    """An epoch time as UTC `YYYY-MM-DD HH:MM:SS`; '-' for none."""
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration_words(seconds: object) -> str:
    """Seconds as the largest whole unit that fits (`90s`, `30m`, `2h`, `1.5d`)."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return cell(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.3g}s"


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e6 else f"{value:.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):  # a DI's or resource's config: `key=value`, not JSON
        return " ".join(f"{k}={_inner(v)}" for k, v in value.items())
    return str(value)


def _inner(value: object) -> str:
    if isinstance(value, dict):
        return "{" + cell(value) + "}"
    if isinstance(value, list | tuple):
        return ",".join(_inner(v) for v in value)
    return cell(value)


def reason_words(text: object) -> str:
    """An allocation's reason as a sentence: the allocator stores JSON (`reason_text`), e.g.
    `forecast: predicted 130 >= threshold 100, observed 80, model ets, window 13:05-13:10`;
    a hand-written reason is shown as it is."""
    if not isinstance(text, str):
        return cell(text)
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if not isinstance(data, dict):
        return text
    why = str(data.pop("why", "")) or "allocated"
    parts: list[str] = []
    if "predicted" in data and "threshold" in data:
        parts.append(f"predicted {cell(data.pop('predicted'))} >= threshold "
                     f"{cell(data.pop('threshold'))}")
    for key, value in data.items():
        if key == "window" and isinstance(value, list) and len(value) == 2:
            parts.append(f"window {when(value[0])[11:16]}-{when(value[1])[11:16]} UTC")
        elif key == "min_hold":
            parts.append(f"min hold {duration_words(value)}")
        elif key == "p_cross":
            parts.append(f"P(cross) {cell(value)}")
        else:
            parts.append(f"{key.replace('_', ' ')} {cell(value)}")
    return why + (": " + ", ".join(parts) if parts else "")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
          formats: Mapping[str, Callable[[Any], str]] | None = None) -> str:
    """Rows as an aligned text table; columns are (header, key)."""
    formats = formats or {}
    cells = [[formats.get(key, cell)(row.get(key)) for _, key in columns] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, (h, _) in enumerate(columns)]
    lines = ["  ".join(h.upper().ljust(w) for (h, _), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


TIMES: Mapping[str, Callable[[Any], str]] = {
    key: when for key in ("since", "valid_from", "valid_until", "created_at", "ts", "made_at",
                          "expires_at")}

ALLOC_COLUMNS = [("id", "id"), ("di", "di"), ("resource", "resource"), ("region", "region"),
                 ("state", "state"), ("from (utc)", "valid_from"),
                 ("until (utc)", "valid_until"), ("gen", "generation"), ("pinned", "pinned"),
                 ("reason", "reason")]
ALLOC_FORMATS: Mapping[str, Callable[[Any], str]] = {**TIMES, "reason": reason_words}


class Progress:
    """`done/total` of a long command on stderr, at most every `every` seconds and at the
    end, so stdout stays the result alone (pipe it, or `--json`)."""

    def __init__(self, what: str, unit: str, every: float = 2.0,
                 stream: TextIO | None = None) -> None:
        self.what = what
        self.unit = unit
        self.every = every
        self.stream = stream if stream is not None else sys.stderr
        self.began = time.monotonic()
        self.last = -math.inf

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        share = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"{self.what}: {done:,}/{total:,} {self.unit}{share}, "
              f"{now - self.began:.0f}s", file=self.stream, flush=True)
