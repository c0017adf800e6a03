"""The ``mibench`` command line: one module per command, collected into :data:`COMMANDS`.

Each command module (``evaluate``, ``score``, ``sweep``, ``leaderboard``, ``submission``, ``schema``, ``ls``)
defines a :class:`~mibench.cli.command.Command` named ``COMMAND``: a name, a one-line help, runnable
examples (``tests/test_packaging.py`` parses every one), a function that adds its arguments and one that
runs it. To add a command, write such a module and append its ``COMMAND`` here. Keep heavy imports
(torch, transformers) inside the ``run`` functions: ``mibench ls`` and ``mibench --help`` stay torch-free.

:func:`main` owns what every command shares: ``--verbose``/``--quiet`` logging on stderr, and turning
user mistakes into one ``mibench: error: ...`` line instead of a traceback. A command reports a user
error by raising :class:`mibench.errors.MibenchError` (exit status 2); Ctrl-C prints one line and exits
130, and since runs publish their files only when finished, nothing partial is left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from mibench import __version__
from mibench.cli import evaluate, leaderboard, ls, plan, schema, score, submission, sweep
from mibench.cli.command import PROG, Command, add_logging_arguments, format_examples
from mibench.errors import MibenchError

COMMANDS: list[Command] = [evaluate.COMMAND, score.COMMAND, sweep.COMMAND, leaderboard.COMMAND,
                           submission.COMMAND, schema.COMMAND, ls.COMMAND, plan.COMMAND]

#: Exit statuses: a user mistake, Ctrl-C (128 + SIGINT, as shells report it), a closed pipe (128 + SIGPIPE).
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

log = logging.getLogger("mibench")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line that says where to look (not the whole usage block)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    top_examples = [cmd.examples[0] for cmd in COMMANDS] + [(f"{PROG} --version", "print the version")]
    parser = Parser(
        prog=PROG,
        description="mibench: a benchmark harness for mechanistic interpretability "
        "(circuit localization and causal variable localization).",
        epilog=format_examples(top_examples) + f"\n\nRun '{PROG} <command> --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    add_logging_arguments(parser, prefix="top_")
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description or cmd.help,
                           epilog=format_examples(cmd.examples), formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)
        if not p._subparsers:  # commands with actions (leaderboard build) get them on each action's parser
            add_logging_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so redirection and test capture see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover (logging must never raise)
            self.handleError(record)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"{PROG}: error: {message}"
        if record.levelno >= logging.WARNING:
            return f"{PROG}: warning: {message}"
        return message


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """One stderr handler on the ``mibench`` logger: INFO by default, DEBUG with -v, WARNING with -q."""
    for handler in [h for h in log.handlers if isinstance(h, _StderrHandler)]:
        log.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mibench`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage mistake (already printed, one line)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    args.verbose = getattr(args, "verbose", False) or args.top_verbose
    args.quiet = getattr(args, "quiet", False) or args.top_quiet
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return int(run(args) or 0)
    except MibenchError as exc:  # errors meant for the user (bad file, unknown name): no traceback
        log.error("%s", exc)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        log.error("interrupted; no results were written")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `mibench ls | head`: stop quietly like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


__all__ = ["COMMANDS", "PROG", "Command", "build_parser", "configure_logging", "main"]
