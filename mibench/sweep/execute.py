"""The one place where a sweep run becomes an evaluation: :func:`run_one` (and :func:`execute`, its worker wrapper).

A run is exactly the ``mibench evaluate`` command of :meth:`Run.argv`: the same runner, the same defaults for
what the spec leaves unset, the same atomic record write, and that command line as the record's
``invocation`` -- so a sweep record and a record made by hand with that command are interchangeable.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mibench.errors import MibenchError
from mibench.sweep.expand import Run


def evaluate_namespace(argv: list[str]) -> argparse.Namespace:
    """``mibench evaluate`` arguments (``argv`` from ``"mibench", "evaluate"`` on) parsed as that command does,
    defaults filled in. Raises MibenchError when they do not parse."""
    from mibench.cli.command import add_logging_arguments
    from mibench.cli.evaluate import add_arguments

    if argv[:2] != ["mibench", "evaluate"]:
        raise MibenchError(f"not a 'mibench evaluate' command line: {' '.join(argv[:2])!r}")
    parser = argparse.ArgumentParser(prog="mibench evaluate", exit_on_error=False, add_help=False)
    add_arguments(parser)
    add_logging_arguments(parser)
    try:
        return parser.parse_args(argv[2:])
    except (argparse.ArgumentError, SystemExit) as exc:  # required flags missing exit even without exit_on_error
        raise MibenchError(f"'mibench evaluate' arguments do not parse: {exc}") from None


def run_one(run: Run) -> Path:
    """Evaluate ``run`` and write its record (atomically, as ``mibench evaluate`` does); returns its path."""
    from mibench.cli.evaluate import request_fields
    from mibench.cli.output import run_request

    argv = run.argv()
    args = evaluate_namespace(argv)
    args.quiet = True  # no progress bars inside workers
    return run_request(args, command_line=argv, **request_fields(args)).record_path


def execute(run: Run, cwd: str | None = None) -> tuple[str, float]:
    """What a sweep worker runs: :func:`run_one` in ``cwd`` (the folder ``mibench sweep`` was started in, which
    relative paths of the spec refer to, as they do for ``mibench evaluate``) on exactly ``run.threads`` torch
    threads, reusing the model the worker process loaded last. Returns (record path, wall seconds)."""
    import torch

    from mibench.models.loading import keep_loaded_models

    if cwd is not None:
        try:
            os.chdir(cwd)
        except OSError as exc:
            raise MibenchError(f"cannot enter {cwd} on this worker ({exc.strerror}); the nodes of a Ray cluster need "
                               "the folder mibench sweep runs in (and the spec's paths) at the same place, e.g. a "
                               "shared file system") from None
    torch.set_num_threads(run.threads)
    keep_loaded_models()
    start = time.perf_counter()
    path = run_one(run)
    return str(path), time.perf_counter() - start
