"""The `shadowdns` command: one entry point whose subcommands each part registers.

Each part keeps its own subcommands in a `commands` module with a `register(subparsers)`
function, so the parts stay independent and this file only fixes their order.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from shadowdns import __version__
from shadowdns.errors import ShadowDNSError
from shadowdns.logs import LOG_FORMATS, LOG_LEVELS, setup_logging

# The order in which subcommand groups appear in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "shadowdns.resolver.commands",
    "shadowdns.zones.dnssec_commands",
    "shadowdns.store.commands",
    "shadowdns.predictor.commands",
    "shadowdns.allocator.commands",
    "shadowdns.allocator.simulate_cmd",
    "shadowdns.demo",
    "shadowdns.api.commands",
)


def _add_global_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """The flags every command takes. Subcommands get them with SUPPRESS defaults, so
    `shadowdns serve --log-level DEBUG` and `shadowdns --log-level DEBUG serve` are the same
    and a flag given before the subcommand is not reset by the subcommand's parser."""
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS,
        default="INFO" if defaults else argparse.SUPPRESS,
        help="log level (default INFO); DEBUG also shows the HTTP libraries' request lines",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS,
        default="text" if defaults else argparse.SUPPRESS,
        help="text lines (default) or one JSON object per line",
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser` (each subcommand, at every depth), once each."""
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                out += [child, *_subparsers(child)]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowdns",
        description="A predictive, geo-aware authoritative DNS server.",
    )
    parser.add_argument("--version", action="version", version=f"shadowdns {__version__}")
    _add_global_flags(parser, defaults=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    for child in _subparsers(parser):
        _add_global_flags(child, defaults=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        rc: int = handler(args)
    except ShadowDNSError as exc:
        print(f"shadowdns: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
