"""The one duration syntax: seconds, or a number with s, m, h or d (`90s`, `15m`, `2d`).

Policy files, `allocator.yaml` and every CLI flag that takes a length of time read it with
`parse_duration`, so a value that works in one place works in all of them.
"""

from __future__ import annotations

import argparse
import math
import re

__all__ = ["duration_arg", "parse_duration"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number or text like `15m`; raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration (use seconds or 90s, 15m, 2h, 1d)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a duration")
    return seconds


def duration_arg(text: str) -> float:
    """`parse_duration` as an argparse `type=`: a bad value is a usage error naming it."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
