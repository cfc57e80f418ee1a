"""Subcommands of the predictor part (registered by shadowdns.cli)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: "argparse._SubParsersAction[Any]") -> None:
    """Add this part's subcommands (none yet)."""
