"""Subcommands of the store part (registered by shadowdns.cli): `shadowdns traffic ...`.

`--state PATH` (or a `sqlite:///` URL) names the store for every command that needs one;
other parts add it with `add_state_argument` so it reads the same everywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from shadowdns.errors import ConfigError, Problem, StoreError
from shadowdns.output import Progress
from shadowdns.secret_files import read_secret_file
from shadowdns.store.base import RESOLUTIONS, DemandRow, Store
from shadowdns.store.factory import default_state_path, open_store, sqlite_path
from shadowdns.store.traffic_csv import (
    iter_export_rows,
    parse_timestamp,
    read_traffic,
    write_traffic,
)

_FAR_FUTURE = float(2**62)


def add_state_argument(parser: argparse.ArgumentParser, *, creates: bool = False) -> None:
    """Add `--state PATH` and `--state-file FILE` (the store to use), and, unless the
    command `creates` its store (serve, demo), `--create`: a command that reads state
    refuses a database that does not exist, so a typo or another working directory is an
    error, not a new empty database."""
    parser.add_argument(
        "--state", "--store",
        dest="state",
        metavar="PATH",
        default=None,
        help="state store: a SQLite path, sqlite:///PATH or postgresql://..."
        " (default: $SHADOWDNS_STATE, else $XDG_DATA_HOME/shadowdns/state.db)",
    )
    parser.add_argument(
        "--state-file", "--store-url-file",
        dest="state_file",
        metavar="FILE",
        default=None,
        help="read the store path or URL from this file (keeps a database password off"
        " the command line and out of `ps`)",
    )
    if creates:
        parser.set_defaults(create=True)
    else:
        parser.add_argument("--create", action="store_true",
                            help="create the state database if it does not exist")


def state_location(args: argparse.Namespace) -> str:
    """The store named by `--state`, else by `--state-file`, else the default one."""
    state: str | None = getattr(args, "state", None)
    if state:
        return state
    state_file: str | None = getattr(args, "state_file", None)
    if state_file:
        return read_secret_file(state_file, "--state-file")
    return default_state_path()


def open_state(args: argparse.Namespace, **options: Any) -> Store:
    """Open the store of `--state`; a missing SQLite file is an error unless `--create`."""
    location = state_location(args)
    path = sqlite_path(location)
    if (not getattr(args, "create", False) and path is not None and path != ":memory:"
            and not os.path.exists(path)):
        raise StoreError(f"no state database at {os.path.abspath(path)}; give the --state "
                         "the server uses, or --create to make a new one")
    return open_store(location, **options)


def _timestamp_arg(text: str) -> float:
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `traffic import` and `traffic export`."""
    traffic = subparsers.add_parser(
        "traffic",
        help="import or export demand history as CSV",
        description="Move demand history (timestamp,di,region,queries) in and out of the"
        " state database.",
    )
    traffic.set_defaults(handler=lambda _args: _usage(traffic))
    actions = traffic.add_subparsers(dest="traffic_action", metavar="ACTION")

    importer = actions.add_parser(
        "import",
        help="add history from a CSV file",
        description="Add queries from CSV rows timestamp,di,region,queries (header optional;"
        " ISO 8601 timestamps, UTC when no offset) to the minute buckets as primary"
        " answers, then roll them up. Counts add to what is stored: importing a file twice"
        " counts it twice. A file with any bad row is rejected whole, listing every bad"
        " line.",
    )
    importer.add_argument("file", metavar="FILE.csv", help="CSV file, or - for stdin")
    add_state_argument(importer, creates=True)  # it writes history; a new store is its use
    importer.set_defaults(handler=import_command)

    exporter = actions.add_parser(
        "export",
        help="write history as CSV to stdout",
        description="Write stored demand (all kinds summed) as CSV rows"
        " timestamp,di,region,queries, ordered by time.",
    )
    exporter.add_argument(
        "--resolution",
        choices=RESOLUTIONS,
        default="minute",
        help="bucket size to export (default minute)",
    )
    exporter.add_argument(
        "--since",
        metavar="T",
        type=_timestamp_arg,
        default=None,
        help="only buckets starting at or after T (ISO 8601, UTC when no offset)",
    )
    add_state_argument(exporter)
    exporter.set_defaults(handler=export_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _open_input(name: str) -> IO[str]:
    if name == "-":
        return sys.stdin
    try:
        return open(name, encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError([Problem(name, None, f"cannot read: {exc.strerror}")]) from exc


def import_command(args: argparse.Namespace) -> int:
    """`shadowdns traffic import FILE.csv`: check every row, then write all or nothing."""
    source: str = args.file
    stream = _open_input(source)
    try:
        rows = read_traffic(stream, "<stdin>" if source == "-" else source)
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem(source, None, f"not UTF-8 text: {exc.reason}")]) from exc
    finally:
        if stream is not sys.stdin:
            stream.close()
    store = open_state(args)
    progress = Progress("traffic import", "rows")

    def demand() -> Iterator[DemandRow]:
        for done, row in enumerate(rows):
            if done % 10_000 == 0:
                progress(done, len(rows))
            yield DemandRow(row.di, row.region, int(row.ts), "primary", row.queries)
        progress(len(rows), len(rows))

    try:
        store.add_demand(demand())
        store.rollup(time.time())
    finally:
        store.close()
    series = len({(row.di, row.region) for row in rows})
    print(f"imported {len(rows)} rows of {series} series into {state_location(args)}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """`shadowdns traffic export`: stored demand as CSV on stdout."""
    store = open_state(args)
    try:
        since = 0.0 if args.since is None else args.since
        series = store.demand_series(args.resolution, since, _FAR_FUTURE)
    finally:
        store.close()
    try:
        write_traffic(iter_export_rows(series), sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0
