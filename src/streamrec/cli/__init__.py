"""The ``streamrec`` command line: one sub-command per job, each with ``--help``.

Each module adds its commands; every handler runs inside one error wrapper,
so a problem the user can fix prints ``error: …`` and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from streamrec.cli import bench, data, experiments, models, privacy, serve, sources
from streamrec.cli.common import CommandError
from streamrec.home import UpdateInProgress

# What a user can fix: a wrong argument or value, a missing file, home, model or version.
USER_ERRORS = (ValueError, FileNotFoundError, LookupError, UpdateInProgress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="A recommender whose deep model keeps learning from a live event stream.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], None] | None, help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    for module in (data, sources, models, experiments, privacy, serve, bench):
        module.add_commands(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code
    except KeyError as error:  # a registry lookup: its message is the first argument
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
