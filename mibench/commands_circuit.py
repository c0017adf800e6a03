"""``mibench evaluate`` and ``mibench score``: argument definitions and runners (torch imported lazily)."""

from __future__ import annotations

import argparse
import sys

from mibench.errors import MibenchError

LEVELS = ("edge", "node", "neuron")
ABLATIONS = ("patching", "mean", "zero")
SPLITS = ("train", "validation", "test", "private_test")


def default_model() -> str:
    """The embedded zoo model every command uses when ``--model`` is not given."""
    from mibench.zoo.catalog import DEFAULT_MODEL

    return DEFAULT_MODEL


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task id (see 'mibench ls tasks'), e.g. ioi")
    parser.add_argument("--model", help="HF hub id, local HF folder, or embedded model name "
                        "(default: the embedded GPT-2-architecture zoo model)")
    parser.add_argument("--revision", help="hub revision of --model (recorded in the results)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="evaluation split (default: test)")
    parser.add_argument("--counterfactual", help="counterfactual kind (default: the task card's)")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per forward (default: 32)")
    parser.add_argument("--limit", type=int, help="evaluate on the first N examples only (not leaderboard-eligible)")
    parser.add_argument("--seed", type=int, default=0, help="seed for random scores and the bootstrap (default: 0)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for standard errors "
                        "(default: 1000; 0 turns them off)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the random baseline curve")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--dtype", help="model dtype: float32, bfloat16, float16, float64 (default: as saved)")
    parser.add_argument("--output-dir", default="results", help="where records go (default: ./results)")
    parser.add_argument("--format", default="simple", help="summary table format (tabulate), e.g. github")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _causal_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("causal track (--track causal)")
    group.add_argument("--variable", help="causal variable to localise, e.g. answer_pointer (see 'mibench ls tasks')")
    group.add_argument("--layers", type=_int_list, metavar="L,L,...",
                       help="layers to intervene at (residual stream after each block; default: all)")
    group.add_argument("--positions", type=_str_list, metavar="ROLE,...",
                       help="token roles to intervene at (default: the task card's causal positions)")
    group.add_argument("--train-examples", type=int, default=400,
                       help="train-split examples per counterfactual kind for fitting and training (default: 400)")
    group.add_argument("--sae-dir", help="SAELens-layout folder with layer_<L>/ SAEs (sae, dbm-sae on hub models)")
    group.add_argument("--no-featurizers", action="store_true",
                       help="do not write the trained featurizers beside the record (e.g. published records)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--attribution-examples", type=int, default=100,
                        help="train-split examples the method attributes on (default: 100)")
    _common_arguments(parser)
    _causal_arguments(parser)


def score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("circuit_file", metavar="PATH", help="MIB importance/circuit file (.json, .pt, .safetensors); "
                        "with --track causal, a folder of saved featurizers (L<layer>_<role>.json + .safetensors)")
    parser.add_argument("--track", choices=("circuit", "causal"), default="circuit",
                        help="what PATH holds: circuit scores (default) or causal-track featurizers")
    parser.add_argument("--level", choices=LEVELS, help="check the file holds this level's scores")
    _common_arguments(parser)
    _causal_arguments(parser)


def _request(args: argparse.Namespace, **extra):
    from mibench.circuits.run import EvaluationRequest

    if args.batch_size < 1:
        raise MibenchError("--batch-size must be at least 1")
    return EvaluationRequest(
        task=args.task, model=args.model or default_model(), revision=args.revision, split=args.split,
        counterfactual=args.counterfactual, batch_size=args.batch_size, limit=args.limit, seed=args.seed,
        bootstrap=args.bootstrap, baseline=not args.no_baseline, device=args.device, dtype=args.dtype,
        output_dir=args.output_dir, level=args.level, progress=False if args.quiet else None,
        invocation=["mibench", *sys.argv[1:]], **extra,
    )


def _report(result, table_format: str) -> int:
    from mibench.circuits.report import curve_table, summary_table

    print(curve_table(result.record, table_format))
    print()
    print(summary_table(result.record, table_format))
    if result.record.task.dropped:
        dropped = ", ".join(f"{n} {why}" for why, n in result.record.task.dropped.items())
        print(f"\nnote: examples dropped: {dropped}")
    print(f"\nrecord: {result.record_path}")
    if "plot" in result.record.artifacts:
        print(f"plot:   {result.folder / result.record.artifacts['plot']}")
    if "roc_plot" in result.record.artifacts:
        print(f"ROC:    {result.folder / result.record.artifacts['roc_plot']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from mibench.method_registry import parse_method_args

    if args.track == "causal":
        return _run_causal(args, method=args.method, method_args=parse_method_args(args.method_arg))
    from mibench.circuits.run import run_evaluation

    request = _request(args, method=args.method, method_args=parse_method_args(args.method_arg),
                       ablation=args.ablation, attribution_examples=args.attribution_examples)
    return _report(run_evaluation(request), args.format)


def run_score(args: argparse.Namespace) -> int:
    from mibench.submissions.file_rules import check_score_path

    # the file rules every path applies to files from outside, before the model is loaded
    check_score_path(args.track, args.circuit_file, task=args.task, model=args.model or default_model(),
                     variable=args.variable)
    if args.track == "causal":
        return _run_causal(args, featurizer_dir=args.circuit_file)
    from mibench.circuits.run import run_evaluation

    return _report(run_evaluation(_request(args, circuit_file=args.circuit_file)), args.format)


def _run_causal(args: argparse.Namespace, **extra) -> int:
    from mibench.causal.report import site_table, summary_table
    from mibench.causal.run import CausalRequest, run_causal_evaluation

    if not args.variable:
        raise MibenchError("--track causal needs --variable (see 'mibench ls tasks' for each task's variables)")
    if args.batch_size < 1 or args.train_examples < 1:
        raise MibenchError("--batch-size and --train-examples must be at least 1")
    request = CausalRequest(
        task=args.task, model=args.model or default_model(), variable=args.variable, layers=args.layers,
        positions=args.positions, split=args.split, limit=args.limit, train_examples=args.train_examples,
        batch_size=args.batch_size, seed=args.seed, bootstrap=args.bootstrap, device=args.device, dtype=args.dtype,
        revision=args.revision, sae_dir=args.sae_dir, output_dir=args.output_dir,
        save_featurizers=not args.no_featurizers,
        progress=False if args.quiet else None, invocation=["mibench", *sys.argv[1:]], **extra,
    )
    result = run_causal_evaluation(request)
    record = result.record
    print(site_table(record, args.format))
    print()
    print(summary_table(record, args.format))
    if record.metrics.missing_sites:
        print(f"\nnote: not scored (no featurizer given): {', '.join(record.metrics.missing_sites)}; "
              "'average' needs every layer")
    if record.task.dropped:
        dropped = ", ".join(f"{n} {why}" for why, n in record.task.dropped.items())
        print(f"\nnote: pairs dropped: {dropped}")
    print(f"\nrecord: {result.record_path}")
    if "plot" in record.artifacts:
        print(f"plot:   {result.folder / record.artifacts['plot']}")
    if "featurizers" in record.artifacts:
        print(f"featurizers: {result.folder / record.artifacts['featurizers']}")
    return 0
