"""The `shadowdns` argument tree: help on every flag, global flags anywhere, durations."""

from __future__ import annotations

import argparse

import pytest

from shadowdns.cli import _subparsers, build_parser


def _every_parser() -> list[argparse.ArgumentParser]:
    parser = build_parser()
    return [parser, *_subparsers(parser)]


def test_every_flag_and_argument_has_help() -> None:
    """Walk every (sub)command: each option and positional says what it is for."""
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for parser in _every_parser()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction) and not action.help
    ]
    assert missing == []


def test_the_walk_reaches_nested_actions() -> None:
    """The help test above sees `alloc list` and `token create`, not only the top level."""
    progs = {parser.prog for parser in _every_parser()}
    assert {"shadowdns alloc list", "shadowdns token create", "shadowdns serve"} <= progs


@pytest.mark.parametrize(
    ("argv", "level", "fmt"),
    [
        (["check", "z"], "INFO", "text"),
        (["--log-level", "DEBUG", "check", "z"], "DEBUG", "text"),
        (["check", "z", "--log-level", "ERROR"], "ERROR", "text"),
        (["--log-format", "json", "check", "z"], "INFO", "json"),
        (["--log-level", "DEBUG", "check", "z", "--log-format", "json"], "DEBUG", "json"),
        (["alloc", "list", "--log-level", "WARNING"], "WARNING", "text"),
    ],
)
def test_global_flags_work_before_and_after_the_subcommand(
    argv: list[str], level: str, fmt: str
) -> None:
    """A flag before the subcommand is kept; one after it is taken; default INFO, text."""
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, fmt)


@pytest.mark.parametrize(
    ("argv", "dest", "seconds"),
    [
        (["alloc", "pin", "d.", "r", "g", "--hold", "2m"], "hold", 120.0),
        (["alloc", "pin", "d.", "r", "g", "--hold", "90"], "hold", 90.0),
        (["serve", "--flush-interval", "30s"], "flush_interval", 30.0),
        (["forecast", "run", "--every", "5m"], "every", 300.0),
        (["forecast", "run", "--refit-every", "1d"], "refit_every", 86400.0),
        (["simulate", "--trace", "t.csv", "--min-hold", "1h"], "min_hold", 3600.0),
    ],
)
def test_duration_flags_take_units(argv: list[str], dest: str, seconds: float) -> None:
    """Every flag that takes a length of time reads `2m`, `1h`, `1d` and plain seconds."""
    assert getattr(build_parser().parse_args(argv), dest) == seconds


def test_a_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--hold 2weeks` exits 2 naming the value and the accepted forms."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["alloc", "pin", "d.", "r", "g", "--hold", "2weeks"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--hold" in err and "'2weeks'" in err and "15m" in err
