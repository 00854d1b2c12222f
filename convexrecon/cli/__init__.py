"""The command-line interface: ``python -m convexrecon <command> ...`` (or ``convexrecon <command>``).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``,
which registers the command and sets ``handler(args) -> int`` as its
default (bound to its own subparser, so it can report usage errors);
:func:`main` parses and dispatches. Usage errors exit with code 2. Warnings
are printed as one line each, ``warning: <message> [<category>]``.
No library module imports this package.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from convexrecon.cli import evaluate, prepare, reconstruct, train
from convexrecon.cli.common import readable_warnings

COMMANDS = (prepare, train, reconstruct, evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The ``convexrecon`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="convexrecon", description="Convex, layer-wise training of neural MRI reconstruction."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with readable_warnings():  # one line each: "warning: <message> [<category>]"
        return int(args.handler(args))
