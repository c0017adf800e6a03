"""``mibench ls``: tables of what mibench supports (model families and embedded models, tasks, methods).

Read from cards and static tables only: listing imports no torch and no task or method code. New kinds
are new entries of :data:`LISTINGS`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from mibench.cli.command import Command

log = logging.getLogger("mibench")

TABLE_FORMATS = ("simple", "github", "plain", "grid", "latex", "tsv")
WRAPPED_FORMATS = ("simple", "plain", "grid")  # formats for reading in a terminal; others stay one row per line


def list_models(args: argparse.Namespace) -> int:
    """Supported architecture families and the size of MIB's graph for each reference model."""
    from tabulate import tabulate

    from mibench.graph.layout import GraphLayout
    from mibench.models.families import FAMILIES

    rows = []
    for family in FAMILIES:
        layout = GraphLayout(**family.reference_sizes)
        rows.append([family.name, ", ".join(family.model_types), family.reference_model, layout.n_forward,
                     layout.n_backward, layout.n_edges, family.notes])
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
    from mibench.zoo.catalog import DEFAULT_MODEL, list_models as zoo_models, list_planted

    rows = []
    for model in [*zoo_models(), *list_planted()]:
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


def list_tasks(args: argparse.Namespace) -> int:
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


def list_methods(args: argparse.Namespace) -> int:
    """Registered methods from their cards (method code is not imported)."""
    from tabulate import tabulate

    from mibench.method_registry import list_method_cards
    from mibench.plugins import plugin_sources
    from mibench.submissions.plugin import cardless_namespace_warning

    for source in plugin_sources():  # a plugin installed without its cards lists no methods: say why
        if (warning := cardless_namespace_warning(source.namespace, source.package)) is not None:
            log.warning("%s", warning)
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


# kind -> (one-line description, function)
LISTINGS: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
    "models": ("supported architecture families with MIB graph sizes, and the embedded models", list_models),
    "tasks": ("registered tasks: version, metric, counterfactual kinds, split sizes, causal variables", list_tasks),
    "methods": ("registered methods of both tracks: levels, ablations, arguments, paper", list_methods),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", default="models", choices=sorted(LISTINGS),
                        help="what to list (default: models). "
                        + "; ".join(f"{kind}: {desc}" for kind, (desc, _) in sorted(LISTINGS.items())))
    parser.add_argument("--format", default="simple", choices=TABLE_FORMATS,
                        help="table format (default: simple; github gives Markdown)")
    parser.add_argument("--notes-width", type=int, default=60, metavar="N",
                        help="wrap the notes column at N characters in simple/plain/grid tables (default: 60)")


def run(args: argparse.Namespace) -> int:
    _, func = LISTINGS[args.kind]
    return func(args)


COMMAND = Command(
    name="ls",
    help="list model families (with MIB graph sizes) and embedded models, tasks, or methods",
    description="List what mibench supports, from cards and static tables. Does not import torch.",
    examples=(
        ("mibench ls", "model families, reference models and their MIB graph sizes, embedded models"),
        ("mibench ls models --format github", "the same tables as Markdown"),
        ("mibench ls tasks", "registered tasks, their versions, counterfactuals, split sizes, causal variables"),
        ("mibench ls methods", "registered methods of both tracks, their levels, ablations and arguments"),
    ),
    add_arguments=add_arguments,
    run=run,
)
