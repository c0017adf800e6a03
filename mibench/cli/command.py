"""What one ``mibench`` subcommand is: a name, help, runnable examples, its arguments and its runner.

Each module of :mod:`mibench.cli` defines one :class:`Command` named ``COMMAND``; the package's
``main`` collects them. Command modules import nothing heavy at module level (``mibench --help`` and
``mibench ls`` stay torch-free): their ``run`` functions import what they need.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PROG = "mibench"


@dataclass(frozen=True)
class Command:
    """One ``mibench`` subcommand."""

    name: str
    help: str
    examples: tuple[tuple[str, str], ...]  # (command line, what it does); every example parses
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def format_examples(examples: Sequence[tuple[str, str]]) -> str:
    """The ``examples:`` block of a help epilog, comments aligned."""
    width = max(len(cmd) for cmd, _ in examples)
    lines = ["examples:"]
    for cmd, what in examples:
        lines.append(f"  {cmd.ljust(width)}  # {what}" if what else f"  {cmd}")
    return "\n".join(lines)


def action_parser(actions: argparse._SubParsersAction, name: str, help_text: str, description: str,
                  examples: Sequence[tuple[str, str]] = ()) -> argparse.ArgumentParser:
    """A sub-action (``leaderboard build``, ``submission check``) with its own examples in its help."""
    parser = actions.add_parser(name, help=help_text, description=description,
                                epilog=format_examples(examples) if examples else None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_logging_arguments(parser)
    return parser


def add_logging_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """-v/--verbose and -q/--quiet (on the top-level parser with ``prefix`` "top_", so a command's own
    defaults cannot overwrite them)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", dest=f"{prefix}verbose", action="store_true",
                       help="also log debugging details (phase timings, model loading) on stderr")
    group.add_argument("-q", "--quiet", dest=f"{prefix}quiet", action="store_true",
                       help="no progress bars and no informational messages; only warnings and errors")
