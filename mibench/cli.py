"""The ``mibench`` command line.

Every subcommand is one :class:`Command` entry in :data:`COMMANDS`: a name, a one-line help, runnable
examples, a function that adds its arguments and a function that runs it. To add a subcommand (the
planned ones are ``evaluate``, ``score``, ``leaderboard build`` and ``submission check``), write those
two functions and append a ``Command``; commands with their own sub-actions (``leaderboard build``)
add a nested subparser inside their ``add_arguments``. Keep heavy imports (torch, transformers) inside
the ``run`` functions: ``mibench ls`` and ``mibench --help`` must stay torch-free and fast. A ``run``
function reports a user error by raising :class:`mibench.errors.MibenchError` (printed without a
traceback, exit status 2).

``mibench ls`` lists things by kind through :data:`LISTINGS`; new kinds (tasks, methods) are new entries.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mibench import __version__
from mibench.commands_circuit import evaluate_arguments, run_evaluate, run_score, score_arguments
from mibench.commands_leaderboard import (
    LEADERBOARD_DESCRIPTION,
    LEADERBOARD_EXAMPLES,
    LEADERBOARD_HELP,
    SUBMISSION_DESCRIPTION,
    SUBMISSION_EXAMPLES,
    SUBMISSION_HELP,
    leaderboard_arguments,
    run_leaderboard,
    run_submission,
    submission_arguments,
)
from mibench.commands_schema import SCHEMA_DESCRIPTION, SCHEMA_EXAMPLES, SCHEMA_HELP, run_schema, schema_arguments
from mibench.commands_sweep import SWEEP_DESCRIPTION, SWEEP_EXAMPLES, SWEEP_HELP, sweep_arguments
from mibench.commands_sweep import run as run_sweep
from mibench.errors import MibenchError

PROG = "mibench"


@dataclass(frozen=True)
class Command:
    """One ``mibench`` subcommand."""

    name: str
    help: str
    examples: tuple[tuple[str, str], ...]  # (command line, what it does)
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


def _format_examples(examples: Sequence[tuple[str, str]]) -> str:
    width = max(len(cmd) for cmd, _ in examples)
    lines = ["examples:"]
    for cmd, what in examples:
        lines.append(f"  {cmd.ljust(width)}  # {what}" if what else f"  {cmd}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- ls
TABLE_FORMATS = ("simple", "github", "plain", "grid", "latex", "tsv")
WRAPPED_FORMATS = ("simple", "plain", "grid")  # formats for reading in a terminal; others stay one row per line


def _list_models(args: argparse.Namespace) -> int:
    """Supported architecture families and the size of MIB's graph for each reference model."""
    from tabulate import tabulate

    from mibench.graph.layout import GraphLayout
    from mibench.models.families import FAMILIES

    rows = []
    for family in FAMILIES:
        layout = GraphLayout(**family.reference_sizes)
        rows.append(
            [
                family.name,
                ", ".join(family.model_types),
                family.reference_model,
                layout.n_forward,
                layout.n_backward,
                layout.n_edges,
                family.notes,
            ]
        )
    headers = ["family", "HF model_type", "reference model", "nodes", "dest. slots", "edges", "notes"]
    human = args.format in WRAPPED_FORMATS
    wrap = [None] * 6 + [args.notes_width] if human else None
    intfmt = "" if args.format == "tsv" else ","  # thousands separators, except in machine-read TSV
    print(tabulate(rows, headers=headers, tablefmt=args.format, intfmt=intfmt, maxcolwidths=wrap))
    if human:
        print(
            "\nnodes = source nodes (input, attention heads, MLPs); dest. slots = q/k/v inputs of each head, "
            "MLP inputs and logits;\nedges = MIB edge count of the reference model's graph."
        )
    _list_zoo_models(args)
    return 0


def _list_zoo_models(args: argparse.Namespace) -> None:
    """The embedded models shipped in the package, with test accuracy per task (from their cards)."""
    from tabulate import tabulate

    from mibench.graph.layout import GraphLayout
    from mibench.zoo.catalog import DEFAULT_MODEL, list_models, list_planted

    rows = []
    for model in [*list_models(), *list_planted()]:
        layout = GraphLayout(n_layers=model.layers, n_heads=model.heads, d_model=model.width)
        accuracy = ", ".join(f"{task} {value:.3f}" for task, value in model.test_accuracy().items())
        name = model.name + (" (default)" if model.name == DEFAULT_MODEL else "")
        if model.planted:
            name += f" (planted circuit: {', '.join(model.known_circuits) or '?'})"
        shape = f"L{model.layers} H{model.heads}" + (f"/KV{model.kv_heads}" if model.kv_heads != model.heads else "")
        rows.append([name, model.family, f"{shape} d{model.width}", f"{model.parameters:,}",
                     f"{model.size_bytes / 1e6:.1f} MB", layout.n_edges, accuracy])
    if not rows:
        return
    headers = ["embedded model", "family", "shape", "params", "size", "edges", "test accuracy per task"]
    wrap = [None] * 6 + [args.notes_width] if args.format in WRAPPED_FORMATS else None
    print()
    print(tabulate(rows, headers=headers, tablefmt=args.format, maxcolwidths=wrap, disable_numparse=True))


def _list_tasks(args: argparse.Namespace) -> int:
    """Registered tasks from their cards (task code is not imported)."""
    from tabulate import tabulate

    from mibench.data.registry import list_cards

    rows = []
    for card in list_cards():
        sizes = ", ".join(f"{split} {size:,}" for split, size in card.splits.items())
        official = card.official.hf_repo if card.official else "-"
        # the causal track's --variable choices and token positions (the card's other variables are the
        # recorded inputs its causal model reads)
        causal = (f"{', '.join(card.causal.variables)} @ {', '.join(card.causal.positions)}"
                  if card.causal is not None else "-")
        rows.append([card.id, str(card.version), card.metric, ", ".join(card.counterfactuals), sizes, causal,
                     official])
    headers = ["task", "version", "metric", "counterfactuals", "split sizes", "causal variables @ positions",
               "official data"]
    human = args.format in WRAPPED_FORMATS
    wrap = [None, None, None, 34, 40, 30, None] if human else None
    # disable_numparse keeps versions like "1.10" as written
    print(tabulate(rows, headers=headers, tablefmt=args.format, maxcolwidths=wrap, disable_numparse=True))
    return 0


def _list_methods(args: argparse.Namespace) -> int:
    """Registered methods from their cards (method code is not imported)."""
    from tabulate import tabulate

    from mibench.method_registry import list_method_cards

    rows = []
    for card in list_method_cards():
        arguments = ", ".join(f"{name}={arg.default}" for name, arg in card.arguments.items()) or "-"
        paper = f"{card.paper.authors} {card.paper.year}" if card.paper else "-"
        circuit = card.track == "circuit"  # levels and ablations mean nothing to a featurizer
        rows.append([card.id, card.track, card.name, ", ".join(card.levels) if circuit else "-",
                     ", ".join(card.ablations) if circuit else "-", arguments, paper])
    headers = ["method", "track", "name", "levels", "ablations", "arguments", "paper"]
    wrap = [None, None, 28, None, 22, 28, 24] if args.format in WRAPPED_FORMATS else None
    print(tabulate(rows, headers=headers, tablefmt=args.format, maxcolwidths=wrap, disable_numparse=True))
    return 0


# kind -> (one-line description, function). New kinds (tasks, methods, ...) are new entries here.
LISTINGS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "models": ("supported architecture families with MIB graph sizes, and the embedded models", _list_models),
    "tasks": ("registered tasks: version, metric, counterfactual kinds, split sizes", _list_tasks),
    "methods": ("registered methods: levels, ablations, arguments, paper", _list_methods),
}


def _ls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "kind",
        nargs="?",
        default="models",
        choices=sorted(LISTINGS),
        help="what to list (default: models). "
        + "; ".join(f"{kind}: {desc}" for kind, (desc, _) in sorted(LISTINGS.items())),
    )
    parser.add_argument(
        "--format",
        default="simple",
        choices=TABLE_FORMATS,
        help="table format (default: simple; github gives Markdown)",
    )
    parser.add_argument(
        "--notes-width",
        type=int,
        default=60,
        metavar="N",
        help="wrap the notes column at N characters in simple/plain/grid tables (default: 60)",
    )


def _ls_run(args: argparse.Namespace) -> int:
    _, func = LISTINGS[args.kind]
    return func(args)


# ----------------------------------------------------------------------------------- command table
COMMANDS: list[Command] = [
    Command(
        name="evaluate",
        help="run a method on a task and score it: circuits (CPR, CMD) or causal variables (IIA)",
        description="Circuit track (default): score the model's graph with a method on train examples, keep the "
        "top 0.1%%..100%% of it, ablate the rest with counterfactual activations on the evaluation split, and "
        "report faithfulness, CPR and CMD with bootstrap standard errors. Writes record.json, scores.json "
        "(MIB format) and faithfulness.png under --output-dir. Causal track (--track causal): fit and train the "
        "featurizer at every (layer, token role) on train pairs, and report interchange intervention accuracy "
        "per site, per layer, and its average and best over layers. Writes record.json, iia_heatmap.png and "
        "the trained featurizers (safetensors + JSON cards).",
        examples=(
            ("mibench evaluate --method eap-ig-inputs --task ioi", "the embedded model, IOI, EAP-IG"),
            ("mibench evaluate --method eap --task mcqa --ablation mean", "EAP with mean ablation"),
            ("mibench evaluate --method nap --level neuron --task arithmetic_addition", "neuron-level NAP"),
            ("mibench evaluate --method eap-ig-inputs --method-arg ig_steps=20 --task ioi --model gpt2",
             "a hub model, more IG steps"),
            ("mibench evaluate --method exact --task ioi --limit 100 --format github", "quick look, Markdown"),
            ("mibench evaluate --track causal --method das --task mcqa --variable answer_pointer",
             "causal track: DAS, IIA over layers x positions"),
            ("mibench evaluate --track causal --method dbm-sae --task arithmetic_addition --variable ones_carry "
             "--layers 1,2", "DBM over SAE latents at two layers"),
        ),
        add_arguments=evaluate_arguments,
        run=run_evaluate,
    ),
    Command(
        name="score",
        help="score an MIB circuit or importance file from anyone (the way submissions are scored)",
        description="Evaluate the scores in an MIB-format file (.json/.pt/.safetensors) exactly as "
        "'mibench evaluate' evaluates a method's scores.",
        examples=(
            ("mibench score results/ioi/gpt2-tasks/eap_edge_patching_test_seed0/scores.json --task ioi",
             "re-score a saved importance file"),
            ("mibench score importances.pt --task ioi --model gpt2", "an MIB .pt file for GPT-2"),
            ("mibench score --track causal results/mcqa/gpt2-tasks/causal_answer_pointer_das_test_seed0/featurizers "
             "--task mcqa --variable answer_pointer", "re-score saved (or submitted) featurizers"),
        ),
        add_arguments=score_arguments,
        run=run_score,
    ),
    Command(name="leaderboard", help=LEADERBOARD_HELP, description=LEADERBOARD_DESCRIPTION,
            examples=LEADERBOARD_EXAMPLES, add_arguments=leaderboard_arguments, run=run_leaderboard),
    Command(name="submission", help=SUBMISSION_HELP, description=SUBMISSION_DESCRIPTION,
            examples=SUBMISSION_EXAMPLES, add_arguments=submission_arguments, run=run_submission),
    Command(name="sweep", help=SWEEP_HELP, description=SWEEP_DESCRIPTION, examples=SWEEP_EXAMPLES,
            add_arguments=sweep_arguments, run=run_sweep),
    Command(name="schema", help=SCHEMA_HELP, description=SCHEMA_DESCRIPTION, examples=SCHEMA_EXAMPLES,
            add_arguments=schema_arguments, run=run_schema),
    Command(
        name="ls",
        help="list supported model families (with MIB graph sizes) or registered tasks",
        description="List what mibench supports. Does not import torch.",
        examples=(
            ("mibench ls", "model families, reference models and their MIB graph sizes"),
            ("mibench ls models --format github", "the same table as Markdown"),
            ("mibench ls tasks", "registered tasks, their versions, counterfactuals and split sizes"),
            ("mibench ls methods", "registered methods, their levels, ablations and arguments"),
        ),
        add_arguments=_ls_arguments,
        run=_ls_run,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    top_examples = [cmd.examples[0] for cmd in COMMANDS] + [(f"{PROG} --version", "print the version")]
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mibench: a benchmark harness for mechanistic interpretability "
        "(circuit localization and causal variable localization).",
        epilog=_format_examples(top_examples) + f"\n\nRun '{PROG} <command> --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for cmd in COMMANDS:
        p = sub.add_parser(
            cmd.name,
            help=cmd.help,
            description=cmd.description or cmd.help,
            epilog=_format_examples(cmd.examples),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mibench`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return int(run(args) or 0)
    except MibenchError as exc:  # errors meant for the user (bad file, unknown name): no traceback
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `mibench ls | head`: stop quietly like other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
