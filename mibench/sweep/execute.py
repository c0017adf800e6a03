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
    from mibench.commands_circuit import evaluate_arguments

    if argv[:2] != ["mibench", "evaluate"]:
        raise MibenchError(f"not a 'mibench evaluate' command line: {' '.join(argv[:2])!r}")
    parser = argparse.ArgumentParser(prog="mibench evaluate", exit_on_error=False, add_help=False)
    evaluate_arguments(parser)
    try:
        return parser.parse_args(argv[2:])
    except (argparse.ArgumentError, SystemExit) as exc:  # required flags missing exit even without exit_on_error
        raise MibenchError(f"'mibench evaluate' arguments do not parse: {exc}") from None


def run_one(run: Run) -> Path:
    """Evaluate ``run`` and write its record (atomically, as ``mibench evaluate`` does); returns its path."""
    from mibench.method_registry import parse_method_args

    argv = run.argv()
    args = evaluate_namespace(argv)
    common = dict(task=args.task, model=args.model, method=args.method,
                  method_args=parse_method_args(args.method_arg), split=args.split, limit=args.limit,
                  batch_size=args.batch_size, seed=args.seed, bootstrap=args.bootstrap, device=args.device,
                  dtype=args.dtype, revision=args.revision, output_dir=args.output_dir, progress=False,
                  invocation=argv)
    if args.track == "causal":
        from mibench.causal.run import CausalRequest, run_causal_evaluation

        request = CausalRequest(variable=args.variable, layers=args.layers, positions=args.positions,
                                train_examples=args.train_examples, sae_dir=args.sae_dir,
                                save_featurizers=not args.no_featurizers, **common)
        return run_causal_evaluation(request).record_path
    from mibench.circuits.run import EvaluationRequest, run_evaluation

    request = EvaluationRequest(level=args.level, ablation=args.ablation, counterfactual=args.counterfactual,
                                attribution_examples=args.attribution_examples, baseline=not args.no_baseline,
                                **common)
    return run_evaluation(request).record_path


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
