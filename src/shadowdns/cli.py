"""The `shadowdns` command: one entry point whose subcommands each part registers.

Each part keeps its own subcommands in a `commands` module with a `register(subparsers)`
function, so the parts stay independent and this file only fixes their order.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shadowdns import __version__
from shadowdns.errors import ShadowDNSError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shadowdns",
        description="A predictive, geo-aware authoritative DNS server.",
    )
    parser.add_argument("--version", action="version", version=f"shadowdns {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
