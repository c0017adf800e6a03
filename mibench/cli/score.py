"""``mibench score``: score an MIB circuit/importance file, or saved featurizers, exactly as a submission is."""

from __future__ import annotations

import argparse

from mibench.cli.command import Command
from mibench.cli.options import LEVELS, add_causal_arguments, add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("circuit_file", metavar="PATH", help="MIB importance/circuit file (.json, .pt, .safetensors); "
                        "with --track causal, a folder of saved featurizers (L<layer>_<role>.json + .safetensors)")
    parser.add_argument("--track", choices=("circuit", "causal"), default="circuit",
                        help="what PATH holds: circuit scores (default) or causal-track featurizers")
    parser.add_argument("--level", choices=LEVELS, help="check the file holds this level's scores")
    add_model_arguments(parser)
    add_causal_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from mibench.cli.options import default_model
    from mibench.cli.output import run_and_report
    from mibench.submissions.file_rules import check_score_path

    # the file rules every path applies to files from outside, before the model is loaded
    check_score_path(args.track, args.circuit_file, task=args.task, model=args.model or default_model(),
                     variable=args.variable)
    return run_and_report(args, circuit={"circuit_file": args.circuit_file},
                          causal={"featurizer_dir": args.circuit_file})


COMMAND = Command(
    name="score",
    help="score an MIB circuit or importance file from anyone (the way submissions are scored)",
    description="Evaluate the scores in an MIB-format file (.json/.pt/.safetensors) exactly as "
    "'mibench evaluate' evaluates a method's scores; with --track causal, score a folder of saved "
    "featurizers exactly as 'mibench evaluate --track causal' scores trained ones.",
    examples=(
        ("mibench score results/ioi/gpt2-tasks/eap_edge_patching_test_seed0/scores.json --task ioi",
         "re-score a saved importance file"),
        ("mibench score importances.pt --task ioi --model gpt2", "an MIB .pt file for GPT-2"),
        ("mibench score scores.json --task ioi --format json", "the summary as JSON on stdout"),
        ("mibench score --track causal results/mcqa/gpt2-tasks/causal_answer_pointer_das_test_seed0/featurizers "
         "--task mcqa --variable answer_pointer", "re-score saved (or submitted) featurizers"),
    ),
    add_arguments=add_arguments,
    run=run,
)
