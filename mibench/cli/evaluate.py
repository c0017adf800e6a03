"""``mibench evaluate``: run a method on a task and score it (circuit track, or --track causal)."""

from __future__ import annotations

import argparse

from mibench.cli.command import Command
from mibench.cli.options import ABLATIONS, LEVELS, add_causal_arguments, add_model_arguments, positive_int

#: ``--batch-size auto``: the largest batch the memory planner says fits ``--max-memory``.
AUTO = "auto"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, help="method id (see 'mibench ls methods'): a circuit method, "
                        "or a featurizer with --track causal")
    parser.add_argument("--track", choices=("circuit", "causal"), default="circuit",
                        help="circuit localization (default) or causal variable localization")
    parser.add_argument("--level", choices=LEVELS, help="granularity (default: the method's first)")
    parser.add_argument("--ablation", default="patching", choices=ABLATIONS,
                        help="what ablated edges carry during attribution (evaluation always patches "
                        "counterfactual activations, as MIB does)")
    parser.add_argument("--method-arg", action="append", metavar="NAME=VALUE",
                        help="override a method argument, e.g. --method-arg ig_steps=10 (repeatable)")
    parser.add_argument("--attribution-examples", type=positive_int, default=100, metavar="N",
                        help="train-split examples the method attributes on (default: 100)")
    add_model_arguments(parser)
    add_causal_arguments(parser)
    add_auto_batch_size(parser)


def batch_size_or_auto(text: str) -> int | str:
    return AUTO if text == AUTO else positive_int(text)


def add_auto_batch_size(parser: argparse.ArgumentParser) -> None:
    """Let the shared ``--batch-size`` also take ``auto`` (circuit track), with ``--max-memory``."""
    action = parser._option_string_actions["--batch-size"]
    action.type = batch_size_or_auto
    action.help = (f"examples per forward (default: {action.default}), or 'auto': the largest batch that "
                   "'mibench plan' estimates to fit --max-memory")
    parser.add_argument("--max-memory", metavar="SIZE", help="with --batch-size auto: the memory budget, e.g. "
                        "80GB or 40GiB (default: the device's free memory, or 80%% of the available RAM on CPU)")


def auto_batch_size(args: argparse.Namespace) -> int:
    """The batch size ``--batch-size auto`` resolves to (see mibench.planning)."""
    import logging

    from mibench.cli.options import default_model
    from mibench.cli.plan import budget_from
    from mibench.errors import MibenchError
    from mibench.method_registry import parse_method_args
    from mibench.planning.budget import format_size
    from mibench.planning.run import plan_run, with_batch

    if args.track != "circuit":
        raise MibenchError("--batch-size auto plans the circuit track; give the causal track a number")
    budget = budget_from(args.max_memory, args.device)
    result = plan_run(args.model or default_model(), args.task, args.method, dtype=args.dtype, device=args.device,
                      level=args.level, method_args=parse_method_args(args.method_arg), baseline=not args.no_baseline,
                      attribution_examples=args.attribution_examples, split=args.split, limit=args.limit,
                      budget=budget)
    if not result.largest_batch:
        raise MibenchError(f"--batch-size auto: not even one example fits {format_size(budget)} "
                           "(see 'mibench plan' for the estimate per phase)")
    peak = max(p.peak for p in with_batch(result, result.largest_batch).phases)
    logging.getLogger("mibench").info("--batch-size auto: %d (estimated peak %s of %s)", result.largest_batch,
                                      format_size(peak), format_size(budget))
    return result.largest_batch


def request_fields(args: argparse.Namespace) -> dict[str, dict]:
    """The request fields ``evaluate`` adds to the shared options, per track (also what a sweep run uses)."""
    from mibench.method_registry import parse_method_args

    method = {"method": args.method, "method_args": parse_method_args(args.method_arg)}
    return {"causal": method, "circuit": {**method, "ablation": args.ablation,
                                          "attribution_examples": args.attribution_examples}}


def run(args: argparse.Namespace) -> int:
    from mibench.cli.output import run_and_report

    if args.batch_size == AUTO:
        args.batch_size = auto_batch_size(args)
    return run_and_report(args, **request_fields(args))


COMMAND = Command(
    name="evaluate",
    help="run a method on a task and score it: circuits (CPR, CMD) or causal variables (IIA)",
    description="Circuit track (default): score the model's graph with a method on train examples, keep the "
    "top 0.1%%..100%% of it, ablate the rest with counterfactual activations on the evaluation split, and "
    "report faithfulness, CPR and CMD with bootstrap standard errors. Writes record.json, scores.json "
    "(MIB format) and faithfulness.png under --output-dir. Causal track (--track causal): fit and train the "
    "featurizer at every (layer, token role) on train pairs, and report interchange intervention accuracy "
    "per site, per layer, and its average and best over layers. Writes record.json, iia_heatmap.png and "
    "the trained featurizers (safetensors + JSON cards). Files appear only when the run has finished: an "
    "interrupted run (Ctrl-C, exit status 130) writes nothing.",
    examples=(
        ("mibench evaluate --method eap-ig-inputs --task ioi", "the embedded model, IOI, EAP-IG"),
        ("mibench evaluate --method eap --task mcqa --ablation mean", "EAP with mean ablation"),
        ("mibench evaluate --method nap --level neuron --task arithmetic_addition", "neuron-level NAP"),
        ("mibench evaluate --method eap-ig-inputs --method-arg ig_steps=20 --task ioi --model gpt2",
         "a hub model, more IG steps"),
        ("mibench evaluate --method eap-ig-inputs --task ioi --data official --model gpt2",
         "MIB's own benchmark: the official mib-bench/ioi data and GPT-2 from the hub"),
        ("mibench evaluate --method exact --task ioi --limit 100 --format github", "quick look, Markdown"),
        ("mibench evaluate --method eap --task ioi --limit 50 --format json --quiet", "JSON summary for scripts"),
        ("mibench evaluate --method eap-ig-inputs --task ioi --batch-size auto --max-memory 2GB",
         "the largest batch the memory planner says fits 2 GB"),
        ("mibench evaluate --track causal --method das --task mcqa --variable answer_pointer",
         "causal track: DAS, IIA over layers x positions"),
        ("mibench evaluate --track causal --method dbm-sae --task arithmetic_addition --variable ones_carry "
         "--layers 1,2", "DBM over SAE latents at two layers"),
    ),
    add_arguments=add_arguments,
    run=run,
)
