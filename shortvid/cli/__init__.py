"""The ``shortvid`` command: a thin layer over the Python API, one subcommand per job.

Each module of this package holds a few subcommands, each as its ``*_arguments`` (the options) beside
its ``cmd_*`` (the handler); ``options`` holds the option groups several of them share.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .. import __version__
from . import data, demo, evaluate, serve, train

COMMAND_MODULES = (data, train, evaluate, serve, demo)  # the order `shortvid --help` lists them in


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser, given its arguments when it is first used (to parse or to print help), so
    that building the whole command line imports no more than the command run needs: ``fuse`` reads its
    rules from shortvid.models and ``export`` its opset from shortvid.export, both of which load torch."""

    def __init__(self, *args, arguments: Callable[[argparse.ArgumentParser], None], **kwargs):
        super().__init__(*args, **kwargs)
        self._add_arguments = arguments

    def _ensure_arguments(self) -> None:
        if self._add_arguments is not None:
            add, self._add_arguments = self._add_arguments, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._ensure_arguments()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._ensure_arguments()
        return super().format_usage()

    def format_help(self) -> str:
        self._ensure_arguments()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    """The ``shortvid`` parser: every subcommand, its handler in ``args.handler``."""
    parser = argparse.ArgumentParser(prog="shortvid", description="Real-time short-video classification on keyframes.")
    parser.add_argument("--version", action="version", version=f"shortvid {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=CommandParser)
    for module in COMMAND_MODULES:
        module.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``shortvid`` command line; the exit status (2: a usage error or a ``ShortvidError``)."""
    from ..errors import ShortvidError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options too (`finetune RUN --out X optim.lr=0.1`)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ShortvidError as error:
        print(f"shortvid {args.command}: error: {error}", file=sys.stderr)
        return 2
