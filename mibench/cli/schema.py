"""``mibench schema check|suggest``: does a task's span schema fit its data, and which spans matter.

Heavy imports (torch, the model) happen inside the runner.
"""

from __future__ import annotations

import argparse

from mibench.cli.command import Command, action_parser
from mibench.cli.options import SPLITS, default_model, positive_int
from mibench.errors import MibenchError

SCHEMA_HELP = "check a task's position-aware span schema against its data, or suggest one from attribution"
SCHEMA_DESCRIPTION = ("'check' cuts every prompt (clean and counterfactual) into the schema's spans with the "
                      "model's tokenizer and reports prompts it does not fit and how many tokens each span holds. "
                      "'suggest' measures per-position attribution saliency on the model and proposes anchors "
                      "among the task's roles, plus salient tokens no role covers.")
SCHEMA_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("mibench schema check --task ioi", "the IOI schema on the embedded model's tokenizer"),
    ("mibench schema suggest --task mcqa --examples 64", "anchors the embedded model's saliency supports"),
)


def schema_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="schema_action", metavar="<action>", title="actions", required=True)
    for name, help_text in (("check", "fit the card's span schema to the task's prompts"),
                            ("suggest", "propose a schema from per-position attribution saliency")):
        action = action_parser(actions, name, help_text, help_text,
                               [example for example in SCHEMA_EXAMPLES if f" {name} " in example[0]])
        action.add_argument("--task", required=True, help="task id (see 'mibench ls tasks')")
        action.add_argument("--model", help="model whose tokenizer (and, to suggest, computation) is used "
                                            "(default: the embedded model)")
        action.add_argument("--split", default="validation", choices=SPLITS, help="split to read (default: validation)")
        action.add_argument("--examples", type=positive_int, default=200, metavar="N",
                            help="examples to read (default: 200)")
        action.add_argument("--format", default="simple", help="table format (tabulate name, e.g. github)")
        if name == "suggest":
            action.add_argument("--threshold", type=float, default=0.2,
                                help="minimum mean normalised saliency for a role to become an anchor (default 0.2)")
            action.add_argument("--counterfactual", help="counterfactual kind whose answer defines the logit "
                                                         "difference (default: the card's)")
            action.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                                help="examples per forward (default: 16)")


def run_schema(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from mibench.data.registry import load_task

    task = load_task(args.task)
    card = task.card
    model = args.model or default_model()
    examples = task.examples(args.split, min(args.examples, card.splits.get(args.split, args.examples)))
    if args.schema_action == "check":
        from mibench.data.span_schema import check_schema
        from mibench.models.loading import load_model

        if card.span_schema is None:
            raise MibenchError(f"task {card.id!r} declares no span_schema; try 'mibench schema suggest --task {card.id}'")
        loaded = load_model(model)
        kinds = [k for k in card.counterfactuals if all(e.counterfactual(k).has_answer for e in examples)]
        report = check_schema(card.span_schema, examples, loaded.tokenizer, counterfactuals=kinds)
        print(tabulate(report.summary(), headers="keys", tablefmt=args.format, disable_numparse=True))
        for failure in report.failures[:20]:
            print(f"does not fit: {failure}")
        fitted = report.prompts - len(report.failures)
        print(f"\n{card.id}: the schema fits {fitted} of {report.prompts} prompts "
              f"({len(examples)} {args.split} examples, clean and {', '.join(kinds) or 'no'} counterfactuals)")
        from mibench.graph.positional import positional_counts

        layout = loaded.adapter.layout
        sizes = positional_counts(layout, len(report.names))
        print(f"position-aware graph on {model}: {sizes['spans']} spans, {sizes['nodes']:,} nodes, "
              f"{sizes['non_crossing_edges']:,} non-crossing + {sizes['crossing_edges']:,} crossing = "
              f"{sizes['edges']:,} edges (position-invariant: {layout.n_edges:,})")
        return 0 if report.ok else 1
    from mibench.circuits.schema_suggest import suggest_schema
    from mibench.engine import PatchingEngine
    from mibench.models.loading import load_model

    loaded = load_model(model)
    answer_role = card.span_schema.anchors[-1] if card.span_schema is not None else "END"
    suggestion = suggest_schema(PatchingEngine(loaded.adapter), loaded.tokenizer, examples, list(card.schema_roles),
                                counterfactual=args.counterfactual or card.default_counterfactual,
                                answer_role=answer_role, threshold=args.threshold, batch_size=args.batch_size)
    rows = [{"role": r.role, "saliency": f"{r.saliency:.2f}", "mean position": f"{r.mean_position:.1f}",
             "anchor": "yes" if r.role in suggestion.schema.anchors else suggestion.left_out.get(r.role, "")}
            for r in suggestion.roles]
    print(tabulate(rows, headers="keys", tablefmt=args.format, disable_numparse=True))
    if suggestion.uncovered:
        print("\nsalient tokens that no role covers (candidates for new roles):")
        print(tabulate([{"token": t, "saliency": f"{s:.2f}", "occurrences": n} for t, s, n in suggestion.uncovered],
                       headers="keys", tablefmt=args.format, disable_numparse=True))
    fits = suggestion.report.prompts - len(suggestion.report.failures)
    print(f"\nsuggested from {suggestion.examples} examples on {model} (fits {fits} of {suggestion.report.prompts} "
          f"prompts):\n{suggestion.card_yaml()}")
    return 0


COMMAND = Command(name="schema", help=SCHEMA_HELP, description=SCHEMA_DESCRIPTION, examples=SCHEMA_EXAMPLES,
                  add_arguments=schema_arguments, run=run_schema)
