"""The README's command lines work as printed from a fresh clone: `./shadowdns` (not a bare
`shadowdns`, which is on no PATH there), `.venv/bin/python` for benchmarks, and every
`./shadowdns` line parses with today's arguments."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from shadowdns.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md"]


def _command_lines(path: Path) -> list[str]:
    """Shell lines of the ```sh / ```console blocks, continuations joined, prompts cut."""
    lines: list[str] = []
    block: str | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            block = raw[3:].strip() if block is None else None
            continue
        if block not in ("sh", "console"):
            continue
        if block == "console" and not raw.startswith("$ "):
            continue  # output
        text = pending + raw.removeprefix("$ ")
        if text.endswith("\\"):
            pending = text[:-1] + " "
            continue
        pending = ""
        if text.strip():
            lines.append(text.strip())
    return lines


README_LINES = _command_lines(ROOT / "README.md")


def test_readme_has_command_lines() -> None:
    assert len(README_LINES) > 20


@pytest.mark.parametrize("line", README_LINES)
def test_no_command_needs_an_activated_venv(line: str) -> None:
    """`shadowdns` and `python` are not on PATH after set-up; the README says how instead."""
    first = line.split()[0]
    assert first not in ("shadowdns", "python", "python3", "pip"), line


@pytest.mark.parametrize("line", [line for doc in DOCS for line in _command_lines(doc)
                                  if re.match(r"(\./)?shadowdns ", line)])
def test_documented_cli_lines_parse(line: str) -> None:
    """Each documented `shadowdns` line is accepted by the parser (placeholders aside)."""
    if "[" in line or "..." in line or "{" in line or "|" in line.split("#")[0]:
        pytest.skip("a synopsis with optional parts, not a literal command")
    words = shlex.split(line.split(" #", 1)[0].rstrip(" &"))
    build_parser().parse_args(words[1:])
